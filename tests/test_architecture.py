"""The house's corridors, read from the source with ``ast``: the package's import graph
has no cycle, no module imports an underscore name from another module of the package,
imports of the package's own modules sit at the top of each file, and every public
module says what it exports."""

import ast
import importlib
import os
import pathlib
import subprocess
import sys

import pytest

import sparseprune

ROOT = pathlib.Path(sparseprune.__file__).parent
PACKAGE = "sparseprune"
# Optional extras, imported where their feature needs them and nowhere else.
OPTIONAL = {"matplotlib", "sklearn", "torch", "dask", "distributed"}
# An extra's own home: a module that imports it at its top (its classes subclass the
# extra's), and is itself imported only on demand, never by another module's import.
# (``sparseprune.dask`` is not one: it imports dask inside its functions, so the package
# imports it eagerly at no cost.)
EXTRA_HOMES = {"sparseprune.sklearn": {"sklearn"}}


def module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve(module, node):
    """The absolute module an ``ImportFrom`` node names, from inside ``module``."""
    if node.level == 0:
        return node.module
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module, source=None):
    """[(imported module, names, node, top_level)] of ``module``'s own source (or of
    ``source``, as if it were the module's)."""
    tree = ast.parse(MODULES[module].read_text() if source is None else source)
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, [], node, id(node) in top))
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            names = [alias.name for alias in node.names]
            # "from . import data" imports the module sparseprune.data.
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            for sub in submodules:
                found.append((sub, [], node, id(node) in top))
            if len(submodules) < len(names):
                found.append((target, [n for n in names if f"{target}.{n}" not in MODULES],
                              node, id(node) in top))
    return found


def internal(name):
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def graph():
    edges = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _, _ in imports(module):
            if internal(target) and target != module:
                edges[module].add(target)
    return edges


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            # A package's __init__ imports its own modules; a module importing its
            # package's __init__ only would be a cycle, and is counted as one.
            if state.get(n) == "open":
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_no_private_name_crosses_a_module_line():
    crossings = []
    for module in MODULES:
        for target, names, node, _ in imports(module):
            if internal(target) and target != module:
                for name in names:
                    if name.startswith("_"):
                        crossings.append(f"{module}:{node.lineno} imports {name} from {target}")
    assert not crossings, "\n".join(crossings)


def test_imports_are_at_the_top_except_optional_extras():
    hidden = []
    for module in MODULES:
        for target, _, node, top_level in imports(module):
            root = target.split(".")[0]
            if not top_level and root not in OPTIONAL:
                hidden.append(f"{module}:{node.lineno} imports {target} inside a block")
    assert not hidden, "\n".join(hidden)


def eager_extras(module, found):
    """Top-level imports of an optional extra in ``module``, beyond its own home's."""
    allowed = EXTRA_HOMES.get(module, set())
    return [f"{module}:{node.lineno} imports {target} at import time"
            for target, _, node, top_level in found
            if top_level and target.split(".")[0] in OPTIONAL - allowed]


def imported_homes(module, found):
    """Imports of an extra's home in ``module``: each would import the extra with it."""
    return [f"{module}:{node.lineno} imports {target}, an optional extra's home"
            for target, _, node, _ in found
            if target != module and any(target == home or target.startswith(home + ".")
                                        for home in EXTRA_HOMES)]


def test_optional_extras_are_imported_lazily_only():
    eager = [line for module in MODULES for line in eager_extras(module, imports(module))]
    assert not eager, "\n".join(eager)


def test_no_module_imports_an_extras_home():
    """``spp.sklearn`` is reached through the package's ``__getattr__`` (PEP 562), by
    name: no import statement anywhere names it."""
    found = [line for module in MODULES for line in imported_homes(module, imports(module))]
    assert not found, "\n".join(found)


def test_importing_the_package_imports_no_extra():
    code = ("import sys, sparseprune; "
            f"print(sorted(m for m in {sorted(OPTIONAL)} if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.strip() == "[]"


def test_an_extras_home_is_reached_lazily():
    code = ("import sys, sparseprune as spp; assert 'sklearn' not in sys.modules; "
            "spp.sklearn.SparseMLPClassifier; print('sklearn' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.strip() == "True"
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        sparseprune.nothing  # noqa: B018


PUBLIC = sorted(m for m in MODULES
                if not any(part.startswith("_") for part in m.split(".")))


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_module_has_an_all(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"
    assert not [n for n in exported if n.startswith("_") and n != "__version__"]


def own_submodule(value):
    return isinstance(value, type(sparseprune)) and value.__name__.startswith(PACKAGE + ".")


@pytest.mark.parametrize("name", [m for m in PUBLIC if MODULES[m].name == "__init__.py"])
def test_a_package_namespace_is_what_it_exports(name):
    """A package shows its __all__ and its own subpackages and modules, nothing else:
    no stray ``os``, ``np`` or ``dataclass``."""
    module = importlib.import_module(name)
    leaked = sorted(n for n, value in vars(module).items()
                    if not n.startswith("_") and n not in module.__all__
                    and not own_submodule(value))
    assert not leaked, f"{name} exposes names outside __all__: {leaked}"


def test_the_checks_can_fail():
    """The graph walker sees real edges and resolves relative imports: a check that
    cannot fail is a defect."""
    edges = graph()
    assert "sparseprune.layers" in edges["sparseprune.model"]
    assert "sparseprune._validation" in edges["sparseprune.layers"]
    assert resolve("sparseprune.prune.iterative",
                   ast.parse("from ..mdl import x").body[0]) == "sparseprune.mdl"
    assert resolve("sparseprune.prune",
                   ast.parse("from .criteria import x").body[0]) == "sparseprune.prune.criteria"
    # The extras' rules see what they forbid, and allow a home its own extra.
    sneaky = "import torch\nfrom . import sklearn\nfrom .sklearn import SparseMLPRegressor\n"
    assert len(eager_extras("sparseprune.model", imports("sparseprune.model", sneaky))) == 1
    assert len(imported_homes("sparseprune", imports("sparseprune", sneaky))) == 2
    assert eager_extras("sparseprune.sklearn", imports("sparseprune.sklearn",
                                                       "import sklearn.base\n")) == []
    assert len(eager_extras("sparseprune.sklearn", imports("sparseprune.sklearn",
                                                           "import torch\n"))) == 1
