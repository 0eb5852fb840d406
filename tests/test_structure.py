"""The package's shape: an import graph without cycles, no module reaching into another's _private names.

Every import counts, at module level or inside a function (a lazy import is still a dependency: it only
moves the failure to the call), relative or absolute. Importing a submodule runs the package's __init__
first, but that is not an edge: only names the __init__ itself defines (``from . import __version__``) are.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "fmlab"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__)."""
    out = {}
    for f in sorted((SRC / PKG).rglob("*.py")):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def scan(name: str, path: Path, mods: dict[str, Path], root: Path = SRC) -> tuple[set[str], list[str]]:
    """(the package modules this one imports, its uses of other modules' _private names as 'file:line: ...')."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    deps: set[str] = set()
    bad: list[str] = []
    bound: dict[str, str] = {}  # a local name -> the package module it is bound to
    where = str(path.relative_to(root))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            if mod != PKG and not mod.startswith(PKG + "."):
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in mods:  # `from . import store`: the submodule, not a name of the package
                    deps.add(sub)
                    bound[a.asname or a.name] = sub
                    continue
                deps.add(mod)
                if _private(a.name) and mod != name:
                    bad.append(f"{where}:{node.lineno}: from {mod} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == PKG or a.name.startswith(PKG + "."):
                    deps.add(a.name)
                    if a.asname:
                        bound[a.asname] = a.name
                    else:
                        bound.setdefault(PKG, PKG)

    for node in ast.walk(tree):  # `store._x` on a module bound above (also fmlab.store.db._x)
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, v = [], node.value
            while isinstance(v, ast.Attribute):
                chain.append(v.attr)
                v = v.value
            if isinstance(v, ast.Name) and v.id in bound:
                target = ".".join([bound[v.id], *reversed(chain)])
                if target in mods and target != name:
                    bad.append(f"{where}:{node.lineno}: {ast.unparse(node)} ({target}'s private name)")
    deps.discard(name)
    return {d for d in deps if d in mods}, bad


def graph() -> tuple[dict[str, set[str]], list[str]]:
    mods = modules()
    edges, bad = {}, []
    for name, path in mods.items():
        edges[name], b = scan(name, path, mods)
        bad += b
    return edges, bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one shortest cycle
    through its first module (a -> b -> a); the component may hold more (see component_text)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(_path(sorted(comp), edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def component(v: str, edges: dict[str, set[str]]) -> list[str]:
    """The modules on some cycle with v: those v reaches that also reach v."""

    def reach(a: str) -> set[str]:
        seen, todo = set(), [a]
        while todo:
            for w in edges[todo.pop()]:
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    return sorted(w for w in reach(v) if v in reach(w))


def _path(comp: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module: a -> b -> ... -> a."""
    start, inside = comp[0], set(comp)
    prev: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(edges[v] & inside):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w not in prev:
                prev[w] = v
                todo.append(w)
    return comp


def test_the_scanner_sees_lazy_relative_and_absolute_imports(tmp_path):
    src = tmp_path / "fmlab"
    src.mkdir()
    (src / "__init__.py").write_text("__version__ = '0'\n")
    (src / "a.py").write_text("from . import b\n\ndef f():\n    from .b import _hidden\n    return b._x\n")
    (src / "b.py").write_text("def g():\n    import fmlab.a as a\n    from fmlab import __version__\n")
    mods = {"fmlab": src / "__init__.py", "fmlab.a": src / "a.py", "fmlab.b": src / "b.py"}
    deps_a, bad_a = scan("fmlab.a", mods["fmlab.a"], mods, tmp_path)
    deps_b, bad_b = scan("fmlab.b", mods["fmlab.b"], mods, tmp_path)
    assert deps_a == {"fmlab.b"} and deps_b == {"fmlab.a", "fmlab"}
    assert len(bad_a) == 2 and "_hidden" in bad_a[0] and "b._x" in bad_a[1] and not bad_b
    assert cycles({"fmlab.a": deps_a, "fmlab.b": deps_b, "fmlab": set()}) == [["fmlab.a", "fmlab.b", "fmlab.a"]]


