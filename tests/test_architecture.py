"""The package's architecture rules, checked on its source with the ``ast`` module (nothing of
fenchel_idl is imported). Each failing check lists every offence as ``file:line: what``.

The rules (issue 21):

(a) layers: a module imports from fenchel_idl only from its own folder or the folders below it,
    errors < validation, _blas < model < problem < blocks < drivers < analysis < apps (errors
    imports nothing of the package, validation and _blas only errors); the applications import
    only ``fenchel_idl``, the layer packages (names in their ``__all__``), ``errors``,
    ``validation`` and other application modules;
(b) no private name (``_x``) imported or used from a module of another folder; the applications
    use no private name of the library;
(c) no import inside a function, except the heavy optional third-party packages in ``HEAVY``;
(d) no function of the library core (outside apps/) over ``MAX_LINES`` code lines, counted as
    /work/tools/funclen.py counts them (docstring, comments and blank lines do not count);
(e) a small top-level API (at most ``MAX_API`` names) and every ``__all__`` name defined;
    every name imported from a package module exists there;
(f) no import cycle between modules.

Every checker takes the package folder, so the tests at the end run it on small synthetic
packages too: each check is shown to fail on an offence and to pass on clean code.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fenchel_idl"

FOLDERS = ("model", "problem", "blocks", "drivers", "analysis", "apps")
RANK = {"errors": 0, "utils": 1, **{f: i + 2 for i, f in enumerate(FOLDERS)}}
UTILS = ("validation", "_blas")
APPS_MAY_USE = ("errors", "validation")
HEAVY = ("matplotlib", "dask", "distributed", "sklearn", "tqdm", "nbclient", "nbformat",
         "threadpoolctl", "torch", "torchidl", "pyscipopt")
MAX_LINES = 80
MAX_API = 45


# -- reading the package ---------------------------------------------------------------------

@dataclass
class Import:
    """One imported module or name: ``target`` is the module it comes from, ``name`` the
    name taken from it (None for ``import a.b``), ``in_function`` whether it sits in a def."""
    line: int
    target: str
    name: str | None
    in_function: bool
    external: bool


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: list[str]
    imports: list[Import] = field(default_factory=list)

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def layer(self) -> str:
        return layer_of(self.name)

    @property
    def folder(self) -> str:
        return folder_of(self.name)

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


def layer_of(name: str) -> str:
    """'root', 'errors', 'utils', one of FOLDERS, or 'unknown' for a module outside them."""
    parts = name.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] == "errors":
        return "errors"
    if parts[1] in UTILS:
        return "utils"
    return parts[1] if parts[1] in FOLDERS else "unknown"


def folder_of(name: str) -> str:
    """The folder a module's file sits in: the layer folder, or '' for the top folder."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FOLDERS) else ""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class Package:
    """Every module of the package under ``root`` (a folder named like the package)."""

    def __init__(self, root: Path):
        self.root = root
        self.top = root.name
        self.modules: dict[str, Module] = {}
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root.parent).with_suffix("")
            parts = list(rel.parts[:-1]) if path.name == "__init__.py" else list(rel.parts)
            text = path.read_text(encoding="utf-8")
            mod = Module(".".join(parts), path, ast.parse(text, str(path)), text.splitlines())
            self.modules[mod.name] = mod
        for mod in self.modules.values():
            mod.imports = list(self._imports(mod))

    def _resolve(self, mod: Module, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = mod.name.split(".")
        if not mod.is_package:
            base = base[:-1]
        base = base[:len(base) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))

    def _imports(self, mod: Module):
        for node, in_function in _walk(mod.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(node.lineno, alias.name, None, in_function,
                                 not self.is_ours(alias.name))
            elif isinstance(node, ast.ImportFrom):
                target = self._resolve(mod, node)
                for alias in node.names:
                    yield Import(node.lineno, target, alias.name, in_function,
                                 not self.is_ours(target))

    def is_ours(self, name: str) -> bool:
        return name == self.top or name.startswith(self.top + ".")

    def module_of(self, imp: Import) -> str:
        """The module an import loads: ``from a import b`` loads a.b when b is a submodule."""
        if imp.name is not None and f"{imp.target}.{imp.name}" in self.modules:
            return f"{imp.target}.{imp.name}"
        return imp.target

    def ours(self):
        """(module, import) for every import of a package module, in file order."""
        for mod in self.modules.values():
            for imp in mod.imports:
                if not imp.external:
                    yield mod, imp


def _walk(tree: ast.AST):
    """Every node with a flag: is it inside a function (def, async def or lambda)?"""
    stack = [(tree, False)]
    while stack:
        node, inside = stack.pop()
        yield node, inside
        inner = inside or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inner) for child in reversed(list(ast.iter_child_nodes(node))))


