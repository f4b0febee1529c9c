"""The import arrows point inward, and nowhere round in a circle.

Reads every module of ``src/tandem`` as an AST (nothing is imported) and
builds its imports, sorted three ways: those run when the module is
imported, those under ``if TYPE_CHECKING:``, and those inside a function.

* **Pure modules stay pure, transitively.** Following the imports each pure
  module runs (its own, then those of every Tandem module they reach), none
  of them reaches asyncio, a web framework, the network, storage, the bus,
  the server, or ``os``, ``pathlib`` and ``time`` (the pure core is given
  time, paths and files; it does not fetch them).
* **No cycles** between Tandem modules, counting every import: module level,
  type-only and function-local. A function-local import cannot hide one.
* **One module holds other libraries' internals**: only
  ``tandem.server.uvicorn_glue`` imports uvicorn or any part of websockets
  outside its public API (the Python client uses its asyncio client, the
  ``/collab`` transport its documented sans-I/O ``ServerProtocol``), and only
  it reads the private state they keep (``PRIVATE_ATTRIBUTES``).
* **The composition root is imported by nobody** inside ``tandem.server``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

import tandem

SRC = Path(tandem.__file__).parent


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_name(path): path for path in sorted(SRC.rglob("*.py"))}

#: The pure core: decisions only, no I/O (HOUSE_STYLE.md, "The one idea").
PURE = sorted(
    name
    for name in MODULES
    if name.startswith(("tandem.ot", "tandem.merge"))
    or name
    in {
        "tandem.protocol",
        "tandem.sequencer",
        "tandem.presence",
        "tandem.limits",
        "tandem.auth",
        "tandem.redaction",
        "tandem.signing_keys",
        "tandem.frames",
        "tandem.errors",
        "tandem.records",
        "tandem.session.payloads",
        "tandem.session.ownership",
        "tandem.revocation",
        "tandem.authorization",
        "tandem.webhooks.rules",
        "tandem.client.state",
    }
    or name.startswith("tandem.session.delivery")
)

FORBIDDEN_IN_PURE = (
    "asyncio",
    "fastapi",
    "starlette",
    "uvicorn",
    "websockets",
    "httpx",
    "socket",
    "asyncpg",
    "aiosqlite",
    "sqlite3",
    "redis",
    "os",
    "pathlib",
    "time",
    "tandem.storage",
    "tandem.bus",
    "tandem.server",
    "tandem.documents",
)

GLUE = "tandem.server.uvicorn_glue"
#: websockets' public API: the asyncio client ``tandem.client`` is built on, and the
#: sans-I/O server protocol (with its frames, request and states) that
#: ``tandem.server.collab_transport`` speaks; each is in websockets' API reference.
PUBLIC_WEBSOCKETS = (
    "websockets.asyncio.client",
    "websockets.exceptions",
    "websockets.server",
    "websockets.frames",
    "websockets.http11",
    "websockets.protocol",
)
#: The private state of uvicorn and websockets objects the glue reads: websockets'
#: parser (its generator, the generator's ``gi_yieldfrom`` chain, ``current_size``,
#: ``parser_exc``, ``max_message_size``, its ``reader``) and uvicorn's server state
#: (``default_headers``) and HTTP protocol (``parser``).
PRIVATE_ATTRIBUTES = frozenset(
    {
        "parser",
        "parser_exc",
        "current_size",
        "gi_yieldfrom",
        "max_message_size",
        "max_fragment_size",
        "reader",
        "default_headers",
        "server_state",
    }
)


@dataclass
class Imports:
    """One module's imports: run at import time, type-only, and inside functions."""

    runtime: set[str] = field(default_factory=set)
    type_only: set[str] = field(default_factory=set)
    local: set[str] = field(default_factory=set)

    @property
    def every(self) -> set[str]:
        return self.runtime | self.type_only | self.local


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def imports_of(name: str) -> Imports:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = Imports()

    def targets(node: ast.Import | ast.ImportFrom) -> Iterable[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        # ``from tandem.merge import yproto`` imports the module tandem.merge.yproto
        return [
            f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
            for alias in node.names
        ]

    def visit(nodes: Iterable[ast.stmt], into: set[str]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                into.update(targets(node))
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.body, found.type_only)
                visit(node.orelse, into)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, found.local)
            else:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child], into)

    visit(ast.parse(path.read_text()).body, found.runtime)
    return found