def test_the_import_graph_has_no_cycle():
    edges, _ = graph()
    assert len(edges) > 30  # the scan found the package
    found = cycles(edges)
    assert not found, "import cycles in src/fmlab (lazy imports count):\n" + "\n".join(
        f"{' -> '.join(c)}  (cycle of {{{', '.join(component(c[0], edges))}}})" for c in found
    )


def test_no_module_uses_another_modules_private_names():
    _, bad = graph()
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_no_test_file_imports_another():
    """Shared helpers live in conftest.py: a test file importing another runs that file's module code twice
    over (and ties the two together)."""
    tests = Path(__file__).resolve().parent
    names = {f.stem for f in tests.glob("test_*.py")}
    bad = []
    for f in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            bad += [f"{f.name}:{node.lineno}: imports {m}" for m in mods if m.split(".")[0] in names]
    assert not bad, "test files importing test files (move the helper to conftest.py):\n" + "\n".join(bad)


ARCH = SRC.parent / "ARCHITECTURE.md"


def floors_from(text: str) -> list[list[str]]:
    """ARCHITECTURE.md's floors table, top floor first: each row's backticked names in its second column."""
    rows = [ln.split("|") for ln in text[text.index("## Floors") :].splitlines() if ln.startswith("| ")]
    out = [re.findall(r"`([^`]+)`", r[2]) for r in rows if len(r) > 3 and r[1].strip()[:1].isdigit()]
    assert out, "ARCHITECTURE.md has no floors table under '## Floors'"
    return out


def unit_of(mod: str) -> str:
    """What a floor names: a sub-package (fmlab.sweep.loop -> sweep), a root module (fmlab.errors -> errors),
    or the package itself (fmlab)."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(edges: dict[str, set[str]], floors: list[list[str]]) -> list[str]:
    """Every import of a module on a higher floor than the importer's; a module with no floor is an error."""
    where = {u: i for i, names in enumerate(floors) for u in names}
    lost = sorted({unit_of(m) for m in edges} - set(where))
    assert not lost, f"packages or root modules with no floor in ARCHITECTURE.md: {lost}"
    return [
        f"{m} (floor {where[unit_of(m)] + 1}) imports {d} (floor {where[unit_of(d)] + 1})"
        for m in sorted(edges)
        for d in sorted(edges[m])
        if where[unit_of(d)] < where[unit_of(m)]
    ]


def test_every_import_goes_down_or_sideways():
    edges, _ = graph()
    up = upward_imports(edges, floors_from(ARCH.read_text()))
    assert not up, "imports from a higher floor (ARCHITECTURE.md's floors):\n" + "\n".join(up)


def test_the_floor_check_fails_on_an_upward_import(tmp_path):
    """The check above can fail: a fake package whose low floor imports its high one is caught."""
    src = tmp_path / "fmlab"
    (src / "high").mkdir(parents=True)
    (src / "low").mkdir()
    (src / "__init__.py").write_text("")
    (src / "high" / "__init__.py").write_text("")
    (src / "low" / "__init__.py").write_text("")
    (src / "high" / "a.py").write_text("from fmlab.low import b\n")
    (src / "low" / "b.py").write_text("def f():\n    from fmlab.high import a\n")
    mods = {"fmlab": src / "__init__.py", "fmlab.high.a": src / "high" / "a.py", "fmlab.low.b": src / "low" / "b.py"}
    edges = {m: scan(m, f, mods, tmp_path)[0] for m, f in mods.items()}
    table = "## Floors\n\n| floor | packages |\n|---|---|\n| 1 top | `fmlab`, `high` |\n| 2 bottom | `low` |\n"
    assert upward_imports(edges, floors_from(table)) == ["fmlab.low.b (floor 2) imports fmlab.high.a (floor 1)"]
    assert not upward_imports({m: set() for m in mods}, floors_from(table))


def tree_paths(text: str) -> set[str]:
    """The files ARCHITECTURE.md's tree lists under src/fmlab/, as paths relative to it (cli/common.py)."""
    block = text[text.index("src/fmlab/\n") :]
    block = block[: block.index("\n```")]
    paths, folder = set(), ""
    for ln in block.splitlines()[1:]:
        if not ln.startswith("  ") or ln.startswith(" " * 10) and not ln.strip().split()[0].endswith((".py", "/")):
            continue
        name, depth = ln.split()[0], (len(ln) - len(ln.lstrip())) // 2
        if depth == 1:
            folder = name if name.endswith("/") else ""
            if not folder:
                paths.add(name)
        elif depth == 2 and folder:
            paths.add(folder + name)
    return paths


