"""Report whether `import llama_cpp` uses the patched runtime, and what is missing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.models.known import KNOWN_MODELS
from ggufsparse.paths import PATCHES_DIR, SPARSE_OPS_DIR
from ggufsparse.runtime import locate, source
from ggufsparse.runtime.build import TOOLS

BUILD = "ggufsparse build-runtime"


def _bindings() -> dict:
    """Load llama_cpp and ask the library it loaded which build it is."""
    try:
        import llama_cpp
    except Exception as exc:  # noqa: BLE001 - a missing or broken library raises OSError, RuntimeError, ...
        return {"importable": False, "error": f"{type(exc).__name__}: {exc}"}
    info = llama_cpp.llama_print_system_info().decode()
    m = re.search(r"GGUFSPARSE = (\S+)", info)
    return {
        "importable": True,
        "version": llama_cpp.__version__,
        "library": str(Path(llama_cpp.llama_cpp._lib._name).resolve()),
        "build_id": m.group(1) if m else None,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "system_info": info.strip(),
    }


def _backends(system_info: str) -> list[str]:
    return sorted({part.split(" : ")[0].strip() for part in system_info.split("|") if " : " in part})


def diagnose() -> dict:
    checkout_hash = source.patch_hash(PATCHES_DIR, SPARSE_OPS_DIR)
    state = locate.active()
    report: dict = {"checkout_patch_hash": checkout_hash, "runtime": None, "bindings": _bindings(),
                    "tools": {}, "models": {}, "ccache": shutil.which("ccache"), "missing": []}
    missing = report["missing"]

    if state is None:
        missing.append({"what": "no patched runtime has been built", "fix": BUILD})
    else:
        report["runtime"] = {"version": state.version, "key": state.key, "flags": state.flags,
                             "bin_dir": state.bin_dir}
        if state.patch_hash != checkout_hash:
            missing.append({"what": f"the runtime was built from patches {state.patch_hash}, "
                                    f"this checkout has {checkout_hash}", "fix": BUILD})
        for name in TOOLS:
            path = Path(state.bin_dir) / name
            report["tools"][name] = str(path) if path.exists() else None
            if not path.exists():
                missing.append({"what": f"{name} is not built", "fix": BUILD})

    b = report["bindings"]
    if not b["importable"]:
        missing.append({"what": f"llama_cpp does not import ({b['error']})", "fix": BUILD})
    else:
        b["backends"] = _backends(b["system_info"])
        if b["build_id"] is None:
            missing.append({"what": f"llama_cpp loads a stock llama.cpp ({b['library']})", "fix": BUILD})
        elif state is not None and b["build_id"] != state.patch_hash:
            missing.append({"what": f"llama_cpp loads runtime {b['build_id']}, the active one is "
                                    f"{state.patch_hash}", "fix": BUILD})
        if "+ggufsparse" not in b["version"]:
            missing.append({"what": f"llama_cpp {b['version']} is not the patched bindings", "fix": BUILD})

    for model in KNOWN_MODELS:
        try:
            path, problem = model.path(), None
        except UserError as exc:  # pieces installed in part, or damaged
            path, problem = None, str(exc)
        report["models"][model.name] = str(path) if path else None
        if path is None:
            missing.append({"what": f"model {model.name} is not installed",
                            "fix": problem or model.install_hint})

    report["patched_runtime_active"] = bool(
        state is not None and b.get("build_id") == state.patch_hash == checkout_hash)
    report["ok"] = not missing
    return report


def format_report(r: dict) -> str:
    b = r["bindings"]
    lines = [f"patched runtime active: {'yes' if r['patched_runtime_active'] else 'NO'}"]
    if r["runtime"]:
        rt = r["runtime"]
        lines.append(f"runtime: {rt['version']} ({rt['flags']['backend']}, key {rt['key']})")
        lines.append(f"  flags: {rt['flags']}")
        lines.append(f"  built in: {rt['bin_dir']}")
    if b["importable"]:
        lines.append(f"llama_cpp: {b['version']}, library {b['library']}")
        lines.append(f"  backends: {', '.join(b['backends']) or 'none'}; gpu offload: {b['gpu_offload']}")
    for name, path in r["tools"].items():
        lines.append(f"  {name:18} {path or 'MISSING'}")
    for name, path in r["models"].items():
        lines.append(f"model {name}: {path or 'not installed'}")
    lines.append(f"ccache: {r['ccache'] or 'not found (builds will not be cached)'}")
    for m in r["missing"]:
        lines.append(f"missing: {m['what']} -> {m['fix']}")
    return "\n".join(lines)
