"""The layering rules of ``docs/architecture.md``, read from the source.

The import graph comes from the source with :mod:`ast` (every ``import``
and ``from ... import``, including those under ``TYPE_CHECKING`` and inside
functions: a lazy import is still a dependency), so the rules hold without
importing anything; one test then imports the lower floors in a fresh
interpreter to show they hold at run time too.  Each rule is exercised on
small made-up inputs as well, so a rule that could never fire would be
noticed.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import blueprint_net

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "blueprint_net"

#: Floors, lowest first: a module may import from its own floor and below.
LAYERS = ("_core", "_policy", "_adapters", "_ops")
#: What the sans-IO floors do without: no clock, file, socket, thread,
#: process or signal of their own (time and randomness come in as values,
#: files are read a floor up, in ``_ops``).
NO_IO = (
    "asyncio",
    "io",
    "multiprocessing",
    "os",
    "pathlib",
    "select",
    "selectors",
    "shutil",
    "signal",
    "socket",
    "sqlite3",
    "ssl",
    "subprocess",
    "tempfile",
    "threading",
    "time",
)
#: Packages each floor may not import (a prefix match).
FORBIDDEN = {
    "_core": ("twisted", "OpenSSL", *NO_IO),
    "_policy": ("twisted", "OpenSSL", *NO_IO),
}
#: Builtins the sans-IO floors may not call.
FORBIDDEN_CALLS = {"_core": ("open",), "_policy": ("open",)}
#: Each floor's facade: the other modules of its floor are its parts, or
#: services built on it (they take an interface, ``facade.INode``), so they
#: may not import it.
FACADES = {"_adapters": "blueprint_net._adapters.node"}
#: The public modules at the top sit above every floor.
SURFACE = "surface"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    """``_core`` … ``_ops`` for a private module; ``surface`` for the rest."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else SURFACE


