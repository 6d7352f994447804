"""Build the patched llama.cpp (libraries and tools) and point llama-cpp-python at it.

One build serves both llama.cpp's own tools and `import llama_cpp`: the bindings are
installed from the same patched sdist with LLAMA_BUILD=OFF (no C++ compiled) and their
lib/ folder links to the libraries of this build.

Cache layout (outside the clone, see paths.cache_dir):
    build-<flags>-<sdist+flags hash>/src     patched source tree, rewritten only where it changed
    build-<flags>-<sdist+flags hash>/build   CMake build tree (incremental)
    build-<...>/state.json                   key of the last finished build
    active.json                              which build `import llama_cpp` uses
The full runtime key hashes the sdist, patches/, ggml-sparse/ and the build flags; when it
matches state.json nothing is rebuilt. The work folder is keyed without patches/ so that a
patch change recompiles only the files it touches (plus ccache, shared across work folders).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.paths import PATCHES_DIR, SPARSE_OPS_DIR, cache_dir
from ggufsparse.runtime import sdist as sdist_mod
from ggufsparse.runtime import source

TOOLS = ("llama-cli", "llama-server", "llama-bench", "llama-batched-bench", "llama-perplexity", "llama-quantize",
         "ggml-rpc-server", "test-backend-ops", "test-sparse-ops")
LIBRARY_TARGETS = ("llama", "ggml")
# the stock build: the libraries, and a worker for ggml-rpc (the one a patched client must refuse)
STOCK_TARGETS = (*LIBRARY_TARGETS, "ggml-rpc-server")
STOCK = "stock"
DEFAULT_CUDA_ARCHS = "75;80;86;89;90"


@dataclass(frozen=True)
class BuildFlags:
    backend: str = "cpu"  # cpu, cuda, metal or vulkan
    cuda_archs: str = DEFAULT_CUDA_ARCHS
    native: bool = False  # -march=native: fastest here, not portable
    stock: bool = False  # no patches: the reference llama.cpp the patched one is checked against

    @property
    def label(self) -> str:
        parts = [self.backend]
        if self.backend == "cuda":
            parts.append(self.cuda_archs.replace(";", "_"))
        if self.native:
            parts.append("native")
        if self.stock:
            parts.append(STOCK)
        return "-".join(parts)

    def cmake_args(self) -> list[str]:
        args = [
            "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON",
            "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_COMMON=ON",
            "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TESTS=ON",
            "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF", "-DGGML_BLAS=OFF", "-DGGML_RPC=ON",
            f"-DGGML_NATIVE={'ON' if self.native else 'OFF'}",
            f"-DGGML_CUDA={'ON' if self.backend == 'cuda' else 'OFF'}",
            f"-DGGML_METAL={'ON' if self.backend == 'metal' else 'OFF'}",
        ]
        if not self.native:
            args += _portable_cpu_args()
        if self.backend == "vulkan":
            args.append("-DGGML_VULKAN=ON")
        if self.backend == "cuda":
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={self.cuda_archs}")
            args += _cuda_toolkit_args()
        return args


def _portable_cpu_args() -> list[str]:
    """A CPU baseline that runs on the machine's whole family, not only on this one CPU."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        # x86-64-v3: every x86-64 CPU since Haswell (2013) and Zen 1
        return ["-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON",
                "-DGGML_AVX512=OFF"]
    if machine in ("aarch64", "arm64") and sys.platform != "darwin":
        # dot-product instructions: Cortex-A55/A76 and later, Graviton 2+, Ampere Altra
        return ["-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod"]
    return []


