"""The package's rooms and the one direction of their imports, read from the source (every
import, those inside functions too):

    cli  ->  defs (and definitions.py)  ->  store  ->  core  ->  settings

core is pure: no Dagster, no store; the store imports no Dagster (the Dagster room turns its
errors into Failures); nothing imports Dagster's private modules; no import cycle at module level.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from climb_assets_tests.conftest import PROJECT

PACKAGE = PROJECT / "climb_assets"
# A room may import the rooms listed for it (its own always).
MAY_IMPORT = {
    "settings": set(),
    "core": {"settings"},
    "store": {"core", "settings"},
    "defs": {"store", "core", "settings", "package"},
    "definitions": {"defs", "store", "core", "settings"},
    "cli": {"definitions", "defs", "store", "core", "settings", "package"},
    "package": set(),
}
NO_DAGSTER = {"core", "store"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return parts[1] if parts[1] in MAY_IMPORT else "unknown"


def imports(path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import in `path` (absolute imports; the package uses no other)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            found += [(node.lineno, node.module)]
            if node.module == "climb_assets":  # `from climb_assets import x`: x may be a module
                found += [(node.lineno, f"climb_assets.{a.name}") for a in node.names]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_sits_in_a_room() -> None:
    assert [m for p in SOURCES if room(m := module_name(p)) == "unknown"] == []
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "definitions.py", "settings.py", "store.py"]


def violations(path: Path, here: str) -> list[str]:
    """The imports of `path`, a module of room `here`, that break the rules."""
    wrong = []
    for line, target in imports(path):
        if target.startswith("dagster._"):
            wrong.append(f"line {line}: private Dagster module {target}")
        if target.split(".")[0] == "dagster" and here in NO_DAGSTER:
            wrong.append(f"line {line}: {here} imports {target}")
        there = room(target) if target.split(".")[0] == "climb_assets" else "unknown"
        if there not in (here, "unknown") and there not in MAY_IMPORT[here]:
            wrong.append(f"line {line}: {here} imports {target} ({there})")
    return wrong


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path: Path) -> None:
    assert violations(path, room(module_name(path))) == []


def test_no_import_cycle_at_module_level() -> None:
    modules = {module_name(p): p for p in SOURCES}
    graph = {
        name: {t for _, t in imports(path, top_level_only=True) if t in modules and t != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            assert state.get(nxt) != 1, " -> ".join([*trail, name, nxt])
            if nxt not in state:
                visit(nxt, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_checker_sees_wrong_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import dagster as dg\n"
        "from dagster._utils import x\n"
        "def f():\n"
        "    from climb_assets.store import Layout\n"
        "    from climb_assets.cli.main import main\n"
    )
    assert violations(bad, "core") == [
        "line 1: core imports dagster",
        "line 2: private Dagster module dagster._utils",
        "line 2: core imports dagster._utils",
        "line 4: core imports climb_assets.store (store)",
        "line 5: core imports climb_assets.cli.main (cli)",
    ]
    assert violations(bad, "cli") == ["line 2: private Dagster module dagster._utils"]