def imports_of(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module ``source`` imports, absolute (relative imports resolved)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            for alias in node.names:  # ``from pkg import module``
                yield f"{base}.{alias.name}"


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Our modules -> the modules they import (ours resolved to modules)."""
    sources = {module_name(path, package): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        found = imports_of(path.read_text(), module, path.name == "__init__.py")
        graph[module] = {
            name
            for name in found
            if not name.startswith("blueprint_net") or name in sources
        }
    return graph


def rule_violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Every broken rule, one line each; empty when the layering holds."""
    problems = []
    ours = set(graph)
    for module, imported in sorted(graph.items()):
        floor = layer_of(module)
        for name in sorted(imported):
            if name == FACADES.get(floor) and module != name:
                problems.append(f"{module} imports its floor's facade: {name}")
            if name in ours:
                target = layer_of(name)
                if floor != SURFACE and (
                    target == SURFACE or LAYERS.index(target) > LAYERS.index(floor)
                ):
                    problems.append(f"{module} imports upward: {name}")
            elif name.rpartition(".")[0] not in imported:  # once per statement
                for prefix in FORBIDDEN.get(floor, ()):
                    if name == prefix or name.startswith(prefix + "."):
                        problems.append(f"{module} ({floor}) imports {name}")
    problems.extend(f"import cycle: {' -> '.join(c)}" for c in cycles(graph))
    return problems


def reaches_into(source: str, module: str) -> list[str]:
    """Each ``x._private`` in ``source`` where ``x`` is another object than
    ``self``/``cls`` or a class or function this module defines, and each
    call of a builtin the module's floor may not call; one line each.

    An object's underscored attributes are its own business: code outside
    its module that needs one needs a public name instead.
    """
    tree = ast.parse(source)
    own = {
        node.name
        for node in tree.body
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    }
    banned = FORBIDDEN_CALLS.get(layer_of(module), ())
    problems: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if not name.startswith("_") or name.startswith("__"):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in {"self", "cls", *own}:
                continue
            problems.append((node.lineno, f"reaches into {ast.unparse(node)}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in banned
        ):
            problems.append((node.lineno, f"calls {node.func.id}()"))
    return [f"{module}:{line} {what}" for line, what in sorted(problems)]


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected part of our modules (a
    package's ``__init__`` importing its own modules is not one)."""
    edges = {
        module: {
            name
            for name in imported
            if name in graph and not module_contains(module, name)
        }
        for module, imported in graph.items()
    }
    found: list[list[str]] = []
    done: set[str] = set()
    for start in sorted(edges):
        stack, path = [(start, iter(sorted(edges[start])))], [start]
        on_path = {start}
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.discard(path.pop())
                done.add(node)
            elif child in on_path:
                cycle = [*path[path.index(child) :], child]
                if not any(set(cycle) == set(c) for c in found):
                    found.append(cycle)
            elif child not in done:
                stack.append((child, iter(sorted(edges[child]))))
                path.append(child)
                on_path.add(child)
    return found


def module_contains(package: str, module: str) -> bool:
    return module.startswith(package + ".")


# -- the rules, on the real package --------------------------------------------


def test_the_package_keeps_its_layering() -> None:
    assert rule_violations(import_graph()) == []


def test_no_module_reaches_into_another_objects_private_parts() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if layer_of(module) != SURFACE:
            problems += reaches_into(path.read_text(), module)
    assert problems == []


#: What the lower floors must not load when imported alone.
NOT_AT_RUN_TIME = ("twisted", "OpenSSL", "sqlite3")


def loaded_at_run_time(package: Path = PACKAGE) -> list[str]:
    """The packages of :data:`NOT_AT_RUN_TIME` that importing every module of
    ``package``'s ``_core`` and ``_policy`` loads, in a fresh interpreter."""
    modules = sorted(
        module_name(path, package)
        for floor in ("_core", "_policy")
        for path in (package / floor).glob("*.py")
    )
    code = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        prefixes = {NOT_AT_RUN_TIME!r}
        print(*sorted({{m.split(".")[0] for m in sys.modules}} & set(prefixes)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=package.parent,
    )
    return result.stdout.split()


def test_the_lower_floors_import_without_twisted() -> None:
    """Like h11: the core (and the policy above it) can be imported and used
    without Twisted, pyOpenSSL or sqlite3 -- the package's ``__init__``
    imports nothing until one of its names is used."""
    assert loaded_at_run_time() == []


def test_every_private_module_says_its_layer() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        floor = layer_of(module)
        if floor == SURFACE or path.name == "__init__.py":
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        word = floor.lstrip("_")
        assert f"Layer: {word}" in docstring, f"{module}: no 'Layer: {word}' line"


def test_the_layers_are_the_folders() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name[0] == "_"}
    assert folders - {"__pycache__"} == set(LAYERS)


# -- the rules can fail ----------------------------------------------------------


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (
            {"blueprint_net._core.wire": {"twisted.internet.defer"}},
            "blueprint_net._core.wire (_core) imports twisted.internet.defer",
        ),
        (
            {"blueprint_net._policy.bans": {"twisted.enterprise.adbapi"}},
            "blueprint_net._policy.bans (_policy) imports twisted.enterprise.adbapi",
        ),
        (
            {
                "blueprint_net._policy.limits": {"blueprint_net._adapters.protocol"},
                "blueprint_net._adapters.protocol": set(),
            },
            "blueprint_net._policy.limits imports upward:"
            " blueprint_net._adapters.protocol",
        ),
        (
            {
                "blueprint_net._core.wire": {"blueprint_net._policy.bans"},
                "blueprint_net._policy.bans": set(),
            },
            "blueprint_net._core.wire imports upward: blueprint_net._policy.bans",
        ),
        (
            {
                "blueprint_net._adapters.node": {"blueprint_net._ops.status"},
                "blueprint_net._ops.status": set(),
            },
            "blueprint_net._adapters.node imports upward: blueprint_net._ops.status",
        ),
        (
            {
                "blueprint_net._ops.cli": {"blueprint_net.testing"},
                "blueprint_net.testing": set(),
            },
            "blueprint_net._ops.cli imports upward: blueprint_net.testing",
        ),
        (
            {
                "blueprint_net._adapters.a": {"blueprint_net._adapters.b"},
                "blueprint_net._adapters.b": {"blueprint_net._adapters.c"},
                "blueprint_net._adapters.c": {"blueprint_net._adapters.a"},
            },
            "import cycle: blueprint_net._adapters.a -> blueprint_net._adapters.b"
            " -> blueprint_net._adapters.c -> blueprint_net._adapters.a",
        ),
    ],
    ids=[
        "core-twisted",
        "policy-twisted",
        "policy-up",
        "core-up",
        "adapters-up",
        "ops-surface",
        "cycle",
    ],
)
def test_each_rule_fires(graph: dict[str, set[str]], expected: str) -> None:
    assert rule_violations(graph) == [expected]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (
            {"blueprint_net._policy.limits": {"time"}},
            "blueprint_net._policy.limits (_policy) imports time",
        ),
        (
            {"blueprint_net._policy.limits": {"socket"}},
            "blueprint_net._policy.limits (_policy) imports socket",
        ),
        (
            {"blueprint_net._core.identity": {"os"}},
            "blueprint_net._core.identity (_core) imports os",
        ),
        (
            {"blueprint_net._core.identity": {"pathlib", "pathlib.Path"}},
            "blueprint_net._core.identity (_core) imports pathlib",
        ),
        (
            {
                "blueprint_net._adapters.keeper": {"blueprint_net._adapters.node"},
                "blueprint_net._adapters.node": set(),
            },
            "blueprint_net._adapters.keeper imports its floor's facade:"
            " blueprint_net._adapters.node",
        ),
    ],
    ids=["policy-time", "policy-socket", "core-os", "core-pathlib", "facade"],
)
def test_each_new_rule_fires(graph: dict[str, set[str]], expected: str) -> None:
    assert rule_violations(graph) == [expected]


