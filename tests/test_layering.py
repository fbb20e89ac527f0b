"""The house rules, read from the tree: data flows one way (successor_lens.LAYERS), no import
cycles, one home per concept (the paper's figures in paper.py, artefact names in filenames.py,
other libraries' exceptions caught only in errors.foreign_errors), files of one idea (named once,
under 400 lines). Every module found under successor_lens/ is checked; none is listed by hand."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import successor_lens
import successor_lens.paper

PACKAGE = Path(successor_lens.__file__).resolve().parent
MAX_LINES = 400


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer_of(name: str) -> str:
    """A module's layer: its subpackage, or "base" for the root modules and models/."""
    parts = name.split(".")
    if parts[1:] == ["__main__"]:
        return "cli"
    if len(parts) <= 2 or parts[1] == "models":
        return "base"
    return parts[1]


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports, at any depth (inside functions too), except under
    `if TYPE_CHECKING:` (annotations only, never run)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m.startswith("successor_lens")}


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(root)
    return {name: imports(path, set(mods)) - {name} for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    order = successor_lens.LAYERS
    return [f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})" for a, targets in sorted(edges.items()) for b in sorted(targets)
            if order.index(layer_of(b)) > order.index(layer_of(a))]


def literals(path: Path) -> list[ast.Constant]:
    """Every constant of a module except docstrings."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    # attribute docstrings (a string statement after a field) are documentation too
    docs |= {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs]


def paper_markers() -> tuple[set[float], set[str]]:
    """The paper's figures as paper.py writes them: its floats with two or more decimals (0.5 and
    0.9 are everyday numbers too), and the strings that only the paper's figures contain (the model,
    the head, every figure rendered as text, every count such as 94/102)."""
    consts = literals(PACKAGE / "paper.py")
    floats = {c.value for c in consts if isinstance(c.value, float) and len(repr(c.value).split(".")[1]) >= 2}
    texts = {successor_lens.paper.MODEL, successor_lens.paper.HEAD} | {repr(f) for f in floats}
    for c in consts:
        if isinstance(c.value, str):
            texts |= set(re.findall(r"\d+/\d+", c.value))
    return floats, texts


def paper_figures_outside(root: Path = PACKAGE) -> list[str]:
    floats, texts = paper_markers()
    problems = []
    for name, path in modules(root).items():
        if path.name == "paper.py":
            continue
        for c in literals(path):
            if isinstance(c.value, float) and c.value in floats:
                problems.append(f"{name}:{c.lineno} the paper's figure {c.value}")
            elif isinstance(c.value, str) and any(t in c.value for t in texts):
                problems.append(f"{name}:{c.lineno} the paper's figure in {c.value!r}")
    return problems


def artefact_names() -> set[str]:
    from successor_lens import filenames

    return {v for k, v in vars(filenames).items() if k.isupper() and isinstance(v, str) and "." in v.strip(".")}


def names_outside(root: Path = PACKAGE) -> list[str]:
    names = artefact_names()
    problems = []
    for name, path in modules(root).items():
        if path.name == "filenames.py":
            continue
        for c in literals(path):
            if isinstance(c.value, str) and any(c.value == n or c.value.endswith("/" + n) for n in names):
                problems.append(f"{name}:{c.lineno} spells out {c.value!r}: use successor_lens.filenames")
    return problems


def broad_excepts(root: Path = PACKAGE) -> list[str]:
    """`except Exception` / `except BaseException` / a bare `except:` anywhere but errors.foreign_errors."""
    problems = []
    for name, path in modules(root).items():
        tree = ast.parse(path.read_text())
        allowed = {id(h) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and name == "successor_lens.errors"
                   and f.name == "foreign_errors" for h in ast.walk(f) if isinstance(h, ast.ExceptHandler)}
        for h in ast.walk(tree):
            if isinstance(h, ast.ExceptHandler) and id(h) not in allowed:
                caught = [] if h.type is None else [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
                if not caught or any(isinstance(t, ast.Name) and t.id in ("Exception", "BaseException") for t in caught):
                    problems.append(f"{name}:{h.lineno} catches {ast.unparse(h.type) if h.type else 'everything'}")
    return problems


# --- the rules, on the package ------------------------------------------------------------------


def test_every_subpackage_has_a_layer():
    unknown = {layer_of(m) for m in modules()} - set(successor_lens.LAYERS)
    assert unknown == set(), f"declare these in successor_lens.LAYERS: {unknown}"


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_import_runs_back_up_the_layers():
    assert upward(graph()) == []


def test_the_papers_figures_live_only_in_paper_py():
    assert paper_figures_outside() == []


def test_artefact_names_live_only_in_filenames_py():
    assert names_outside() == []


def test_other_libraries_exceptions_are_caught_only_at_the_boundary():
    assert broad_excepts() == []


def test_no_two_modules_share_a_file_name():
    names = [p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_no_module_is_over_400_lines():
    assert {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES} == {}


# --- each checker catches what it is for ----------------------------------------------------------


@pytest.fixture
def fake(tmp_path):
    """A throwaway copy of the package layout: write modules into it, then run a checker on it."""
    root = tmp_path / "successor_lens"

    def write(rel: str, text: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in [path.parent, *path.parent.parents]:
            if parent == root.parent:
                break
            (parent / "__init__.py").touch()
        path.write_text(text)

    write.root = root
    return write


def test_the_checkers_see_each_violation(fake):
    fake("probes/a.py", "def f():\n    from successor_lens.artifacts.site import write_atlas\n")
    fake("artifacts/site.py", "from successor_lens.artifacts.report import md\n")
    fake("artifacts/report.py", "def g():\n    from successor_lens.artifacts import site\n")
    fake("features/b.py", "X = 0.585\nY = 'paper: Pythia-1.4B'\n")
    fake("sae_train/c.py", "def h(out):\n    return out / 'summary.json'\n")
    fake("sae_train/d.py", "try:\n    pass\nexcept Exception:\n    pass\n")
    fake("sae_train/e.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from successor_lens.cli.main import main\n")
    edges = graph(fake.root)
    assert "successor_lens.probes.a (probes) imports successor_lens.artifacts.site (artifacts)" in upward(edges)
    assert ["successor_lens.artifacts.report", "successor_lens.artifacts.site"] in cycles(edges)
    assert not any("sae_train.e" in u for u in upward(edges))  # annotations only: never run
    assert len(paper_figures_outside(fake.root)) == 2
    assert names_outside(fake.root) == ["successor_lens.sae_train.c:2 spells out 'summary.json': use successor_lens.filenames"]
    assert broad_excepts(fake.root) == ["successor_lens.sae_train.d:3 catches Exception"]
