"""Print the logits of a model for fixed text as .npy; run in its own process so that the
library it loads (LLAMA_CPP_LIB_PATH) and the runtime's environment (GGUFSPARSE_*) can differ
from the test process's."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TEXT = ("The quick brown fox jumps over the lazy dog. Sparse activations skip work that "
        "does not change the answer, so a model can decode faster on a laptop.")


def in_subprocess(model: Path, out: Path, lib_dir: Path | None = None, windows: Path | None = None,
                  n_batch: int = 512, env: dict | None = None, capture: bool = False) -> np.ndarray:
    """Logits from `model`, computed by the library in lib_dir (default: the patched one).

    Without `windows`: the logits of TEXT, [tokens, vocab]. With `windows` (an .npy of token ids,
    [n, ctx]): each window evaluated from an empty cache, [n, ctx, vocab]. n_batch=1 feeds one
    token per decode call, which is the path the sparse kernels take. LOGITS_KV_F32=1 in `env`
    keeps the KV cache in f32 (llama.cpp's default f16 rounds every key and value).
    LOGITS_DECISIONS=FILE.npz in `env` also writes the runtime's channel decisions (see
    `_DecisionRecorder`; windows only). LOGITS_RPC=host:port,... in `env` adds those rpc-server
    workers as devices (as llama.cpp's --rpc does) and offloads every layer to them.
    """
    full_env = dict(os.environ, **(env or {}))
    if lib_dir is not None:
        full_env["LLAMA_CPP_LIB_PATH"] = str(lib_dir)
    cmd = [sys.executable, __file__, str(model), str(out), str(n_batch)]
    if windows is not None:
        cmd.append(str(windows))
    subprocess.run(cmd, env=full_env, check=True, capture_output=capture, text=capture)
    return np.load(out)


# sparse_act node names -> the sites of their occurrences in one layer, in graph order
_DECISION_SITES = {"ffn_act_sparse": ("ffn",), "sparse_input": ("attn_q", "attn_output"),
                   "ffn_down_sparse": ("ffn_down_in",)}


class _DecisionRecorder:
    """An eval callback that keeps which entries every sparse_act node left non-zero: the channel
    decisions the runtime made. Nodes are named by the graph: `ffn_act_sparse-L` (FFN channels)
    `sparse_input-L` (a projection's input; CHESS files have two a layer, q's then the output
    projection's, in graph order) and `ffn_down_sparse-L` (the cut on ffn_down's input after the
    channels, --down-sparsity)."""

    def __init__(self, lib_dir: Path):
        import ctypes

        import llama_cpp

        self.ggml = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
        self.ggml.ggml_get_name.restype = ctypes.c_char_p
        self.ggml.ggml_get_name.argtypes = [ctypes.c_void_p]
        self.ggml.ggml_get_data_f32.restype = ctypes.POINTER(ctypes.c_float)
        self.ggml.ggml_get_data_f32.argtypes = [ctypes.c_void_p]
        for name in ("ggml_nelements", "ggml_nrows"):
            getattr(self.ggml, name).restype = ctypes.c_int64
            getattr(self.ggml, name).argtypes = [ctypes.c_void_p]
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._observe)  # kept alive with self
        self.seen: dict = {}    # (node kind, layer) -> position in the layer's sites
        self.rows: dict = {}    # (site, layer) -> [bool arrays (tokens, width)] of the current window

    def _observe(self, tensor, ask, _user_data) -> bool:
        name = self.ggml.ggml_get_name(tensor).decode()
        kind, _, layer = name.rpartition("-")
        if ask:  # observe this node?
            return kind in _DECISION_SITES
        if kind not in _DECISION_SITES:
            return True  # go on computing
        n = self.ggml.ggml_nelements(tensor)
        values = np.ctypeslib.as_array(self.ggml.ggml_get_data_f32(tensor), shape=(n,))
        # each graph has a layer's sites once each, in order: counting on wraps to the next graph's
        occurrence = self.seen.get((kind, layer), 0) % len(_DECISION_SITES[kind])
        self.seen[(kind, layer)] = occurrence + 1
        site = _DECISION_SITES[kind][occurrence]
        tokens = self.ggml.ggml_nrows(tensor)
        self.rows.setdefault((site, int(layer)), []).append((values != 0).reshape(tokens, -1))
        return True

    def end_window(self, store: dict, w: int) -> None:
        for (site, layer), rows in self.rows.items():
            store[f"{w}.{site}.{layer}"] = np.packbits(np.concatenate(rows), axis=1)
        self.rows = {}


def read_decisions(path: Path, window: int, widths: dict[str, int]) -> dict:
    """The decisions `in_subprocess` wrote for one window: (site, layer) -> bool (tokens, width)."""
    out = {}
    with np.load(path) as z:
        for key in z.files:
            w, site, layer = key.split(".")
            if int(w) == window:
                out[(site, int(layer))] = np.unpackbits(z[key], axis=1, count=widths[site]).astype(bool)
    return out


def _record_decisions(llm, lib_dir: Path) -> _DecisionRecorder:
    """llm's context made again with the recorder as its eval callback."""
    import contextlib

    from llama_cpp import _internals

    recorder = _DecisionRecorder(lib_dir)
    params = llm.context_params
    params.cb_eval = recorder.callback
    params.cb_eval_user_data = None
    llm._ctx = llm._stack.enter_context(contextlib.closing(
        _internals.LlamaContext(model=llm._model, params=params, verbose=False)))
    return recorder


def _add_rpc_workers(servers: str, lib_dir: Path) -> None:
    """What llama.cpp's --rpc does (common/arg.cpp, add_rpc_devices), through the ggml library
    llama_cpp loaded."""
    import ctypes

    ggml = ctypes.CDLL(str(lib_dir / "libggml.so"))
    base = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
    ggml.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    ggml.ggml_backend_register.argtypes = [ctypes.c_void_p]
    rpc = ggml.ggml_backend_reg_by_name(b"RPC")
    if not rpc:
        raise SystemExit("logits_of: the runtime has no RPC backend")
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(
        base.ggml_backend_reg_get_proc_address(rpc, b"ggml_backend_rpc_add_server"))
    for server in servers.split(","):
        reg = add_server(server.encode())
        if not reg:
            raise SystemExit(f"logits_of: cannot add RPC server {server}")
        ggml.ggml_backend_register(reg)


def main(model: str, out: str, n_batch: int, windows: str | None) -> None:
    import llama_cpp
    from llama_cpp import Llama

    offload = {}
    if os.environ.get("LOGITS_RPC"):
        _add_rpc_workers(os.environ["LOGITS_RPC"], Path(llama_cpp.llama_cpp._lib._name).parent)
        offload = {"n_gpu_layers": 99}

    rows = np.load(windows) if windows else None
    n_ctx = max(256, rows.shape[1]) if rows is not None else 256
    kv = {"type_k": 0, "type_v": 0} if os.environ.get("LOGITS_KV_F32") == "1" else {}  # 0: GGML_TYPE_F32
    llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, logits_all=True,
                verbose=False, n_threads=2, **kv, **offload)
    if rows is None:
        tokens = llm.tokenize(TEXT.encode())
        llm.eval(tokens)
        np.save(out, np.array(llm.scores[: len(tokens)], dtype=np.float32))
        return
    decisions_file = os.environ.get("LOGITS_DECISIONS")
    recorder = None
    if decisions_file:
        recorder = _record_decisions(llm, Path(llama_cpp.llama_cpp._lib._name).parent)
    decisions: dict = {}
    result = []
    for w, row in enumerate(rows):
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval([int(t) for t in row])
        if recorder is not None:
            recorder.end_window(decisions, w)
        result.append(np.array(llm.scores[: len(row)], dtype=np.float32))
    np.save(out, np.stack(result))
    if recorder is not None:
        np.savez(decisions_file, **decisions)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
