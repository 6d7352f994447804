"""The patched runtime's per-context functions (llama_sparse_* in llama.h, patches/0004), called
through llama-cpp-python's library: options of one context, and the counters of what its sparse
ops skipped. Two models in one process each report their own."""

from __future__ import annotations

import ctypes
import json
from typing import Any

from ggufsparse.errors import UserError


def _fn(name: str, argtypes: list, restype: Any):
    from llama_cpp import llama_cpp as lib

    fn = getattr(lib._lib, name, None)
    if fn is None:
        raise UserError(f"llama_cpp has no {name}: not the patched runtime (run `ggufsparse build-runtime`)")
    fn.argtypes = argtypes
    fn.restype = restype
    return fn


def _ctx(context: Any) -> ctypes.c_void_p:
    """A llama_context pointer from a llama_cpp.Llama, a runtime Session or the pointer itself."""
    ctx = getattr(context, "ctx", context)
    if ctx is None:
        raise ValueError("no llama context")
    return ctx


def set_dense(context: Any, dense: bool) -> None:
    """Compute the original model (True) or use the file's sparsity tensors (False)."""
    _fn("llama_sparse_set_dense", [ctypes.c_void_p, ctypes.c_bool], None)(_ctx(context), dense)


def set_max_tokens(context: Any, n_tokens: int) -> None:
    """Batches of up to n_tokens use the skipping kernels; larger ones the dense products."""
    _fn("llama_sparse_set_max_tokens", [ctypes.c_void_p, ctypes.c_int32], None)(_ctx(context), n_tokens)


def count(context: Any, on: bool = True) -> None:
    """Start (or stop) counting the channels the context's sparse ops skip."""
    _fn("llama_sparse_stats_count", [ctypes.c_void_p, ctypes.c_bool], None)(_ctx(context), on)


def reset(context: Any) -> None:
    _fn("llama_sparse_stats_reset", [ctypes.c_void_p], None)(_ctx(context))


def report(context: Any) -> dict:
    """The context's counts since it was made or reset, as the GGUFSPARSE_STATS report has them:
    per kind ("ffn", "attn_q", ...) skipped, total, fraction and the fraction per layer."""
    fn = _fn("llama_sparse_stats_json", [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32], ctypes.c_int32)
    ctx = _ctx(context)
    n = fn(ctx, None, 0)
    buf = ctypes.create_string_buffer(n + 1)
    fn(ctx, buf, n + 1)
    return json.loads(buf.value.decode())
