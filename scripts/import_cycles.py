"""Import cycles among the project's modules, and its unexplained lazy imports.

    python scripts/import_cycles.py [--lazy] [--strict-lazy]

Parses every .py file of the project's packages (migrations aside) and collects
the imports of project modules, those inside function bodies included (a lazy
import still closes a cycle once it runs), those under `if TYPE_CHECKING:`
excluded. Prints each strongly connected component of the import graph with
one concrete cycle through it, the file:line of each of its imports, and exits
1 if there is any.

It also counts the function-level imports of project modules that have no
comment on their line or the line directly above saying why they are lazy;
`--lazy` lists them, `--strict-lazy` lists them and exits 1 if there are any.
"""

from __future__ import annotations

import ast
import itertools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("arena", "inference", "ratings", "realtime")
SKIP_DIRS = {"migrations", "__pycache__"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported project module
    path: str  # relative to ROOT
    line: int
    lazy: bool  # inside a function body
    commented: bool  # a comment on its line or the line directly above


def module_files() -> dict[str, str]:
    """Module name -> file path (relative to ROOT) for every project module."""
    modules: dict[str, str] = {}
    for package in PACKAGES:
        top = os.path.join(ROOT, package)
        if not os.path.isfile(os.path.join(top, "__init__.py")):
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for filename in sorted(filenames):
                if not filename.endswith(".py"):
                    continue
                path = os.path.relpath(os.path.join(dirpath, filename), ROOT)
                parts = path[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                modules[".".join(parts)] = path
    return modules


def is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def import_nodes(
    tree: ast.Module,
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement outside `if TYPE_CHECKING:`, and whether it is in a function."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, in_function
            continue
        if isinstance(node, ast.If) and is_type_checking(node.test):
            children: list[ast.AST] = list(node.orelse)  # the runtime branch only
        else:
            children = list(ast.iter_child_nodes(node))
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        stack.extend((child, inner) for child in reversed(children))


def known(name: str, modules: dict[str, str]) -> str | None:
    """The longest prefix of a dotted name that is a project module."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, str]
) -> list[str]:
    """The project modules one import statement imports."""
    if isinstance(node, ast.Import):
        found = (known(alias.name, modules) for alias in node.names)
        return [name for name in found if name]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        if node.level > 1:
            package = package[: -(node.level - 1)]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    result: list[str] = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in modules:
            result.append(submodule)
        elif (name := known(base, modules)) and name not in result:
            result.append(name)
    return result


def has_comment(lines: list[str], node: ast.stmt) -> bool:
    """A comment on the import's lines (an import holds no string), or on the
    line above the block of import lines it is part of."""
    end = node.end_lineno or node.lineno
    if any("#" in line for line in lines[node.lineno - 1 : end]):
        return True
    above = node.lineno - 2
    while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


def collect(modules: dict[str, str]) -> list[Import]:
    imports: list[Import] = []
    for module, path in sorted(modules.items()):
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source, filename=path)
        lines = source.splitlines()
        is_package = path.endswith("__init__.py")
        for node, lazy in import_nodes(tree):
            commented = has_comment(lines, node)
            for target in targets(node, module, is_package, modules):
                if target != module:
                    imports.append(Import(module, target, path, node.lineno, lazy, commented))
    return imports


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph[successor])))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def shortest_cycle(start: str, graph: dict[str, list[str]], members: set[str]) -> list[str]:
    """The shortest cycle from `start` back to it within one component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for successor in graph[node]:
                if successor not in members:
                    continue
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if successor not in previous:
                    previous[successor] = node
                    following.append(successor)
        frontier = following
    return [start]


def main(argv: list[str]) -> int:
    unknown = [arg for arg in argv if arg not in ("--lazy", "--strict-lazy")]
    if unknown:
        print(f"usage: {sys.argv[0]} [--lazy] [--strict-lazy]", file=sys.stderr)
        return 2
    strict_lazy = "--strict-lazy" in argv
    list_lazy = strict_lazy or "--lazy" in argv

    modules = module_files()
    imports = collect(modules)
    graph: dict[str, list[str]] = {module: [] for module in modules}
    first: dict[tuple[str, str], Import] = {}
    for imp in sorted(imports, key=lambda i: (i.source, i.line)):
        if (imp.source, imp.target) not in first:
            first[imp.source, imp.target] = imp
            graph[imp.source].append(imp.target)

    components = strongly_connected(graph)
    for component in components:
        print(f"import cycle among {len(component)} modules: {', '.join(component)}")
        cycle = shortest_cycle(component[0], graph, set(component))
        for source, target in itertools.pairwise(cycle):
            imp = first[source, target]
            where = "in a function" if imp.lazy else "at module level"
            print(f"  {source} -> {target}  {imp.path}:{imp.line} ({where})")
    if not components:
        print(f"no import cycles among {len(modules)} modules")

    lazy = [imp for imp in imports if imp.lazy]
    bare = sorted(
        {(imp.path, imp.line, imp.target) for imp in lazy if not imp.commented},
    )
    print(
        f"{len(lazy)} function-level imports of project modules, "
        f"{len(bare)} without a comment saying why"
        + ("" if list_lazy or not bare else " (--lazy lists them)")
    )
    if list_lazy:
        for path, line, target in bare:
            print(f"  {path}:{line}  {target}")

    if components:
        return 1
    if strict_lazy and bare:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
