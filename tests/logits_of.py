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
                  n_batch: int = 512, env: dict | None = None) -> np.ndarray:
    """Logits from `model`, computed by the library in lib_dir (default: the patched one).

    Without `windows`: the logits of TEXT, [tokens, vocab]. With `windows` (an .npy of token ids,
    [n, ctx]): each window evaluated from an empty cache, [n, ctx, vocab]. n_batch=1 feeds one
    token per decode call, which is the path the sparse kernels take. LOGITS_KV_F32=1 in `env`
    keeps the KV cache in f32 (llama.cpp's default f16 rounds every key and value).
    """
    full_env = dict(os.environ, **(env or {}))
    if lib_dir is not None:
        full_env["LLAMA_CPP_LIB_PATH"] = str(lib_dir)
    cmd = [sys.executable, __file__, str(model), str(out), str(n_batch)]
    if windows is not None:
        cmd.append(str(windows))
    subprocess.run(cmd, env=full_env, check=True)
    return np.load(out)


def main(model: str, out: str, n_batch: int, windows: str | None) -> None:
    from llama_cpp import Llama

    rows = np.load(windows) if windows else None
    n_ctx = max(256, rows.shape[1]) if rows is not None else 256
    kv = {"type_k": 0, "type_v": 0} if os.environ.get("LOGITS_KV_F32") == "1" else {}  # 0: GGML_TYPE_F32
    llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, logits_all=True,
                verbose=False, n_threads=2, **kv)
    if rows is None:
        tokens = llm.tokenize(TEXT.encode())
        llm.eval(tokens)
        np.save(out, np.array(llm.scores[: len(tokens)], dtype=np.float32))
        return
    result = []
    for row in rows:
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval([int(t) for t in row])
        result.append(np.array(llm.scores[: len(row)], dtype=np.float32))
    np.save(out, np.stack(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
