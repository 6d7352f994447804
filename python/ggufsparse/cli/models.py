"""`ggufsparse models`."""

from __future__ import annotations

import argparse
import json

from ggufsparse.errors import UserError
from ggufsparse.models.known import DEFAULT_MODEL, KNOWN_MODELS, KnownModel


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list known models and where they are installed")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run)


def _row(m: KnownModel) -> dict:
    # a model shipped in pieces is joined into the cache the first time it is asked for; pieces
    # installed only in part, or damaged, make it not installed, with the reason
    try:
        path, problem = m.path(), None
    except UserError as exc:
        path, problem = None, str(exc)
    return {"name": m.name, "default": m.name == DEFAULT_MODEL, "installed": path is not None,
            "path": str(path) if path else None, "package": " ".join(m.packages),
            "install": m.install_hint, "problem": problem, "description": m.description}


def run(args: argparse.Namespace) -> int:
    rows = [_row(m) for m in KNOWN_MODELS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = " (default)" if r["default"] else ""
        if r["installed"]:
            where = f"installed: {r['path']}"
        elif r["problem"]:
            where = f"not installed: {r['problem']}"
        else:
            where = f"not installed: {r['install']}"
        print(f"{r['name']}{mark}\n  {r['description']}\n  {where}")
    return 0