def test_the_facade_may_be_imported_from_above() -> None:
    graph = {
        "blueprint_net._ops.tap": {"blueprint_net._adapters.node"},
        "blueprint_net._adapters.node": {"blueprint_net._adapters.facade"},
        "blueprint_net._adapters.facade": set(),
    }
    assert rule_violations(graph) == []


def test_reaching_into_private_parts_is_caught() -> None:
    source = textwrap.dedent(
        """
        class Own:
            _table = {}
        def helper(): ...
        def f(self, node):
            self._mine, Own._table, helper._cache, node.__class__
            node._stopping
            self.node._peers.get(1)
            wire._Reader(b"")
            open("key")
        """
    )
    assert reaches_into(source, "blueprint_net._core.x") == [
        "blueprint_net._core.x:7 reaches into node._stopping",
        "blueprint_net._core.x:8 reaches into self.node._peers",
        "blueprint_net._core.x:9 reaches into wire._Reader",
        "blueprint_net._core.x:10 calls open()",
    ]
    assert reaches_into("open('x')", "blueprint_net._ops.cli") == []


def test_a_core_module_that_loads_twisted_is_caught(tmp_path: Path) -> None:
    package = tmp_path / "blueprint_net"
    for floor in ("", "_core", "_policy"):
        (package / floor).mkdir(exist_ok=True)
        (package / floor / "__init__.py").write_text("")
    (package / "_core" / "wire.py").write_text("import struct\n")
    (package / "_policy" / "bans.py").write_text("import attrs\n")
    assert loaded_at_run_time(package) == []
    (package / "_core" / "clock.py").write_text(
        "def later():\n    import twisted.internet.task\n"  # not at import
    )
    (package / "_policy" / "store.py").write_text("import sqlite3\n")
    assert loaded_at_run_time(package) == ["sqlite3"]


def test_downward_imports_are_allowed() -> None:
    graph = {
        "blueprint_net": {"blueprint_net._adapters.node"},
        "blueprint_net._ops.cli": {"blueprint_net._adapters.node", "twisted"},
        "blueprint_net._adapters.node": {"blueprint_net._policy.bans", "twisted"},
        "blueprint_net._policy.bans": {"blueprint_net._core.identity", "attrs"},
        "blueprint_net._core.identity": {"cryptography"},
    }
    assert rule_violations(graph) == []


def test_a_bad_import_in_a_real_file_is_caught(tmp_path: Path) -> None:
    """The whole pipeline, from files on disk: a deliberately bad import."""
    package = tmp_path / "blueprint_net"
    (package / "_core").mkdir(parents=True)
    (package / "_adapters").mkdir()
    (package / "__init__.py").write_text("")
    (package / "_core" / "__init__.py").write_text("")
    (package / "_adapters" / "__init__.py").write_text("")
    (package / "_adapters" / "node.py").write_text("import attrs\n")
    (package / "_core" / "wire.py").write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from .. import _adapters
            def later():
                from twisted.internet import reactor
            from blueprint_net._adapters.node import Node
            """
        )
    )
    graph = import_graph(package)
    assert rule_violations(graph) == [
        "blueprint_net._core.wire imports upward: blueprint_net",
        "blueprint_net._core.wire imports upward: blueprint_net._adapters",
        "blueprint_net._core.wire imports upward: blueprint_net._adapters.node",
        "blueprint_net._core.wire (_core) imports twisted.internet",
    ]


# -- the public surface ---------------------------------------------------------

#: The public modules: the package, the thin modules that re-export the rest
#: of the API from the private floors, and the test helpers.
REEXPORTS = (
    "blueprint_net.node",
    "blueprint_net.errors",
    "blueprint_net.gossip",
    "blueprint_net.streams",
    "blueprint_net.policy",
    "blueprint_net.discovery",
    "blueprint_net.sessions",
)
PUBLIC = ("blueprint_net", *REEXPORTS, "blueprint_net.testing")
#: Public modules that are programs, not API (``python -m blueprint_net.demo``).
PROGRAMS = ("blueprint_net.demo", "blueprint_net.mpyc")


def test_importing_the_package_installs_no_reactor() -> None:
    """Like treq's ``test_import``: an application chooses its reactor after
    importing us (``twistd --reactor``, asyncio), so we must not pick one --
    nor may any public module."""
    code = (
        f"import sys, {', '.join(PUBLIC)};"
        " assert 'twisted.internet.reactor' not in sys.modules, 'reactor installed'"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def api_tables(text: str) -> dict[str, set[str]]:
    """The names in the first column of each table under a ``### `module```
    heading of ``docs/embedding.md``'s public API section, by module."""
    tables: dict[str, set[str]] = {}
    module = None
    for line in text.splitlines():
        if line.startswith("#"):
            found = re.fullmatch(r"### `(blueprint_net[\w.]*)`", line)
            module = found.group(1) if found else None
        elif module and line.startswith("| `"):
            first = line.split("|")[1]
            tables.setdefault(module, set()).update(re.findall(r"`(\w+)`", first))
    return tables


