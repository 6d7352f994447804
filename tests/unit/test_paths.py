"""Where the shared data is found."""

from __future__ import annotations

from ggufsparse import paths


def _layout(tmp_path, with_data_beside_origin: bool):
    origin = tmp_path / "work" / "checkout"
    origin.mkdir(parents=True)
    if with_data_beside_origin:
        (tmp_path / "work" / "shared" / "data").mkdir(parents=True)
    clone = tmp_path / "elsewhere" / "clone"
    (clone / ".git").mkdir(parents=True)
    (clone / ".git" / "config").write_text(f'[core]\n\tbare = false\n[remote "origin"]\n\turl = {origin}\n'
                                           '\tfetch = +refs/heads/*:refs/remotes/origin/*\n')
    return clone


def test_a_clone_finds_the_data_beside_its_origin_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("GGUFSPARSE_DATA", raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", _layout(tmp_path, True))
    assert paths.shared_data_dir() == tmp_path / "work" / "shared" / "data"


def test_without_data_anywhere_the_path_beside_the_clone_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("GGUFSPARSE_DATA", raising=False)
    clone = _layout(tmp_path, False)
    monkeypatch.setattr(paths, "REPO_ROOT", clone)
    assert paths.shared_data_dir() == clone.parent / "shared" / "data"


def test_the_environment_variable_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("GGUFSPARSE_DATA", str(tmp_path / "mine"))
    monkeypatch.setattr(paths, "REPO_ROOT", _layout(tmp_path, True))
    assert paths.shared_data_dir() == tmp_path / "mine"
