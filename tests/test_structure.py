"""The package's structure, checked statically on the source of backprop/*.py.

The modules are read where Python imports them from (the folder of
`backprop.__file__`: the installed package under CI, the checkout when built
in place) and parsed, never imported.  Three rules:

- no import cycle among backprop's modules;
- no import of a backprop module inside a function or method;
- no module reads another module's private members.

The compiled modules (_ops, _engine, _codes) have no Python source: they are
leaves of the import graph.  Imports under `if TYPE_CHECKING:` never run and
are left out.  Each failure lists the offending places as file:line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import backprop

PACKAGE = "backprop"
PACKAGE_DIR = Path(backprop.__file__).resolve().parent

# Private members of the standard library that are meant to be used: os._exit
# (leave at once, as a forked or failed child must) and sys._getframe; and the
# documented API of namedtuples (typing.NamedTuple), underscored so as not to
# clash with field names.
ALLOWED_QUALIFIED = {"os._exit", "sys._getframe"}
ALLOWED_ATTRIBUTES = {"_asdict", "_replace", "_make", "_fields", "_field_defaults"}


@dataclass(frozen=True)
class Module:
    name: str  # dotted: backprop, backprop.network, …
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    def where(self, node: ast.stmt | ast.expr) -> str:
        """file:line of `node`, the file relative to the package's parent."""
        return f"{self.path.relative_to(PACKAGE_DIR.parent)}:{node.lineno}"


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _read_modules() -> dict[str, Module]:
    paths = sorted(PACKAGE_DIR.rglob("*.py"))
    assert paths, f"no Python source of backprop in {PACKAGE_DIR}"
    return {
        _module_name(p): Module(_module_name(p), p, ast.parse(p.read_text("utf-8"), str(p)))
        for p in paths
    }


MODULES = _read_modules()


def _compiled_modules() -> set[str]:
    """backprop's extension modules (by their files or their stubs)."""
    names = set()
    for pattern in ("*.so", "*.pyd", "*.pyi"):
        for path in PACKAGE_DIR.glob(pattern):
            names.add(f"{PACKAGE}.{path.name.split('.')[0]}")
    return names - set(MODULES)


KNOWN_MODULES = set(MODULES) | _compiled_modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool = False):
    """(node, whether it is inside a function) for every node below `node`,
    leaving out the bodies of `if TYPE_CHECKING:` (not their else)."""
    for child in ast.iter_child_nodes(node):
        yield child, in_function
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other, in_function
                yield from _walk(other, in_function)
            continue
        inside = in_function or isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
        )
        yield from _walk(child, inside)