def deprecation_table(text: str) -> dict[str, str]:
    """Old name -> its new home (or what replaces it), from the table under
    the "Deprecated names" heading."""
    section = text.split("### Deprecated names", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = line.split("|")
            for name in re.findall(r"`(\w+)`", cells[1]):
                rows[name] = cells[2].strip()
    return rows


@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_name_is_importable_and_documented(module: str) -> None:
    """Each public module's ``__all__`` is exactly the names in its table of
    ``docs/embedding.md``, and each can be imported."""
    imported = importlib.import_module(module)
    exported = set(imported.__all__) - {"__version__"}
    for name in exported:
        assert hasattr(imported, name), f"{module}.{name}"
    documented = api_tables((ROOT / "docs" / "embedding.md").read_text())
    assert documented.get(module) == exported


def test_the_tables_are_read() -> None:
    text = textwrap.dedent(
        """
        ### `blueprint_net.x`

        | name | what |
        | --- | --- |
        | `A`, `b_c` | one |
        | `D` | uses `E` |

        ## Elsewhere

        | `F` | not in a module's table |
        """
    )
    assert api_tables(text) == {"blueprint_net.x": {"A", "b_c", "D"}}


def test_constructing_a_node_installs_no_reactor() -> None:
    """Nor does asking its clock the time: the global reactor is picked when
    first needed (here, asked for), so an application may build its nodes
    before it installs the reactor it wants."""
    code = """if True:
        import sys
        from blueprint_net import Identity, Node
        installed = lambda: "twisted.internet.reactor" in sys.modules
        node = Node(Identity.generate())
        assert not installed(), "constructing installed the reactor"
        node.clock.seconds()
        assert not installed(), "asking the time installed the reactor"
        from twisted.internet import reactor
        assert node.reactor is reactor
        """
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_the_public_names_are_all_the_package_exports() -> None:
    public = {
        name
        for name in dir(blueprint_net)
        if not name.startswith("_")
        and name not in ("annotations", "importlib", "warnings", "TYPE_CHECKING")
        and name not in ("Any", *(m.rpartition(".")[2] for m in PUBLIC + PROGRAMS))
    }
    assert public == set(blueprint_net.__all__) - {"__version__"}


def test_the_lazy_names_are_the_ones_mypy_sees() -> None:
    """``_HOMES`` (what ``__getattr__`` imports), the ``TYPE_CHECKING``
    imports (what mypy sees) and ``__all__`` name the same things, from the
    same modules."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    [guard] = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    seen = {
        alias.name: statement.module
        for statement in guard.body
        if isinstance(statement, ast.ImportFrom)
        for alias in statement.names
    }
    assert seen == blueprint_net._HOMES
    assert set(blueprint_net._HOMES) == set(blueprint_net.__all__) - {"__version__"}


def test_the_reexporting_modules_are_thin() -> None:
    """A public module other than the package and ``testing`` is a docstring,
    imports and ``__all__``: it imports from the private floors exactly the
    names it re-exports, and defines nothing of its own."""
    for module in REEXPORTS:
        path = PACKAGE / f"{module.rpartition('.')[2]}.py"
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{module} has no docstring"
        imported: set[str] = set()
        for statement in tree.body[1:]:
            if isinstance(statement, ast.ImportFrom):
                if statement.module == "__future__":
                    continue
                assert (statement.module or "").startswith("blueprint_net._"), module
                imported.update(alias.asname or alias.name for alias in statement.names)
            else:
                assert ast.unparse(statement).startswith("__all__ ="), (
                    f"{module} defines {ast.unparse(statement)[:40]!r}"
                )
        assert imported == set(importlib.import_module(module).__all__), module


@pytest.mark.parametrize(("name", "home"), sorted(blueprint_net._MOVED.items()))
def test_a_moved_name_still_works_from_the_package_with_a_warning(
    name: str, home: str
) -> None:
    with pytest.warns(DeprecationWarning, match=rf"blueprint_net\.{name} .*{home}$"):
        value = getattr(blueprint_net, name)
    assert value is getattr(importlib.import_module(home), name)
    assert name in importlib.import_module(home).__all__
    assert name not in blueprint_net.__all__ and name not in dir(blueprint_net)
    with pytest.warns(DeprecationWarning):  # each use is told, not only the first
        getattr(blueprint_net, name)


def test_handshake_failed_is_retired_with_a_pointer_to_handshake_error() -> None:
    from blueprint_net._core.errors import HandshakeFailed
    from blueprint_net.errors import HandshakeError

    with pytest.warns(DeprecationWarning, match=r"HandshakeFailed .*HandshakeError"):
        assert blueprint_net.HandshakeFailed is HandshakeFailed
    for module in PUBLIC:
        assert "HandshakeFailed" not in importlib.import_module(module).__all__
    assert (
        HandshakeError
        in importlib.import_module("blueprint_net.errors").__dict__.values()
    )


def test_the_deprecation_list_is_documented() -> None:
    documented = deprecation_table((ROOT / "docs" / "embedding.md").read_text())
    expected = {name: f"`{home}`" for name, home in blueprint_net._MOVED.items()}
    retired = set(blueprint_net._RETIRED)
    assert {k: v for k, v in documented.items() if k not in retired} == expected
    assert set(documented) - set(expected) == retired


def test_the_current_names_are_used_everywhere() -> None:
    """No code of ours, no example and no snippet of the docs imports a name
    the package no longer exports (each would warn)."""
    exported = {*blueprint_net.__all__, *(m.rpartition(".")[2] for m in PUBLIC)}
    sources = [
        *sorted(ROOT.glob("blueprint_net/**/*.py")),
        *sorted(ROOT.glob("examples/*.py")),
        *sorted(ROOT.glob("bench/*.py")),
        *sorted(ROOT.glob("tests/*.py")),
        *sorted(ROOT.glob("*.md")),
        *sorted(ROOT.glob("docs/*.md")),
    ]
    pattern = re.compile(r"^\s*from blueprint_net import (\([^)]*\)|.*)$", re.M)
    stale = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources
        for names in pattern.findall(path.read_text())
        for name in re.findall(r"\w+", names.partition("#")[0])
        if name not in exported
    ]
    assert stale == []


def test_importing_the_package_imports_none_of_its_modules() -> None:
    code = (
        "import sys, blueprint_net;"
        " print(sorted(m for m in sys.modules if m.startswith('blueprint_net.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nod'"):
        blueprint_net.Nod  # noqa: B018


def test_private_modules_are_private() -> None:
    """The modules and packages without an underscore are the public ones
    listed here."""
    paths = [*PACKAGE.glob("[!_]*.py"), *PACKAGE.glob("[!_]*/__init__.py")]
    public = {module_name(path) for path in paths}
    assert public == set(PUBLIC + PROGRAMS) - {"blueprint_net"}


def test_docs_and_examples_use_only_the_public_surface() -> None:
    readers = [
        ROOT / "README.md",
        ROOT / "docs" / "embedding.md",
        *sorted((ROOT / "examples").glob("*.py")),
        PACKAGE / "demo.py",
        *sorted((PACKAGE / "mpyc").glob("*.py")),
    ]
    for path in readers:
        text = path.read_text()
        private = re.search(r"blueprint_net\._[a-z]", text)
        assert private is None, f"{path.name} imports a private module"


def test_each_public_module_is_an_attribute_of_the_package() -> None:
    """``import blueprint_net`` then ``blueprint_net.errors.ErrorCode``, as
    the deprecation warnings advise, works without importing the module."""
    names = {
        module.rpartition(".")[2] for module in PUBLIC if module != "blueprint_net"
    }
    assert names == blueprint_net._MODULES
    code = (
        "import blueprint_net as b;"
        f" print(sorted(n for n in {sorted(names)!r} if getattr(b, n).__name__))"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.stdout.strip() == str(sorted(names))
