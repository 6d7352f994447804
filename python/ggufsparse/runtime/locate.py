"""Find the runtime that `ggufsparse build-runtime` made active, and its tools."""

from __future__ import annotations

from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.paths import cache_dir
from ggufsparse.runtime.build import BuildFlags, RuntimeState, work_dir

FIX = "run: ggufsparse build-runtime"


def active() -> RuntimeState | None:
    return RuntimeState.load(cache_dir() / "active.json")


def require_active() -> RuntimeState:
    state = active()
    if state is None:
        raise UserError(f"no patched runtime has been built; {FIX}")
    return state


def tool(name: str) -> Path:
    """Path of a built llama.cpp tool (llama-cli, llama-bench, ...)."""
    state = require_active()
    path = Path(state.bin_dir) / name
    if not path.exists():
        raise UserError(f"{name} is missing from the runtime in {state.bin_dir}; {FIX}")
    return path


def stock_bin_dir() -> Path:
    """Libraries of unpatched llama.cpp built with the active runtime's flags (for comparisons)."""
    state = require_active()
    flags = BuildFlags(**{**state.flags, "stock": True})
    bin_dir = work_dir(flags) / "build" / "bin"
    if not (bin_dir / "libllama.so").exists() and not (bin_dir / "libllama.dylib").exists():
        raise UserError(f"no stock llama.cpp build in {bin_dir}; run: ggufsparse build-runtime --stock")
    return bin_dir


def vendored_llama_cpp() -> Path:
    """The patched llama.cpp source tree of the active runtime (for convert_hf_to_gguf.py, gguf-py)."""
    tree = Path(require_active().work) / "src" / "vendor" / "llama.cpp"
    if not (tree / "convert_hf_to_gguf.py").is_file():
        raise UserError(f"{tree}: llama.cpp sources are missing; run: ggufsparse build-runtime --force")
    return tree