def _base_of(module: Module, node: ast.ImportFrom) -> str | None:
    """The dotted module that `from … import` reads from."""
    if node.level == 0:
        return node.module
    package = module.name.split(".")
    if not module.is_package:
        package.pop()
    if node.level > 1:
        package = package[: -(node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _in_package(name: str | None) -> bool:
    return name is not None and (name == PACKAGE or name.startswith(PACKAGE + "."))


def _imported_modules(module: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The backprop modules that an import statement loads (itself named, not
    the packages above it, which every submodule needs)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if _in_package(alias.name)]
    base = _base_of(module, node)
    if base is None or not _in_package(base):
        return []
    found = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.append(sub if sub in KNOWN_MODULES else base)
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str


def _import_edges(module: Module):
    """(import node, inside a function) for every import in `module` of a backprop module."""
    for node, in_function in _walk(module.tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _imported_modules(module, node):
            yield node, in_function


def _module_level_graph() -> dict[str, list[Edge]]:
    graph: dict[str, list[Edge]] = {name: [] for name in MODULES}
    for module in MODULES.values():
        for node, in_function in _import_edges(module):
            if not in_function:
                for target in _imported_modules(module, node):
                    if target in MODULES and target != module.name:
                        graph[module.name].append(Edge(module.name, target, module.where(node)))
    return graph


def _cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One cycle through each strongly connected component of more than one
    module (Tarjan's algorithm), as the import edges that close it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for edge in graph[name]:
            if edge.target not in index:
                visit(edge.target)
                low[name] = min(low[name], low[edge.target])
            elif edge.target in stack:
                low[name] = min(low[name], index[edge.target])
        if low[name] == index[name]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == name:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return [_cycle_in(graph, set(component), component[0]) for component in components]


def _cycle_in(graph: dict[str, list[Edge]], component: set[str], start: str) -> list[Edge]:
    """The import edges of a shortest cycle from `start` within `component`."""
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for name in frontier:
            for edge in graph[name]:
                if edge.target == start:
                    return paths[name] + [edge]
                if edge.target in component and edge.target not in paths:
                    paths[edge.target] = paths[name] + [edge]
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component has one


def _report(title: str, lines: list[str]) -> str:
    return f"{title} ({len(lines)}):\n" + "\n".join(f"  {line}" for line in lines)


def test_the_modules_are_read_from_the_imported_package():
    assert f"{PACKAGE}.network" in MODULES, sorted(MODULES)
    assert {f"{PACKAGE}._ops", f"{PACKAGE}._engine"} <= KNOWN_MODULES - set(MODULES)


def test_no_import_cycle_among_the_modules():
    """Module-level imports (also in try/except and class bodies, which run
    at import) form no cycle: each module can be understood and loaded
    after the ones it imports."""
    cycles = _cycles(_module_level_graph())
    lines = [
        " -> ".join([cycle[0].source] + [e.target for e in cycle])
        + "".join(f"\n      {e.where} imports {e.target}" for e in cycle)
        for cycle in cycles
    ]
    assert not cycles, _report("import cycles", lines)


def test_no_backprop_import_inside_a_function():
    """backprop's modules import each other at the top, where the order of
    loading is seen, never inside a function or method (that hides a cycle
    rather than removing it).  Functions may import other packages: optional
    third-party ones (matplotlib, scikit-learn, mpi4py, threadpoolctl …),
    imported where they are needed so that backprop loads without them, and
    the standard library."""
    found = [
        f"{module.where(node)}: {ast.unparse(node)}"
        for module in MODULES.values()
        for node, in_function in _import_edges(module)
        if in_function
    ]
    assert not found, _report("imports of backprop modules inside functions", found)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _setattr_name(call: ast.Call) -> str | None:
    """The attribute that setattr(obj, "name", v) or
    object.__setattr__(obj, "name", v) sets, if named by a literal."""
    func = call.func
    if isinstance(func, ast.Name) and func.id == "setattr":
        position = 1
    elif isinstance(func, ast.Attribute) and func.attr == "__setattr__":
        unbound = isinstance(func.value, ast.Name) and func.value.id in ("object", "type")
        position = 1 if unbound else 0
    else:
        return None
    argument = call.args[position] if len(call.args) > position else None
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return argument.value
    return None


def _defined_members(module: Module) -> set[str]:
    """The names `module` defines as members: its functions and classes (at
    any depth), class attributes (assigned or in __slots__) and the
    attributes it assigns on any object."""
    names = set()
    for node in ast.walk(module.tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for statement in node.body:
                names.update(_assigned_names(statement))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.attr)
        elif isinstance(node, ast.Call) and (attribute := _setattr_name(node)):
            names.add(attribute)
    return names


def _assigned_names(statement: ast.stmt) -> set[str]:
    """The names a class-body statement binds, with the strings of __slots__."""
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
        targets = [statement.target]
    else:
        return set()
    names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if "__slots__" in names and statement.value is not None:
        names |= {
            n.value
            for n in ast.walk(statement.value)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
    return names


def _is_self(node: ast.expr) -> bool:
    """self, cls, or super() (the same object)."""
    return (isinstance(node, ast.Name) and node.id in ("self", "cls")) or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def _private_reads(module: Module):
    """(node, what) for each read of another module's private member."""
    own = _defined_members(module)
    for node, _ in _walk(module.tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            if (
                _is_private(node.attr)
                and not _is_self(node.value)
                and node.attr not in own
                and node.attr not in ALLOWED_ATTRIBUTES
                and ast.unparse(node) not in ALLOWED_QUALIFIED
            ):
                yield node, ast.unparse(node)
        elif isinstance(node, ast.ImportFrom) and _in_package(_base_of(module, node)):
            base = _base_of(module, node)
            for alias in node.names:
                if _is_private(alias.name) and f"{base}.{alias.name}" not in KNOWN_MODULES:
                    yield node, f"from {base} import {alias.name}"


def test_no_module_reads_another_modules_private_members():
    """A member named with a leading underscore (`obj._name`, not a dunder)
    is read only in the module that defines it: as a function, a class, a
    class attribute or an attribute it assigns.  Reads through self, cls
    and super() are the object's own.  Modules named with an underscore
    (_ops, _sources …) are the package's private modules, free to import
    inside backprop: it is their underscored members that count."""
    found = [
        f"{module.where(node)}: {what}"
        for module in MODULES.values()
        for node, what in _private_reads(module)
    ]
    assert not found, _report("reads of other modules' private members", found)
