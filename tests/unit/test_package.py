"""The package's shape: every module imports, no import cycle, the parts in folders and in layers
(none imports one above it), a thin CLI."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import ggufsparse

PACKAGE_DIR = Path(ggufsparse.__file__).parent
# the package face, its entry point and the shared leaves; everything else lives in a part's folder
TOP_LEVEL = {"__init__.py", "__main__.py", "errors.py", "paths.py"}
CLI_MAX_LINES = 150


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module in the package (packages as their __init__.py)."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file (module level or inside a
    function): `from a.b import c` counts as a.b.c when that is a module, else as a.b."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in known:
                    out.add(full)
                elif base in known:
                    out.add(base)
    out.discard(name)
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in the graph as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="ggufsparse.")]
    assert "ggufsparse.format.layout" in names
    for name in names:
        if name != "ggufsparse.__main__":  # runs the CLI when imported
            importlib.import_module(name)


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert graph["ggufsparse.pipeline.convert"], "the import graph found no edges; the parser is broken"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_top_folder_holds_only_the_face_and_shared_leaves():
    top = {p.name for p in PACKAGE_DIR.glob("*.py")}
    assert top <= TOP_LEVEL, f"modules outside a part's folder: {sorted(top - TOP_LEVEL)}"


def test_cli_modules_are_short():
    for path in sorted((PACKAGE_DIR / "cli").glob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n < CLI_MAX_LINES, f"{path.name}: {n} lines; the CLI only parses, calls and prints"


# The parts from the bottom up: a module imports (at module level or inside a function) only modules
# of its own layer or of layers below it. runtime/ is two layers as its files stand: fetching,
# building and finding the libraries and loading a model (which format/ and models/ use) sit low;
# sessions, statistics, chat and the doctor (which reads models/) sit above the conversion.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("ggufsparse", "ggufsparse.errors", "ggufsparse.paths")),
    ("runtime: build and library", ("ggufsparse.runtime.build", "ggufsparse.runtime.sdist", "ggufsparse.runtime.source",
                                    "ggufsparse.runtime.locate", "ggufsparse.runtime.llm")),
    ("format", ("ggufsparse.format",)),
    ("models", ("ggufsparse.models",)),
    ("calib", ("ggufsparse.calib",)),
    ("methods", ("ggufsparse.methods",)),
    ("reference", ("ggufsparse.reference",)),
    ("pipeline", ("ggufsparse.pipeline",)),
    ("runtime: sessions", ("ggufsparse.runtime",)),
    ("eval", ("ggufsparse.eval",)),
    ("cli", ("ggufsparse.cli", "ggufsparse.__main__")),
]


def _layer(module: str) -> int:
    """The layer of a module: that of the longest prefix naming it."""
    best, level = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    assert level is not None, f"{module}: in no layer"
    return level


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})"
                  for a, targets in graph.items() for b in targets if _layer(b) > _layer(a))


def test_no_part_imports_one_above_it():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    upward = _upward(graph)
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_layer_check_sees_function_level_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ggufsparse.pipeline.results import ConvertResult\n")
    found = _imports("ggufsparse.format.layout", probe, {"ggufsparse.pipeline.results", "ggufsparse.format.layout"})
    assert found == {"ggufsparse.pipeline.results"}
    assert _upward({"ggufsparse.format.layout": found}) == [
        "ggufsparse.format.layout (format) imports ggufsparse.pipeline.results (pipeline)"]
    assert _layer("ggufsparse.runtime.locate") < _layer("ggufsparse.format.ggml_quant") < _layer("ggufsparse.runtime.session")