def test_architecture_names_every_module_by_package():
    listed = tree_paths(ARCH.read_text())
    files = {str(f.relative_to(SRC / PKG)) for f in (SRC / PKG).rglob("*.py")}
    assert not files - listed, f"modules ARCHITECTURE.md's file tree does not list: {sorted(files - listed)}"
    assert not listed - files, f"ARCHITECTURE.md lists files that do not exist: {sorted(listed - files)}"


# dotted names that start with "fmlab." but are no module path: a file name, an ONNX metadata key (schema
# tags such as "fmlab.results/1" are not matched: a name followed by "/" is skipped)
NOT_PATHS = {"fmlab.db", "fmlab.trial_id"}


def named_paths() -> dict[str, str]:
    """Every dotted fmlab.* name written in src/, scripts/ and notebooks/ (code, strings, docs) -> where first."""
    root = SRC.parent
    files = [*SRC.rglob("*.py"), *(root / "scripts").glob("*"), *(root / "notebooks").glob("*.ipynb")]
    found: dict[str, str] = {}
    for f in files:
        for i, ln in enumerate(f.read_text().splitlines(), 1):
            for m in re.finditer(r"(?<![\w/.-])fmlab(?:\.[A-Za-z_]\w*)+(?![\w/])", ln):
                if m.group(0) not in NOT_PATHS:
                    found.setdefault(m.group(0), f"{f.relative_to(root)}:{i}")
    return found


def test_every_fmlab_path_named_in_code_scripts_and_notebooks_imports():
    """A module path in a string (python -m fmlab.x, a docstring, a shell script) breaks silently when a
    module moves: each one must import (its longest module prefix), and the rest resolve as attributes."""
    import importlib

    bad = []
    for name, where in sorted(named_paths().items()):
        parts = name.split(".")
        for k in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:k]))
                break
            except ModuleNotFoundError:
                continue
        try:
            for attr in parts[k:]:
                obj = getattr(obj, attr)
        except AttributeError:
            bad.append(f"{where}: {name}")
    assert len(named_paths()) > 30
    assert not bad, "fmlab paths that do not resolve:\n" + "\n".join(bad)


# How long a module or a function may be before a newcomer loses it: a function over MAX_FUNCTION lines
# says why in its docstring ("Long because: ..."), and at most MAX_LONG of them exist.
MAX_MODULE, MAX_FUNCTION, MAX_LONG = 300, 60, 3


def sizes(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(modules over MAX_MODULE lines, (function, its docstring) for functions over MAX_FUNCTION lines)."""
    big, long = [], []
    for f in sorted(root.rglob("*.py")):
        text = f.read_text()
        if len(text.splitlines()) > MAX_MODULE:
            big.append(f"{f.relative_to(root)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION:
                    where = (
                        f"{f.relative_to(root)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
                    )
                    long.append((where, ast.get_docstring(node) or ""))
    return big, long


def test_modules_and_functions_are_short():
    big, long = sizes(SRC / PKG)
    assert not big, f"modules over {MAX_MODULE} lines (split them by job):\n" + "\n".join(big)
    unexplained = [w for w, doc in long if "Long because:" not in doc]
    assert not unexplained, (
        f"functions over {MAX_FUNCTION} lines with no 'Long because:' in the docstring:\n" + "\n".join(unexplained)
    )
    assert len(long) <= MAX_LONG, f"more than {MAX_LONG} functions over {MAX_FUNCTION} lines:\n" + "\n".join(
        w for w, _ in long
    )


def test_the_size_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(70))
    (tmp_path / "m.py").write_text(f"def f():\n{body}\n\n\ndef g():\n    '''Long because: a table.'''\n{body}\n")
    big, long = sizes(tmp_path)
    assert not big and [w.split()[1] for w, _ in long] == ["f", "g"] and "Long because" in long[1][1]