def _top_level_names(tree: ast.Module) -> set[str] | None:
    """Names bound at module level (in if/try/with/for blocks too); None after ``import *``."""
    names: set[str] = set()

    def targets(node):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Import):
                names.update(a.asname or a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if any(a.name == "*" for a in node.names):
                    return False
                names.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    targets(t)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
                targets(node.target)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        targets(item.optional_vars)
            blocks = (ast.If, ast.Try, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith)
            for sub in ("body", "orelse", "finalbody"):
                if (isinstance(node, blocks) and hasattr(node, sub)
                        and visit(getattr(node, sub)) is False):
                    return False
            for handler in getattr(node, "handlers", []):
                if handler.name:
                    names.add(handler.name)
                if visit(handler.body) is False:
                    return False
        return True

    return names if visit(tree.body) else None


def _dunder_all(mod: Module) -> tuple[list[str] | None, int]:
    """The literal ``__all__`` of a module and its line; (None, 0) without one, (None, line)
    when it is not a literal list or tuple of strings."""
    for node in mod.tree.body:
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            tgts = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in tgts):
                value = node.value
                if (not isinstance(node, ast.AugAssign) and isinstance(value, (ast.List, ast.Tuple))
                        and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                                for e in value.elts)):
                    return [e.value for e in value.elts], node.lineno
                return None, node.lineno
    return None, 0


# -- the checks: each returns a list of "file:line: what" ------------------------------------

def layer_violations(pkg: Package) -> list[str]:
    """(a) Every import of a package module goes to the importer's folder or one below it;
    the applications use only the public surface."""
    out = []
    for mod in pkg.modules.values():
        if mod.layer == "unknown":
            out.append(f"{mod.where(1)}: module {mod.name} is outside the layers "
                       f"({', '.join(FOLDERS)}, errors, {', '.join(UTILS)})")
    for mod, imp in pkg.ours():
        target = pkg.module_of(imp)
        what = f"{mod.name} imports {target}" + (f" ({imp.name})" if target == imp.target
                                                  and imp.name else "")
        if mod.layer == "apps":
            problem = _apps_import_problem(pkg, imp, target)
            if problem:
                out.append(f"{mod.where(imp.line)}: {what}: {problem}")
            continue
        tlayer = layer_of(target)
        if mod.layer == "root":
            if tlayer == "apps":
                out.append(f"{mod.where(imp.line)}: {what}: the package imports no application")
            continue
        if tlayer == "root":
            out.append(f"{mod.where(imp.line)}: {what}: the library never imports the top "
                       f"package (it imports every layer); import from the module itself")
        elif tlayer == "unknown" or mod.layer == "unknown":
            continue  # reported above
        elif RANK[tlayer] > RANK[mod.layer] or (
                RANK[tlayer] == RANK[mod.layer] and mod.layer in ("errors", "utils")
                and target != mod.name):
            out.append(f"{mod.where(imp.line)}: {what}: layer {mod.layer} may not import "
                       f"from layer {tlayer}")
    return out


