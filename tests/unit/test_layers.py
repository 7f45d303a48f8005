"""The package layout shows the layers: each layer imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import durable

ROOT = Path(durable.__file__).parent


def _module_path(module: str) -> Path | None:
    """The source file of a ``durable`` module, or None for anything outside it."""
    parts = module.split(".")
    if parts[0] != "durable":
        return None
    base = ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(module: str) -> set[str]:
    """The modules ``module`` imports when it runs (``if TYPE_CHECKING:`` blocks left out)."""
    path = _module_path(module)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # ``from pkg import module``
                if _module_path(f"{target}.{alias.name}") is not None:
                    found.add(f"{target}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _closure(package: str) -> dict[str, set[str]]:
    """Every module of ``package``, and what it imports, following ``durable`` modules."""
    todo = [
        f"{package}.{p.stem}" if p.name != "__init__.py" else package
        for p in sorted((ROOT / package.split(".", 1)[1]).glob("*.py"))
    ]
    seen: dict[str, set[str]] = {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen[module] = _runtime_imports(module)
        todo.extend(m for m in seen[module] if _module_path(m) is not None and m not in seen)
    return seen


def _offenders(package: str, banned: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in _closure(package).items()
        for name in names
        if any(name == b or name.startswith(b + ".") for b in banned)
    )


def test_core_does_no_io() -> None:
    """The replay core is sans-I/O: nothing it runs imports anyio, a store or the clock."""
    banned = ("anyio", "asyncio", "durable.store", "durable._clock", "durable._runtime")
    assert _offenders("durable._core", banned) == []


def test_core_knows_no_layer_above_it() -> None:
    """The core imports neither the storage layout, the fleet, nor the engine."""
    banned = ("durable._log", "durable._fleet", "durable._engine", "durable._client")
    assert _offenders("durable._core", banned) == []


@pytest.mark.parametrize("package", ["durable._log", "durable._fleet"])
def test_storage_and_fleet_know_no_engine(package: str) -> None:
    """The storage layout and the fleet sit below the engine and the public API."""
    banned = ("durable._engine", "durable._runtime", "durable._client", "durable._activity")
    assert _offenders(package, banned) == []


def test_the_check_sees_an_import() -> None:
    """The import walk is not blind: the fleet's leases do import anyio."""
    assert _offenders("durable._fleet", ("anyio",)) != []
