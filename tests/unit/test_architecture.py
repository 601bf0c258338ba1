"""The layers of docs/ARCHITECTURE.md, checked on the source: imports, cycles, module size, dialect branching,
and reaching through ``Keeper``.

Static analysis only (the source is parsed, never imported), so these run with the unit tests. Every import
counts, ``TYPE_CHECKING`` and function-level ones included: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "lightkeeper"
MAX_LINES = 500

#: Which components each component may import (a component is a top-level module or subpackage).
#: Lower layers never import higher ones; docs/ARCHITECTURE.md draws the same picture.
LEAVES = {"errors", "clock", "keys", "apikeys", "cron", "version"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "clock": set(),
    "keys": {"errors"},
    "apikeys": set(),  # named API keys with scopes: parsed for config, matched for web
    "cron": set(),
    "version": set(),
    "config": LEAVES,
    "crypto": LEAVES,
    "logs": LEAVES | {"config"},
    "metrics": LEAVES,  # prometheus_client and the leaves
    "health": LEAVES,
    "store": LEAVES,
    "lightspeed": LEAVES,
    "providers": LEAVES | {"config", "lightspeed", "store"},  # the providers a deployment uses, from settings
    "vault": LEAVES | {"crypto", "store", "lightspeed"},
    "refresh": LEAVES | {"store", "lightspeed", "vault", "metrics"},
    "connect": LEAVES | {"crypto", "store", "lightspeed", "vault"},
    "rotation": LEAVES | {"crypto", "store", "vault"},  # key rotation: re-encrypts under leases
    "notify": LEAVES | {"config", "store"},  # webhook alerts: the outbox's delivery
    "client": LEAVES | {"lightspeed", "refresh"},
    "proxy": LEAVES | {"lightspeed", "refresh", "metrics"},  # the API proxy's engine
    "stock": LEAVES | {"lightspeed", "client", "store"},
    "views": LEAVES | {"store"},
    "keeper": LEAVES
    | {
        "config",
        "crypto",
        "logs",
        "store",
        "lightspeed",
        "vault",
        "refresh",
        "connect",
        "client",
        "stock",
        "views",
        "rotation",
        "scheduler",
        "metrics",
        "health",
        "notify",
        "proxy",
        "providers",
    },
    "scheduler": LEAVES | {"config", "store", "refresh", "metrics"},
    "web": LEAVES
    | {
        "config",
        "store",
        "keeper",
        "views",
        "stock",
        "connect",
        "lightspeed",
        "refresh",
        "logs",
        "metrics",
        "health",
        "proxy",
    },
    "cli": LEAVES
    | {
        "config",
        "crypto",
        "logs",
        "store",
        "keeper",
        "views",
        "stock",
        "web",
        "scheduler",
        "refresh",
        "rotation",
        "simulator",
        "lightspeed",
        "metrics",
        "providers",
    },
    "simulator": set(),  # stands apart: a look-alike of the provider shares nothing with the client
    "__init__": LEAVES | {"config", "keeper", "store", "views"},
}
#: Where a provider may be named: its own module, and the registry that builds them from settings. Elsewhere
#: code asks the ``Provider`` interface (docs/ARCHITECTURE.md, "Providers").
PROVIDER_MODULES = {"lightspeed/rseries.py", "lightspeed/xseries.py", "providers.py"}
PROVIDER_NAMES = {"r-series", "x-series", "R_SERIES", "X_SERIES", "RSeries", "XSeries"}
#: Where dialect differences may be spelled out (queries and engine construction).
DIALECT_MODULES = {"store/dialect.py", "store/engine.py"}
#: ``keeper.<part>.<verb>`` is reaching through the facade: these layers use Keeper's own verbs.
FACADE_USERS = ("web", "cli", "scheduler")
KEEPER_PARTS = {"store", "refresher", "runs", "tokens", "connect", "oauth", "api", "vault", "cipher", "http"}
KEEPER_PARTS |= {"notifier"}  # webhook delivery: callers use Keeper's event verbs


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def component(path: Path) -> str:
    first = path.relative_to(PACKAGE).parts[0]
    return first.removesuffix(".py")


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imported_components(path: Path) -> Iterator[tuple[str, int]]:
    """Every lightkeeper component ``path`` imports, with the line, however the import is spelled."""
    package_parts = path.relative_to(PACKAGE).parent.parts
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lightkeeper."):
                    yield alias.name.split(".")[1], node.lineno
        elif isinstance(node, ast.ImportFrom):
            yield from _from_import(node, package_parts)


def _from_import(node: ast.ImportFrom, package_parts: tuple[str, ...]) -> Iterator[tuple[str, int]]:
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] != "lightkeeper":
            return
        target = parts[1:]
    else:
        base = package_parts[: len(package_parts) - (node.level - 1)]
        target = [*base, *(node.module.split(".") if node.module else [])]
    if target:
        yield target[0], node.lineno
        return
    for alias in node.names:  # ``from . import stock`` at the package root names the component
        yield alias.name, node.lineno


def test_every_component_is_placed_in_a_layer() -> None:
    unplaced = {component(p) for p in modules()} - set(ALLOWED)
    assert not unplaced, f"add these to ALLOWED and to docs/ARCHITECTURE.md: {sorted(unplaced)}"


@pytest.mark.parametrize("path", modules(), ids=relative)
def test_imports_follow_the_layers(path: Path) -> None:
    own = component(path)
    allowed = ALLOWED.get(own, set()) | {own}
    wrong = [f"line {line}: {target}" for target, line in imported_components(path) if target not in allowed]
    assert not wrong, f"{relative(path)} ({own}) may not import: {wrong}"


def test_there_are_no_import_cycles_between_components() -> None:
    graph: dict[str, set[str]] = {}
    for path in modules():
        own = component(path)
        graph.setdefault(own, set()).update(t for t, _ in imported_components(path) if t != own)
    cycle = _find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if node in trail:
            return [*trail[trail.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            if (found := visit(target, [*trail, node])) is not None:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        if (found := visit(start, [])) is not None:
            return found
    return None


@pytest.mark.parametrize("path", modules(), ids=relative)
def test_no_module_is_over_500_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{relative(path)} has {lines} lines: split it by responsibility"


@pytest.mark.parametrize("path", [p for p in modules() if relative(p) not in DIALECT_MODULES], ids=relative)
def test_dialect_branching_lives_in_the_dialect_module(path: Path) -> None:
    found = [node.lineno for node in ast.walk(tree(path)) if _branches_on_dialect(node)]
    assert not found, f"{relative(path)} branches on the database dialect at lines {found}: use store/dialect.py"


def _branches_on_dialect(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "name":
        return isinstance(node.value, ast.Attribute) and node.value.attr == "dialect"
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        return any(isinstance(s, ast.Constant) and s.value in ("postgresql", "sqlite") for s in sides)
    return False


@pytest.mark.parametrize("path", [p for p in modules() if component(p) in FACADE_USERS], ids=relative)
def test_web_cli_and_scheduler_use_the_keeper_facade(path: Path) -> None:
    found = [f"line {node.lineno}: keeper.{part}" for node, part in _keeper_chains(tree(path))]
    assert not found, f"{relative(path)} reaches through Keeper (use or add a Keeper verb): {found}"


def _keeper_chains(module: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    """``keeper.<part>.<anything>`` (also ``self.keeper.<part>…``) where ``<part>`` is one of Keeper's parts."""
    for node in ast.walk(module):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)):
            continue
        part, owner = node.value.attr, node.value.value
        named_keeper = (isinstance(owner, ast.Name) and owner.id == "keeper") or (
            isinstance(owner, ast.Attribute) and owner.attr == "keeper"
        )
        if named_keeper and part in KEEPER_PARTS:
            yield node, part