def _apps_import_problem(pkg: Package, imp: Import, target: str) -> str | None:
    """What is wrong with an application's import, or None."""
    if layer_of(target) == "apps":
        return None
    if imp.name is not None and _is_private(imp.name):
        return "applications use no private name of the library"
    if target in {f"{pkg.top}.{name}" for name in APPS_MAY_USE}:
        return None
    packages = {pkg.top} | {f"{pkg.top}.{f}" for f in FOLDERS}
    if imp.name is None:  # import a.b.c
        return None if imp.target in packages else (
            f"applications import only {pkg.top}, its layer packages, errors and validation "
            f"(not the module {imp.target})")
    if imp.target not in packages:
        return (f"applications import only {pkg.top}, its layer packages, errors and "
                f"validation (not the module {imp.target})")
    if imp.target == pkg.top and target in packages:
        return None  # from fenchel_idl import model
    source = pkg.modules.get(imp.target)
    public = (_dunder_all(source)[0] if source is not None else None) or []
    return None if imp.name in public else f"{imp.name!r} is not in {imp.target}.__all__"


def private_name_violations(pkg: Package) -> list[str]:
    """(b) No private name taken from a module of another folder, by import or attribute."""
    out = []
    for mod, imp in pkg.ours():
        target = pkg.module_of(imp)
        if imp.name is None or target != imp.target or not _is_private(imp.name):
            continue
        if _crosses(mod, target):
            out.append(f"{mod.where(imp.line)}: {mod.name} imports the private name "
                       f"{imp.name} from {target} (another folder)")
    for mod in pkg.modules.values():
        out.extend(_private_attribute_uses(pkg, mod))
    return out


def _crosses(mod: Module, target: str) -> bool:
    """Is using a private name of ``target`` from ``mod`` crossing a folder boundary?"""
    if mod.layer == "apps":
        return layer_of(target) != "apps"
    return folder_of(target) != mod.folder