def _cuda_toolkit_args() -> list[str]:
    """Fill what the installed CUDA toolkit lacks: cuBLAS from the nvidia-cublas wheel, and no
    driver library on a machine without a GPU (then CUDA VMM is off; the kernels are the same)."""
    import ctypes.util
    import importlib.util

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise UserError("--cuda needs nvcc on PATH (the CUDA toolkit)")
    root = Path(nvcc).resolve().parent.parent
    args = []
    if not (root / "include" / "cublas_v2.h").exists():
        spec = importlib.util.find_spec("nvidia")
        headers = [h for loc in (spec.submodule_search_locations if spec else [])
                   for h in sorted(Path(loc).glob("*/include/cublas_v2.h"))]
        if not headers:
            raise UserError(f"the CUDA toolkit in {root} has no cuBLAS (cublas_v2.h); install its cuBLAS "
                            "package, or: pip install nvidia-cublas")
        inc = headers[0].parent
        lib = inc.parent / "lib"
        blas, blas_lt = sorted(lib.glob("libcublas.so*")), sorted(lib.glob("libcublasLt.so*"))
        if not blas or not blas_lt:
            raise UserError(f"{lib}: no libcublas.so / libcublasLt.so next to {headers[0]}")
        args += [f"-DCUDA_cublas_LIBRARY={blas[0]}", f"-DCUDA_cublasLt_LIBRARY={blas_lt[0]}",
                 f"-DCMAKE_CUDA_FLAGS=-isystem {inc}"]
    stub = root / "lib64" / "stubs" / "libcuda.so"
    if not stub.exists() and ctypes.util.find_library("cuda") is None:
        args.append("-DGGML_CUDA_NO_VMM=ON")
    return args


@dataclass
class RuntimeState:
    """What a finished build produced; written to state.json and active.json."""

    key: str
    patch_hash: str
    version: str  # llama_cpp.__version__ of the bindings
    flags: dict
    work: str
    bin_dir: str
    tools: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RuntimeState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def python_version_string(patch_hash: str) -> str:
    return f"{sdist_mod.VERSION}+ggufsparse.{patch_hash}"


def work_dir(flags: BuildFlags) -> Path:
    return cache_dir() / f"build-{flags.label}-{_short_hash(sdist_mod.SHA256, *flags.cmake_args())}"


def _say(msg: str) -> None:
    print(f"[build-runtime] {msg}", file=sys.stderr, flush=True)


def _ccache_env(cache: Path) -> tuple[list[str], dict]:
    env = dict(os.environ)
    ccache = shutil.which("ccache")
    if not ccache:
        _say("ccache not found: building without a compiler cache (apt-get install ccache)")
        return ["-DGGML_CCACHE=OFF"], env
    env.setdefault("CCACHE_DIR", str(cache / "ccache"))
    env.setdefault("CCACHE_BASEDIR", str(cache))  # work folders share hits
    env.setdefault("CCACHE_NOHASHDIR", "1")
    env.setdefault("CCACHE_SLOPPINESS", "time_macros")
    launchers = [f"-DCMAKE_C_COMPILER_LAUNCHER={ccache}", f"-DCMAKE_CXX_COMPILER_LAUNCHER={ccache}",
                 f"-DCMAKE_CUDA_COMPILER_LAUNCHER={ccache}"]
    return launchers, env


def _run_logged(cmd: list[str], log: Path, env: dict, cwd: Path | None = None, progress: bool = False) -> None:
    """Run a build step, keeping its output in a log; show ninja's [n/N] as a progress bar."""
    from tqdm import tqdm

    bar = None
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            m = re.match(r"\[(\d+)/(\d+)\]", line) if progress else None
            if m:
                done, total = int(m.group(1)), int(m.group(2))
                if bar is None:
                    bar = tqdm(total=total, desc="compiling", unit="step", file=sys.stderr)
                bar.total = total
                bar.update(done - bar.n)
        rc = proc.wait()
    if bar is not None:
        bar.close()
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        print("\n".join(tail), file=sys.stderr)
        raise UserError(f"build step failed (exit {rc}): {' '.join(cmd[:3])} ...; full log: {log}")


def _prepare_source(work: Path, sdist: Path, flags: BuildFlags, phash: str) -> None:
    stage = work / "stage"
    _say("extracting the pinned llama-cpp-python sdist")
    source.extract(sdist, stage)
    if not flags.stock:
        applied = source.apply_patches(stage, PATCHES_DIR)
        _say(f"applied {len(applied)} patches: {', '.join(applied) or 'none'}")
        source.copy_sparse_ops(stage, SPARSE_OPS_DIR)
    source.stamp(stage, phash, python_version_string(phash))
    changed = source.sync(stage, work / "src")
    shutil.rmtree(stage)
    _say(f"source tree up to date ({changed} files changed)")


