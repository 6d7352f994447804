"""Copy a GGUF with extra metadata and tensors; every original tensor and key kept as is, except
the tensors a caller replaces by name (N:M pruning's masked weights).

The writer knows nothing about sparsity methods: it takes finished arrays and keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ggufsparse.errors import UserError


@dataclass(frozen=True)
class ExtraTensor:
    name: str
    data: np.ndarray  # numpy order (ne reversed); for quantized types the uint8 bytes of each row
    ggml_type: Any  # gguf.GGMLQuantizationType


@dataclass(frozen=True)
class ExtraKey:
    key: str
    value: Any
    vtype: Any  # gguf.GGUFValueType
    sub_type: Any = None  # element type of an array


def open_reader(path: Path):
    """GGUFReader for the file, or a one-line UserError naming it."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise UserError(f"{path}: not a readable GGUF file ({exc})") from None


def field_types(field):
    """(value type, element type or None) of a GGUFReader field, as GGUFWriter.add_key_value takes them."""
    import gguf

    vtype = field.types[0]
    return vtype, field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None


def copy_field(writer, field) -> None:
    vtype, sub_type = field_types(field)
    writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)


def _copy_keys(reader, writer, skip: set[str]) -> None:
    import gguf

    for field in reader.fields.values():
        # GGUF.* are the reader's virtual fields; the writer adds general.architecture itself
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE or field.name in skip:
            continue
        copy_field(writer, field)


def check_writable(dst: Path, force: bool = False) -> None:
    """Fail before any work if dst cannot be written: one-line UserErrors naming it. Removes what a
    killed run left beside dst (remove_leftovers)."""
    dst = Path(dst)
    if dst.is_dir():
        raise UserError(f"{dst}: is a folder; give a file name")
    if not dst.parent.is_dir():
        raise UserError(f"{dst}: folder {dst.parent} does not exist")
    try:  # os.access says yes to root even on read-only file systems: try it
        with tempfile.TemporaryFile(dir=dst.parent):
            pass
    except OSError as exc:
        raise UserError(f"{dst}: cannot write in {dst.parent} ({exc.strerror or exc})") from None
    remove_leftovers(dst)
    if dst.exists() and not force:
        raise UserError(f"{dst}: exists; pass --force to replace it")


# Temporaries beside an output: hidden `.NAME.<random>.tmp` files (and scratch folders), never
# taken for the output. A writer holds an flock on its own for as long as it writes; a killed
# writer's lock goes with its process, which is how the next run tells a leftover from a live one.

def _plain_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_beside(dst: Path) -> Path:
    """A new empty file next to dst, to be renamed onto it; permissions as a plain new file.
    Unlocked and not synced: `replacing` is the atomic write."""
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    os.chmod(name, _plain_file_mode())
    return Path(name)


def remove_leftovers(dst: Path) -> list[Path]:
    """Remove the temporaries beside dst that a killed run left (files and scratch folders named
    `.NAME.*.tmp`); a live writer's are locked and stay. Returns what was removed."""
    dst = Path(dst)
    removed = []
    for p in sorted(dst.parent.glob(f".{glob.escape(dst.name)}.*.tmp")):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone meanwhile, a link, or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its writer is alive
        try:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
        except OSError:
            pass  # not ours to remove: it stays hidden
        finally:
            os.close(fd)
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable; best effort (some file systems refuse a folder's fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def replacing(dst: Path) -> Iterator[Path]:
    """A new temporary file beside dst for the block to write (by its name); when the block ends,
    the file is flushed to disk (fsync) and renamed onto dst, so dst is the old file or the new one
    whole, never a part, even if the process is killed. On an error the temporary file is removed;
    a killed run's is removed by the next write of dst or check_writable (remove_leftovers)."""
    dst = Path(dst)
    remove_leftovers(dst)
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    tmp = Path(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.fchmod(fd, _plain_file_mode())
        yield tmp
        synced = os.open(tmp, os.O_RDONLY)  # by name: the writer may have made a new file there
        try:
            os.fsync(synced)
        finally:
            os.close(synced)
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def scratch_beside(dst: Path) -> Iterator[Path]:
    """A new folder beside dst for intermediate files, removed when the block ends; a killed run's
    is removed by the next run's remove_leftovers(dst)."""
    dst = Path(dst)
    folder = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def write_with_extras(src: Path, dst: Path, keys: list[ExtraKey], tensors: list[ExtraTensor],
                      *, force: bool = False, progress: bool = True,
                      replace: list[ExtraTensor] | None = None, drop: set[str] | None = None) -> None:
    """Write dst = src + keys + tensors, through a temporary file renamed into place; each tensor
    of `replace` takes the place (and the position) of the original tensor of its name, and the
    tensors named in `drop` are left out."""
    import gguf
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise UserError(f"{dst}: the output would overwrite the input")
    check_writable(dst, force)
    reader = open_reader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    existing = {t.name for t in reader.tensors}
    clash = [t.name for t in tensors if t.name in existing]
    if clash:
        raise UserError(f"{src}: already has tensor '{clash[0]}'; convert the original file instead")
    replaced = {t.name: t for t in replace or []}
    drop = drop or set()
    missing = sorted((set(replaced) | drop) - existing)
    if missing:
        raise ValueError(f"no tensor {missing[0]} to replace or drop in {src}")
    # (name, array, ggml type) in file order
    parts = [(t.name, t.data, t.tensor_type) if t.name not in replaced else
             (t.name, replaced[t.name].data, replaced[t.name].ggml_type) for t in reader.tensors if t.name not in drop]
    parts += [(t.name, t.data, t.ggml_type) for t in tensors]

    try:
        with replacing(dst) as tmp:
            writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
            alignment = reader.fields.get(gguf.Keys.General.ALIGNMENT)
            if alignment is not None:
                writer.data_alignment = alignment.contents()
            _copy_keys(reader, writer, skip={k.key for k in keys})
            for k in keys:
                writer.add_key_value(k.key, k.value, k.vtype, sub_type=k.sub_type)
            for name, data, ggml_type in parts:
                writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, ggml_type)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            total = sum(data.nbytes for _, data, _ in parts)
            with tqdm(total=total, unit="B", unit_scale=True, desc="writing", disable=not progress) as bar:
                for _, data, _ in parts:
                    writer.write_tensor_data(data, tensor_endianess=reader.endianess)
                    bar.update(data.nbytes)
            writer.close()
    except OSError as exc:
        raise UserError(f"{dst}: cannot write ({exc.strerror or exc})") from None


def dequantize_rows(data: np.ndarray, qtype, rows_per_chunk: int = 2048) -> np.ndarray:
    """gguf-py's dequantize, a slice of rows at a time: its temporaries are several times the
    output's size, which for a large embedding matrix would dominate peak memory."""
    from gguf import dequantize

    if data.ndim < 2 or data.shape[0] <= rows_per_chunk:
        return dequantize(data, qtype)
    first = dequantize(data[:1], qtype)
    out = np.empty((data.shape[0], *first.shape[1:]), dtype=first.dtype)
    for start in range(0, data.shape[0], rows_per_chunk):
        out[start:start + rows_per_chunk] = dequantize(data[start:start + rows_per_chunk], qtype)
    return out


def write_atomic(dst: Path, data: str | bytes) -> None:
    """dst gets data whole or not at all, even if the process is killed (`replacing`)."""
    with replacing(dst) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def check_gguf(path: Path) -> None:
    """A one-line UserError unless path is a file that starts with GGUF's magic."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise UserError(f"{path}: not a GGUF file")