@pytest.mark.parametrize(
    "path",
    [p for p in modules() if relative(p) not in PROVIDER_MODULES and component(p) != "simulator"],
    ids=relative,
)
def test_provider_branching_lives_in_the_provider_modules(path: Path) -> None:
    found = [node.lineno for node in ast.walk(tree(path)) if _names_a_provider(node)]
    assert not found, f"{relative(path)} names a provider at lines {found}: ask the Provider interface instead"


def _names_a_provider(node: ast.AST) -> bool:
    """A comparison with a provider's name, or a provider module's class or constant used by name."""
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        return any(isinstance(s, ast.Constant) and s.value in PROVIDER_NAMES for s in sides)
    if isinstance(node, ast.Name | ast.alias):
        return (node.id if isinstance(node, ast.Name) else node.name) in PROVIDER_NAMES
    return False


#: The refresher's callers and the verbs they may use of it; everything else is handed to them (``RefreshParts``).
REFRESHER_USERS = ("refresh/ondemand.py", "refresh/run.py", "refresh/drain.py")
REFRESHER_VERBS = {"refresh", "refresh_claimed_async", "sender", "parts"}


@pytest.mark.parametrize("name", REFRESHER_USERS)
def test_the_refreshers_callers_get_their_parts_explicitly(name: str) -> None:
    """Issue 10's rule: a run, its drain and the on-demand provider say what they use instead of reaching
    through the ``Refresher`` (``self.refresher.store.connections…``)."""
    found = [f"line {node.lineno}: refresher.{node.attr}" for node in _refresher_reaches(tree(PACKAGE / name))]
    assert not found, f"{name} reaches through the Refresher (hand it the part in RefreshParts): {found}"


def _refresher_reaches(module: ast.Module) -> Iterator[ast.Attribute]:
    for node in ast.walk(module):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        named = (isinstance(owner, ast.Name) and owner.id == "refresher") or (
            isinstance(owner, ast.Attribute) and owner.attr in ("refresher", "_refresher")
        )
        if named and node.attr not in REFRESHER_VERBS:
            yield node


def test_the_checks_see_what_they_check() -> None:
    """The detectors find a planted example of each fault (a check that cannot fail is no check)."""
    planted = ast.parse("x = conn.dialect.name == 'sqlite'\nself.keeper.store.runs.get(1)\n")
    assert any(_branches_on_dialect(n) for n in ast.walk(planted))
    branching = ast.parse("if record.provider == 'x-series':\n    pass\nfrom a import XSeries\n")
    assert [n.lineno for n in ast.walk(branching) if _names_a_provider(n)] == [1, 3]
    assert [part for _, part in _keeper_chains(planted)] == ["store"]
    reaching = ast.parse("self.refresher.store.runs.get(1)\nself._refresher.refresh(lease)\nrefresher.vault\n")
    assert sorted((n.lineno, n.attr) for n in _refresher_reaches(reaching)) == [(1, "store"), (3, "vault")]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
