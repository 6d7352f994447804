#!/usr/bin/env python3
"""The patch series as a git tree, and back: edit code, not diffs.

    python scripts/patches.py tree DIR      # the pinned sdist in DIR, one commit per patches/*.patch
    (edit, build, commit in DIR by concern: `git commit --fixup`, `git rebase -i --autosquash`)
    python scripts/patches.py export DIR    # patches/ rewritten from DIR's commits (git format-patch)
    python scripts/patches.py check         # every patch applies, in order, to a fresh sdist
    python scripts/patches.py builds WORK   # and each prefix of the series builds (libllama, ggml)

`tree` extracts the sdist as `ggufsparse build-runtime` does (llama.cpp's models/ left out) and
applies each patch with `git am`, so each concern stays one commit; ggml-sparse/ is not part of
the series (build-runtime copies it in). `export` writes `git format-patch` output with index
lines and fixed commit ids, so an unchanged commit gives a byte-identical patch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.paths import cache_dir
from ggufsparse.runtime import build, sdist, source

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT / "patches"
BASE_TAG = "sdist"
IDENTITY = {"GIT_AUTHOR_NAME": "ggufsparse", "GIT_AUTHOR_EMAIL": "ggufsparse@users.noreply.github.com",
            "GIT_COMMITTER_NAME": "ggufsparse", "GIT_COMMITTER_EMAIL": "ggufsparse@users.noreply.github.com"}


def _git(tree: Path, *args: str, env: dict | None = None) -> str:
    full_env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(tree.parent), **IDENTITY, **(env or {}))
    result = subprocess.run(["git", "-c", "core.autocrlf=false", *args], cwd=tree, env=full_env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UserError(f"git {args[0]} in {tree}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def make_tree(tree: Path, patches: list[Path]) -> None:
    if tree.exists() and any(tree.iterdir()):
        raise UserError(f"{tree} is not empty")
    source.extract(sdist.fetch(cache_dir()), tree)
    _git(tree, "init", "-q")
    _git(tree, "add", "-A")
    date = {"GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}
    _git(tree, "commit", "-q", "-m", f"llama-cpp-python {sdist.VERSION} sdist", env=date)
    _git(tree, "tag", BASE_TAG)
    for patch in patches:
        try:
            _git(tree, "am", "-q", "--whitespace=nowarn", "--committer-date-is-author-date", str(patch))
        except UserError as e:
            raise UserError(f"patches/{patch.name} does not apply in order: {e}") from None


def export(tree: Path, out: Path) -> list[str]:
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        _git(tree, "format-patch", "-q", "--no-numbered", "--zero-commit", "--no-signature", "--full-index", "-o", tmp,
             f"{BASE_TAG}..HEAD")
        new = sorted(Path(tmp).glob("*.patch"))
        for old in out.glob("*.patch"):
            old.unlink()
        for p in new:
            p.replace(out / p.name)
    return [p.name for p in new]


def build_prefixes(work: Path, patches: list[Path], jobs: int) -> list[str]:
    """Build libllama and ggml (CPU) after each patch in turn, in one incremental build tree."""
    flags = build.BuildFlags()
    launchers, env = build._ccache_env(cache_dir())
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    done = []
    for k in range(1, len(patches) + 1):
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            stage = Path(tmp) / "stage"
            source.extract(sdist.fetch(cache_dir()), stage)
            prefix = Path(tmp) / "patches"
            prefix.mkdir()
            for p in patches[:k]:
                (prefix / p.name).write_bytes(p.read_bytes())
            source.apply_patches(stage, prefix)
            source.copy_sparse_ops(stage, ROOT / "ggml-sparse")
            source.sync(stage, work / "src")
        if not (work / "build" / "CMakeCache.txt").exists():
            cmd = ["cmake", "-S", str(work / "src" / source.LLAMA_DIR), "-B", str(work / "build"), "-G", "Ninja",
                   *flags.cmake_args(), *launchers]
            build._run_logged(cmd, log, env)
        print(f"building with {patches[k - 1].name} ...", flush=True)
        build._run_logged(["cmake", "--build", str(work / "build"), "--target", "llama", "ggml", "-j", str(jobs)],
                          log, env, progress=True)
        done.append(patches[k - 1].name)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("tree", help="a git tree of the sdist with one commit per patch").add_argument("dir", type=Path)
    sub.add_parser("export", help="rewrite patches/ from a tree's commits").add_argument("dir", type=Path)
    sub.add_parser("check", help="apply every patch in order to a fresh sdist")
    builds = sub.add_parser("builds", help="build libllama and ggml after each patch in turn")
    builds.add_argument("work", type=Path)
    builds.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    patches = sorted(PATCHES.glob("*.patch"))
    try:
        if args.cmd == "tree":
            make_tree(args.dir, patches)
            print(f"{args.dir}: {len(patches)} commits on tag {BASE_TAG}")
        elif args.cmd == "export":
            names = export(args.dir, PATCHES)
            print("\n".join(f"patches/{n}" for n in names))
        elif args.cmd == "builds":
            for name in build_prefixes(args.work, patches, args.jobs):
                print(f"builds with patches up to {name}")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                make_tree(Path(tmp) / "tree", patches)
            print(f"{len(patches)} patches apply in order")
    except UserError as e:
        print(f"patches: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