def _private_attribute_uses(pkg: Package, mod: Module) -> list[str]:
    """``alias._x`` where alias names a package module of another folder."""
    aliases: dict[str, str] = {}
    for node, _ in _walk(mod.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if pkg.is_ours(a.name):
                    aliases[a.asname or a.name.split(".")[0]] = (
                        a.name if a.asname else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            target = pkg._resolve(mod, node)
            for a in node.names:
                if pkg.is_ours(target) and f"{target}.{a.name}" in pkg.modules:
                    aliases[a.asname or a.name] = f"{target}.{a.name}"
    out = []
    for node, _ in _walk(mod.tree):
        if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
            continue
        chain, value = [], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in aliases:
            continue
        owner = ".".join([aliases[value.id], *reversed(chain)])
        if owner in pkg.modules and _crosses(mod, owner):
            out.append(f"{mod.where(node.lineno)}: {mod.name} uses the private name "
                       f"{node.attr} of {owner} (another folder)")
    return out


def function_import_violations(pkg: Package) -> list[str]:
    """(c) Imports sit at module top, except the heavy optional third-party packages."""
    out = []
    for mod in pkg.modules.values():
        for imp in mod.imports:
            if imp.in_function and not (imp.external and imp.target.split(".")[0] in HEAVY):
                name = imp.target + (f" ({imp.name})" if imp.name else "")
                out.append(f"{mod.where(imp.line)}: import of {name} inside a function")
        for node, inside in _walk(mod.tree):
            if (inside and isinstance(node, ast.Call) and _call_name(node) in
                    ("importlib.import_module", "import_module", "__import__")):
                out.append(f"{mod.where(node.lineno)}: dynamic import inside a function")
    return out


def _call_name(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f"{f.value.id}.{f.attr}"
    return ""


def code_lines(lines: list[str], node: ast.AST) -> int:
    """Lines of a function from its ``def`` to its end, without its docstring, comment
    lines and blank lines (the measure of /work/tools/funclen.py)."""
    doc: set[int] = set()
    body = node.body
    if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        doc = set(range(body[0].lineno, body[0].end_lineno + 1))
    count = 0
    for i in range(node.lineno, node.end_lineno + 1):
        text = lines[i - 1].strip()
        if i not in doc and text and not text.startswith("#"):
            count += 1
    return count


def long_functions(pkg: Package, limit: int = MAX_LINES) -> list[str]:
    """(d) Functions of the library core (not apps/) with more than ``limit`` code lines,
    longest first."""
    found = []
    for mod in pkg.modules.values():
        if mod.layer == "apps":
            continue
        for node in ast.walk(mod.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = code_lines(mod.lines, node)
                if n > limit:
                    found.append((n, (f"{mod.where(node.lineno)}: {node.name} has {n} code "
                                      f"lines (at most {limit})")))
    return [msg for _, msg in sorted(found, key=lambda t: -t[0])]


def api_violations(pkg: Package, max_api: int = MAX_API) -> list[str]:
    """(e) The top-level ``__all__`` is short; every ``__all__`` name is defined, public and
    listed once."""
    out = []
    top = pkg.modules[pkg.top]
    public, line = _dunder_all(top)
    if public is None:
        out.append(f"{top.where(1)}: {pkg.top} has no __all__")
    elif len(public) > max_api:
        out.append(f"{top.where(line)}: {pkg.top}.__all__ has {len(public)} names "
                   f"(at most {max_api})")
    for mod in pkg.modules.values():
        names, line = _dunder_all(mod)
        if names is None:
            if line:
                out.append(f"{mod.where(line)}: __all__ of {mod.name} is not a literal list "
                           f"of strings")
            continue
        bound = _top_level_names(mod.tree)
        if bound is None:
            out.append(f"{mod.where(1)}: {mod.name} uses 'import *'; its names cannot be "
                       f"checked")
            continue
        for name in names:
            if name not in bound and f"{mod.name}.{name}" not in pkg.modules:
                out.append(f"{mod.where(line)}: {mod.name}.__all__ names {name!r}, which "
                           f"{mod.name} does not define")
            if _is_private(name):
                out.append(f"{mod.where(line)}: {mod.name}.__all__ names the private {name!r}")
        for name in sorted({n for n in names if names.count(n) > 1}):
            out.append(f"{mod.where(line)}: {mod.name}.__all__ lists {name!r} twice")
    return out


def missing_name_violations(pkg: Package) -> list[str]:
    """(e) Every ``from <package module> import name`` names something the module defines
    (an import inside a function would otherwise fail only when it runs)."""
    out = []
    for mod, imp in pkg.ours():
        if imp.name is None or imp.name == "*" or pkg.module_of(imp) != imp.target:
            continue
        source = pkg.modules.get(imp.target)
        if source is None:
            out.append(f"{mod.where(imp.line)}: {mod.name} imports from {imp.target}, "
                       f"which does not exist")
            continue
        bound = _top_level_names(source.tree)
        if bound is not None and imp.name not in bound:
            out.append(f"{mod.where(imp.line)}: {mod.name} imports {imp.name} from "
                       f"{imp.target}, which does not define it")
    return out


def import_cycles(pkg: Package) -> list[str]:
    """(f) Cycles in the graph of module imports (at module top or in functions), each
    shown as its chain of imports with their lines."""
    edges: dict[str, dict[str, int]] = {name: {} for name in pkg.modules}
    for mod, imp in pkg.ours():
        target = pkg.module_of(imp)
        if target in pkg.modules and target != mod.name:
            edges[mod.name].setdefault(target, imp.line)
    out = []
    for scc in _strongly_connected(edges):
        if len(scc) < 2:
            continue
        chain = _cycle_in(scc, edges)
        steps = [f"{pkg.modules[a].where(edges[a][b])} ({a} -> {b})"
                 for a, b in itertools.pairwise(chain)]
        out.append("import cycle: " + "; ".join(steps))
    return out


def _strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    result.append(sorted(comp))
    return result


def _cycle_in(scc: list[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """One shortest cycle through the first module of a strongly connected component."""
    members = set(scc)
    start = scc[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(edges[node]):
            if child == start:
                return paths[node] + [start]
            if child in members and child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


# -- the rules on fenchel_idl ----------------------------------------------------------------

@pytest.fixture(scope="module")
def package():
    return Package(PACKAGE)


def _report(problems: list[str]) -> str:
    return f"{len(problems)} offence(s):\n" + "\n".join(problems)


def test_the_package_is_found(package):
    assert {f"fenchel_idl.{f}" for f in FOLDERS} <= set(package.modules)
    assert "fenchel_idl.errors" in package.modules and package.modules["fenchel_idl"].is_package


def test_layers(package):
    problems = layer_violations(package)
    assert not problems, _report(problems)


def test_no_private_name_crosses_a_folder(package):
    problems = private_name_violations(package)
    assert not problems, _report(problems)


def test_no_import_inside_a_function(package):
    problems = function_import_violations(package)
    assert not problems, _report(problems)


def test_no_long_function_in_the_library_core(package):
    problems = long_functions(package)
    assert not problems, _report(problems)


def test_small_public_api_of_defined_names(package):
    problems = api_violations(package)
    assert not problems, _report(problems)


def test_imported_package_names_exist(package):
    problems = missing_name_violations(package)
    assert not problems, _report(problems)


def test_no_import_cycle(package):
    problems = import_cycles(package)
    assert not problems, _report(problems)


# -- the checkers on synthetic packages: each can fail, and passes clean code ----------------

CLEAN = {
    "__init__.py": "from fenchel_idl.model import Model\n__all__ = ['Model', 'errors']\n"
                   "from fenchel_idl import errors\n",
    "errors.py": "class Error(Exception):\n    pass\n",
    "validation.py": "from fenchel_idl.errors import Error\n\n\ndef check(x):\n    return x\n",
    "model/__init__.py": "from fenchel_idl.model.core import Model\n__all__ = ['Model']\n",
    "model/core.py": "from fenchel_idl.errors import Error\nfrom fenchel_idl.model._helpers "
                     "import _h\n\n\nclass Model:\n    pass\n",
    "model/_helpers.py": "def _h():\n    return 1\n",
    "problem/__init__.py": "__all__ = []\n",
    "blocks/__init__.py": "__all__ = []\n",
    "drivers/__init__.py": "from fenchel_idl.drivers.bcd import solve\n__all__ = ['solve']\n",
    "drivers/bcd.py": "from fenchel_idl.model import Model\nfrom fenchel_idl.validation "
                      "import check\n\n\ndef solve():\n    import matplotlib\n"
                      "    return Model()\n",
    "analysis/__init__.py": "__all__: list[str] = []\n",
    "apps/__init__.py": "",
    "apps/cli.py": "import fenchel_idl\nfrom fenchel_idl import Model, errors\n"
                   "from fenchel_idl.drivers import solve\nfrom fenchel_idl.apps import _x\n"
                   "from fenchel_idl.validation import check\nfrom fenchel_idl import model\n"
                   "from fenchel_idl.errors import Error\n",
    "apps/_x.py": "",
}


def _package(tmp_path: Path, changes: dict[str, str] | None = None) -> Package:
    """The CLEAN package written under tmp_path, with some files replaced or added."""
    files = {**CLEAN, **(changes or {})}
    root = tmp_path / "fenchel_idl"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Package(root)


CHECKS = (layer_violations, private_name_violations, function_import_violations,
          long_functions, api_violations, missing_name_violations, import_cycles)


def test_the_clean_synthetic_package_passes_every_check(tmp_path):
    pkg = _package(tmp_path)
    for check in CHECKS:
        assert check(pkg) == [], check.__name__


@pytest.mark.parametrize("module, text, wanted", [
    ("model/core.py", "from fenchel_idl.drivers.bcd import solve\n",
     r"model/core.py:1: .*layer model may not import from layer drivers"),
    ("model/core.py", "from fenchel_idl import Model\n", r"model/core.py:1: .*top package"),
    ("errors.py", "from fenchel_idl.validation import check\n",
     r"errors.py:1: .*layer errors may not import from layer utils"),
    ("validation.py", "from fenchel_idl._blas import limit\n",
     r"validation.py:1: .*layer utils may not import from layer utils"),
    ("apps/cli.py", "from fenchel_idl.drivers.bcd import solve\n",
     r"apps/cli.py:1: .*not the module fenchel_idl.drivers.bcd"),
    ("apps/cli.py", "from fenchel_idl.model import core\n",
     r"apps/cli.py:1: .*'core' is not in fenchel_idl.model.__all__"),
    ("apps/cli.py", "x = 1\nfrom fenchel_idl.model import Hidden\n",
     r"apps/cli.py:2: .*'Hidden' is not in fenchel_idl.model.__all__"),
    ("apps/cli.py", "import fenchel_idl.model.core\n",
     r"apps/cli.py:1: .*not the module fenchel_idl.model.core"),
    ("apps/cli.py", "from fenchel_idl import _blas\n", r"apps/cli.py:1: .*no private name"),
    ("apps/cli.py", ("from fenchel_idl.validation import check\nfrom fenchel_idl import "
                     "validation\nfrom fenchel_idl._blas import limit\n"),
     r"apps/cli.py:3: .*not the module"),
    ("stray.py", "x = 1\n", r"stray.py:1: module fenchel_idl.stray is outside the layers"),
    ("__init__.py", "from fenchel_idl.apps import cli\n", r"__init__.py:1: .*no application"),
])
def test_layer_check_fails_on_each_kind_of_offence(tmp_path, module, text, wanted):
    problems = layer_violations(_package(tmp_path, {module: text}))
    assert any(re.search(wanted, p) for p in problems), problems


@pytest.mark.parametrize("module, text, wanted", [
    ("drivers/bcd.py", "from fenchel_idl.model._helpers import _h\n",
     r"bcd.py:1: .*private name _h from fenchel_idl.model._helpers"),
    ("drivers/bcd.py", "from fenchel_idl.model import core\n\n\ndef f():\n    return core._c\n",
     r"bcd.py:5: .*private name _c of fenchel_idl.model.core"),
    ("drivers/bcd.py", "import fenchel_idl.model.core as c\nc._c\n",
     r"bcd.py:2: .*_c of fenchel_idl.model.core"),
    ("drivers/bcd.py", "import fenchel_idl.model.core\nfenchel_idl.model.core._c\n",
     r"bcd.py:2: .*_c of fenchel_idl.model.core"),
    ("validation.py", "from fenchel_idl.model.core import _c\n", r"validation.py:1: .*_c"),
    ("apps/cli.py", "from fenchel_idl.errors import _secret\n", r"cli.py:1: .*_secret"),
    ("apps/cli.py", "from fenchel_idl import errors\nerrors._secret\n",
     r"cli.py:2: .*_secret of fenchel_idl.errors"),
])
def test_private_name_check_fails_across_folders(tmp_path, module, text, wanted):
    problems = private_name_violations(_package(tmp_path, {module: text}))
    assert any(re.search(wanted, p) for p in problems), problems


def test_private_names_within_a_folder_and_in_apps_are_fine(tmp_path):
    pkg = _package(tmp_path, {
        "model/core.py": "from fenchel_idl.model._helpers import _h\n"
                         "from fenchel_idl.model import _helpers\n_helpers._h\n",
        "validation.py": "from fenchel_idl.errors import _e\n",
        "apps/cli.py": "from fenchel_idl.apps._x import _y\nfrom fenchel_idl.apps import _x\n"
                       "_x._z\n"})
    assert private_name_violations(pkg) == []


@pytest.mark.parametrize("text, line", [
    ("def f():\n    import numpy\n", 2),
    ("def f():\n    from fenchel_idl.errors import Error\n", 2),
    ("class K:\n    def m(self):\n        if True:\n            from . import core\n", 4),
    ("f = lambda: __import__('numpy')\n", 1),
    ("def f():\n    import importlib\n", 2),
    ("async def f():\n    import matplotlib, scipy\n", 2),
])
def test_import_in_function_check_fails(tmp_path, text, line):
    problems = function_import_violations(_package(tmp_path, {"model/extra.py": text}))
    assert any(p.startswith(f"{tmp_path}/fenchel_idl/model/extra.py:{line}: ")
               for p in problems), problems


def test_heavy_optional_imports_in_functions_are_allowed(tmp_path):
    text = ("import numpy\n\n\ndef f():\n    import matplotlib.pyplot as plt\n"
            "    from tqdm import tqdm\n    from sklearn.base import BaseEstimator\n"
            "    import torch, dask\n    from distributed import Client\n")
    assert function_import_violations(_package(tmp_path, {"model/extra.py": text})) == []


def test_function_length_counts_code_lines_only(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(79))
    fits = 'def fits():\n    """Doc\n\n    string."""\n    # a comment\n\n' + body
    over = "def over():\n" + body + "    return x0\n"
    nested = ("def outer():\n    def inner():\n" + body.replace("    ", "        ")
              + "        return 1\n    return inner\n")
    code = fits + "\n\n" + over + "\n\n" + nested
    pkg = _package(tmp_path, {"model/long.py": code, "apps/long.py": over})
    problems = long_functions(pkg)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "outer has 83 code lines (at most 80)", "inner has 81 code lines (at most 80)",
        "over has 81 code lines (at most 80)"] or [p.split(": ", 1)[1] for p in problems] == [
        "outer has 83 code lines (at most 80)", "over has 81 code lines (at most 80)",
        "inner has 81 code lines (at most 80)"], problems
    start = code.count("\n", 0, code.index("def outer")) + 1
    assert problems[0] == (f"{tmp_path}/fenchel_idl/model/long.py:{start}: outer has 83 code "
                           f"lines (at most 80)")
    assert code_lines(fits.splitlines(), ast.parse(fits).body[0]) == 80


def test_api_check_fails(tmp_path):
    many = ", ".join(f"'n{i}'" for i in range(46))
    defs = "".join(f"n{i} = {i}\n" for i in range(46))
    pkg = _package(tmp_path / "1", {"__init__.py": defs + f"__all__ = [{many}]\n"})
    assert any("__init__.py:47: fenchel_idl.__all__ has 46 names (at most 45)" in p
               for p in api_violations(pkg))
    pkg = _package(tmp_path / "2", {"drivers/__init__.py": (
        "from fenchel_idl.drivers.bcd import solve\n__all__ = ['solve', 'gone', '_p', 'solve']"
        "\n_p = 1\n")})
    problems = api_violations(pkg)
    assert any("drivers/__init__.py:2: fenchel_idl.drivers.__all__ names 'gone', which "
               "fenchel_idl.drivers does not define" in p for p in problems), problems
    assert any("drivers/__init__.py:2: " in p and "private '_p'" in p for p in problems)
    assert any("drivers/__init__.py:2: " in p and "'solve' twice" in p for p in problems)
    pkg = _package(tmp_path / "3", {"blocks/__init__.py": "__all__ = sorted(['a'])\n"})
    assert any("blocks/__init__.py:1: " in p and "not a literal list" in p
               for p in api_violations(pkg))
    bound = _top_level_names(ast.parse(
        "if x:\n    a = 1\nelse:\n    from m import b\ntry:\n    import c.d\n"
        "except E as e:\n    f, (g, *h) = 1\nfor i in y:\n    pass\nwith o as w:\n    pass\n"
        "def k():\n    inner = 1\n"))
    assert bound == {"a", "b", "c", "e", "f", "g", "h", "i", "w", "k"}


def test_missing_name_check_fails(tmp_path):
    pkg = _package(tmp_path, {"drivers/bcd.py": (
        "def f():\n    from fenchel_idl.model.core import Gone\n"
        "    from fenchel_idl.nothere import x\n")})
    problems = missing_name_violations(pkg)
    assert any("drivers/bcd.py:2: " in p and "Gone" in p for p in problems), problems
    assert any("drivers/bcd.py:3: " in p and "does not exist" in p for p in problems), problems


def test_cycle_check_fails_and_shows_the_chain(tmp_path):
    pkg = _package(tmp_path / "1", {
        "model/a.py": "from fenchel_idl.model import b\n",
        "model/b.py": "x = 1\n\n\ndef f():\n    from fenchel_idl.model.a import y\n"})
    problems = import_cycles(pkg)
    assert len(problems) == 1, problems
    assert "model/a.py:1 (fenchel_idl.model.a -> fenchel_idl.model.b)" in problems[0]
    assert "model/b.py:5 (fenchel_idl.model.b -> fenchel_idl.model.a)" in problems[0]
    # through a package __init__: core imports its own package, which imports core
    pkg = _package(tmp_path / "2", {"model/core.py": "from fenchel_idl.model import Model\n"})
    problems = import_cycles(pkg)
    assert len(problems) == 1, problems
    assert "model/core.py:1 (fenchel_idl.model.core -> fenchel_idl.model)" in problems[0]