def _configure(work: Path, flags: BuildFlags, env: dict, launchers: list[str], log: Path) -> None:
    build = work / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    if (build / "CMakeCache.txt").exists() and (work / "configured").exists() \
            and (work / "configured").read_text() == json.dumps(flags.cmake_args()):
        return
    _say("configuring with CMake")
    cmd = ["cmake", "-S", str(work / "src" / source.LLAMA_DIR), "-B", str(build), *generator,
           *flags.cmake_args(), *launchers]
    _run_logged(cmd, log, env)
    (work / "configured").write_text(json.dumps(flags.cmake_args()))


def _targets(flags: BuildFlags) -> list[str]:
    return list(STOCK_TARGETS) if flags.stock else [*LIBRARY_TARGETS, *TOOLS]


def _install_bindings(work: Path, version: str, bin_dir: Path) -> None:
    """Install llama-cpp-python from the patched tree without compiling, then link its lib/."""
    if _installed_bindings_version() != version:
        _say(f"installing llama-cpp-python {version} (bindings only, LLAMA_BUILD=OFF)")
        env = dict(os.environ, CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF")
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall",
               "--disable-pip-version-check", "-q", str(work / "src")]
        _run_logged(cmd, work / "build.log", env)
    lib_dir = bindings_lib_dir()
    if lib_dir is None:
        raise UserError("llama_cpp is not importable after installing it; see " + str(work / "build.log"))
    lib_dir.mkdir(exist_ok=True)
    for old in lib_dir.iterdir():
        if old.is_symlink() or old.is_file():
            old.unlink()
    for lib in sorted(bin_dir.glob("lib*.so*")) + sorted(bin_dir.glob("lib*.dylib")):
        (lib_dir / lib.name).symlink_to(lib)


def _installed_bindings_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return None


def bindings_lib_dir() -> Path | None:
    """The lib/ folder that `import llama_cpp` loads libllama from (without importing it)."""
    import importlib.util

    importlib.invalidate_caches()
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def build_runtime(flags: BuildFlags, jobs: int | None = None, force: bool = False) -> RuntimeState:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    sdist = sdist_mod.fetch(cache)
    phash = STOCK if flags.stock else source.patch_hash(PATCHES_DIR, SPARSE_OPS_DIR)
    key = _short_hash(sdist_mod.SHA256, phash, *flags.cmake_args())
    work = work_dir(flags)
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = work / "build" / "bin"
    state_path = work / "state.json"
    state = RuntimeState.load(state_path)
    targets = _targets(flags)

    up_to_date = (not force and state is not None and state.key == key
                  and all(Path(p).exists() for p in state.tools.values()))
    if up_to_date:
        _say(f"runtime {key} is up to date ({work})")
    else:
        log = work / "build.log"
        log.write_text("")
        launchers, env = _ccache_env(cache)
        _prepare_source(work, sdist, flags, phash)
        _configure(work, flags, env, launchers, log)
        n_jobs = jobs or os.cpu_count() or 2
        _say(f"building {', '.join(targets)} with {n_jobs} jobs (log: {log})")
        _run_logged(["cmake", "--build", str(work / "build"), "-j", str(n_jobs), "--target", *targets],
                    log, env, progress=True)
        tools = {t: str(bin_dir / t) for t in (TOOLS if not flags.stock else ())}
        state = RuntimeState(key=key, patch_hash=phash, version=python_version_string(phash),
                             flags=asdict(flags), work=str(work), bin_dir=str(bin_dir), tools=tools)
        state.save(state_path)
    assert state is not None
    if not flags.stock:
        _install_bindings(work, state.version, bin_dir)
        state.save(cache / "active.json")
    _say(f"done: {state.version} [{flags.label}] in {bin_dir}")
    return state
