"""The package's layers (docs/architecture.md, "Layers"): every module imports only modules of its own
layer or of layers below it, and no group of modules imports itself around a circle.

The scan reads every ``import`` of ``python/zsar`` with :mod:`ast`, the ones inside functions and
under ``TYPE_CHECKING`` included (a deferred import is still a dependency), so a back arrow or a
circle fails here with the importing file, its line and the imported module.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "zsar"

#: Lowest first; a module may import its own layer and the layers before it. The foundation holds
#: what every layer needs (the compiled core's loader, config files, packaged resources, helpers).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "_utils", "_limits", "_ext", "config", "runtime", "resources"),
    ("ops",),
    ("text",),
    ("data",),
    ("models",),
    ("zeroshot",),
    ("train",),
    ("eval",),
    ("demo",),
    ("cli", "info", "__main__"),
    ("__init__",),  # the package's public names: imports anything, imported by nothing inside
)


#: The compiled core: an extension module, not a Python file of any layer (it imports nothing).
COMPILED = {"zsar._C"}


def _module_name(path: Path) -> str:
    parts = ["zsar", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=None)
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: not in any layer of tests/test_layers.py LAYERS; add its folder there "
                         "(and to docs/architecture.md)")


@functools.lru_cache(maxsize=None)
def _scan() -> list[tuple[str, int, str]]:
    return _imports(_modules())


def _imports(modules: dict[str, Path]) -> list[tuple[str, int, str]]:
    """``(importer, line, imported)`` for every import of a zsar module by a zsar module."""
    edges = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # `from pkg import sub` imports the module pkg.sub; `from pkg import name`, pkg itself.
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in {*modules, *COMPILED} else source
                           for a in node.names]
            else:
                continue
            for target in targets:
                if target in COMPILED:
                    continue
                while target and target not in modules and target.startswith("zsar."):
                    target = target.rpartition(".")[0]  # zsar._C, a name inside a module
                if target in modules and target != name:
                    edges.append((name, node.lineno, target))
    return edges


def _where(modules, importer: str, line: int) -> str:
    return f"{modules[importer].relative_to(PACKAGE.parent)}:{line}"


def test_every_import_goes_down_the_layers():
    modules = _modules()
    back = [f"{_where(modules, a, line)} ({a}, layer {_layer(a)}) imports {b} (layer {_layer(b)})"
            for a, line, b in _scan() if _layer(b) > _layer(a)]
    assert not back, "imports that climb back up the layers:\n" + "\n".join(back)


def _private(module: str) -> str | None:
    """The package a module is private to (``zsar.ops._dispatch`` -> ``zsar.ops``), or None."""
    parts = module.split(".")
    for i in range(2, len(parts)):
        if parts[i].startswith("_") and not parts[i].startswith("__"):
            return ".".join(parts[:i])
    return None


def test_private_modules_stay_in_their_package():
    # A layer offers its public names; another layer reaching into its `_module` couples to internals.
    modules = _modules()
    reaching = [f"{_where(modules, a, line)}: {a} imports {b}, private to {_private(b)}"
                for a, line, b in _scan()
                if _private(b) and not (a == _private(b) or a.startswith(_private(b) + "."))]
    assert not reaching, "imports of another package's private modules:\n" + "\n".join(reaching)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_no_import_circles():
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    where: dict[tuple[str, str], str] = {}
    for a, line, b in _scan():
        graph[a].add(b)
        where.setdefault((a, b), _where(modules, a, line))
    circles = _circles(graph)
    lines = []
    for component in circles:
        members = set(component)
        arrows = [f"    {where[(a, b)]}: {a} -> {b}" for a in component for b in sorted(graph[a] & members)]
        lines.append(" <-> ".join(component) + "\n" + "\n".join(arrows))
    assert not circles, "modules that import each other around a circle:\n" + "\n".join(lines)


def test_deferred_imports_say_why():
    # An import inside a function hides a dependency from the reader and from this scan's order; it
    # is kept only where it breaks a real cost (an optional package, a slow import), and a comment on
    # its line or the line above says which. The command line defers every subcommand's imports so
    # that `zsar --help` and each command load only what they run (said once, in zsar/cli/__init__.py).
    silent = []
    for name, path in _modules().items():
        if name == "zsar.cli" or name.startswith("zsar.cli."):
            continue
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.level:
                    around = lines[node.lineno - 2:node.end_lineno]
                    if not any("#" in line for line in around):
                        where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                        silent.append(f"{where}: {lines[node.lineno - 1].strip()}")
    assert not silent, "imports inside functions without a comment saying why:\n" + "\n".join(sorted(set(silent)))


def test_the_scan_sees_back_arrows_and_circles(tmp_path):
    # The scanner itself, on a small tree written here: a deferred back arrow from data to models,
    # a `from package import module` circle, and the compiled core, which is no module of a layer.
    files = {
        "zsar/data/loader.py": "def f():\n    from ..models.base import AudioSpec\n",
        "zsar/models/base.py": "from . import registry\nfrom .._ext import compiled\n",
        "zsar/models/registry.py": "from .base import ZeroShotModel\n",
        "zsar/_ext.py": "from . import _C\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = {name[:-3].replace("/", "."): tmp_path / name for name in files}
    edges = {(a, b) for a, _, b in _imports(modules)}
    assert edges == {("zsar.data.loader", "zsar.models.base"), ("zsar.models.base", "zsar.models.registry"),
                     ("zsar.models.registry", "zsar.models.base"), ("zsar.models.base", "zsar._ext")}
    assert _layer("zsar.data.loader") < _layer("zsar.models.base")  # the first edge is a back arrow
    graph = {m: {b for a, b in edges if a == m} for m in modules}
    assert _circles(graph) == [["zsar.models.base", "zsar.models.registry"]]
    assert _private("zsar.ops._dispatch") == "zsar.ops" and _private("zsar._utils") is None
