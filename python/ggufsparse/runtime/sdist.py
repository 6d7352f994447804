"""The pinned llama-cpp-python source distribution that vendors llama.cpp."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from ggufsparse.errors import UserError

VERSION = "0.3.36"
FILENAME = f"llama_cpp_python-{VERSION}.tar.gz"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e570"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path) -> None:
    got = file_sha256(path)
    if got != SHA256:
        raise UserError(f"{path}: sha256 is {got}, expected {SHA256} for llama-cpp-python {VERSION}; "
                        "delete the file and run build-runtime again")


def fetch(cache: Path) -> Path:
    """Return the verified sdist in the cache, downloading it from PyPI with pip if absent."""
    target = cache / "sdist" / FILENAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "-d", tmp, f"llama-cpp-python=={VERSION}"]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            got = Path(tmp) / FILENAME
            if result.returncode != 0 or not got.exists():
                tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
                raise UserError(f"could not download llama-cpp-python {VERSION} sdist with pip: {tail[0]}")
            verify(got)
            got.rename(target)
    verify(target)
    return target