def _tandem_modules(names: Iterable[str]) -> set[str]:
    """The Tandem modules ``names`` load: each one, and the packages above it."""
    out = set()
    for name in names:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix in MODULES:
                out.add(prefix)
    return out


def _matches(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def reached_at_runtime(start: str) -> dict[str, str]:
    """Every module importing ``start`` loads, each with the Tandem module that imports it.

    Not counted: the root package ``tandem`` itself, which Python runs before any
    of its modules. It is the public API's facade (``Settings``, ``TandemError``),
    not an arrow any module drew; its own imports are checked like every other's.
    """
    reached: dict[str, str] = {start: start}
    todo = [start]
    while todo:
        module = todo.pop()
        for name in imports_of(module).runtime:
            for loaded in (_tandem_modules([name]) - {"tandem"}) or {name}:
                if loaded not in reached:
                    reached[loaded] = module
                    if loaded in MODULES:
                        todo.append(loaded)
    return reached


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_reach_no_io(module: str) -> None:
    bad = {
        name: via
        for name, via in reached_at_runtime(module).items()
        if _matches(name, FORBIDDEN_IN_PURE)
    }
    assert not bad, (
        f"{module} reaches {', '.join(f'{n} (via {v})' for n, v in sorted(bad.items()))}"
    )


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the Tandem modules it imports in any way (not its own packages)."""
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        ancestors = _tandem_modules([name]) - {name}
        targets = _tandem_modules(imports_of(name).every) - {name}
        # Loading ``tandem.server.collab`` runs ``tandem/server/__init__.py`` first; that is
        # Python's order, not an arrow this module drew.
        graph[name] = {t for t in targets if t not in ancestors}
    return graph


def test_no_import_cycles_between_modules() -> None:
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles (type-only and local imports count): " + "; ".join(
        " ↔ ".join(cycle) for cycle in cycles
    )


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_type_only_and_local_imports_are_seen() -> None:
    collab = imports_of("tandem.server.collab")
    assert "tandem.server.context" in collab.type_only
    glue = imports_of(GLUE)
    assert "uvicorn.protocols.websockets.websockets_sansio_impl" in glue.runtime
    assert "tandem.redaction" in imports_of("tandem.cli").local


def test_only_the_glue_module_uses_uvicorn_or_websockets_internals() -> None:
    for name in MODULES:
        if name == GLUE:
            continue
        used = {
            imported
            for imported in imports_of(name).every
            if _matches(imported, ("uvicorn", "websockets"))
            and not _matches(imported, PUBLIC_WEBSOCKETS)
        }
        assert not used, f"{name} imports {sorted(used)}; only {GLUE} may"


def _attributes_read(name: str) -> set[str]:
    """Every ``x.attr`` (and ``getattr(x, "attr")``) in a module's source."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "setattr", "hasattr"}
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
        ):
            found.add(str(node.args[1].value))
    return found


def test_only_the_glue_module_reads_their_private_state() -> None:
    # The scan sees what the glue reads (else the check below could not fail).
    assert {"parser", "parser_exc", "current_size", "gi_yieldfrom"} <= _attributes_read(GLUE)
    for name in MODULES:
        if name != GLUE:
            used = _attributes_read(name) & PRIVATE_ATTRIBUTES
            assert not used, f"{name} reads {sorted(used)}; only {GLUE} may"


def test_the_glue_module_says_what_it_depends_on() -> None:
    doc = ast.get_docstring(ast.parse(MODULES[GLUE].read_text())) or ""
    assert doc.startswith("Uses uvicorn and websockets internals; tested against uvicorn ")


def test_nothing_imports_the_composition_root() -> None:
    for name in MODULES:
        if name.startswith("tandem.server") and name != "tandem.server.app":
            assert "tandem.server.app" not in imports_of(name).every, name


def test_storage_and_bus_do_not_import_the_server() -> None:
    for name in MODULES:
        if name.startswith(("tandem.storage", "tandem.bus")):
            bad = {
                n
                for n in imports_of(name).every
                if _matches(n, ("tandem.server", "tandem.documents", "tandem.session"))
            }
            assert not bad, f"{name} imports {sorted(bad)}"


def test_public_api_is_complete() -> None:
    for name in tandem.__all__:
        assert hasattr(tandem, name), name
    import tandem.ot as ot

    for name in ot.__all__:
        assert hasattr(ot, name), name
