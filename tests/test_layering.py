"""Data flows one way: model -> activations -> SAE -> features -> probes -> artifacts."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "successor_lens"
STAGES = ["sae_train", "features", "probes", "artifacts"]
SHARED = ["models", "tasks", "sites", "io", "confighelp", "corpus", "nulls", "planted"]


def imported_parts(path: Path) -> set[str]:
    """The successor_lens subpackage or module each import of `path` reaches (module level or not)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name.startswith("successor_lens."):
                parts.add(name.split(".")[1])
    return parts


def test_no_stage_imports_a_later_stage_and_shared_modules_import_no_stage():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        owner = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        reached = imported_parts(path)
        if owner in STAGES:
            later = STAGES[STAGES.index(owner) + 1 :]
            problems += [f"{rel} imports {p}" for p in reached & set(later)]
        elif owner in SHARED:
            problems += [f"{rel} imports {p}" for p in reached & set(STAGES)]
    assert problems == []


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from successor_lens.artifacts.site import write_atlas\n")
    assert imported_parts(bad) == {"artifacts"}
