"""Read dataclass field docs, field types and module constants from the source, so CLI help and code
share one text, and the CLI can build its help without importing the modules (torch, sae-lens):
`successor-lens --help` and argument errors stay instant."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import textwrap
from functools import cache


@cache
def _module_tree(module: str) -> ast.Module:
    """The parsed source of `module`, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LookupError(f"no module {module}")
    with open(spec.origin, encoding="utf-8") as f:
        return ast.parse(f.read())


def _class_body(where) -> list[ast.stmt]:
    """`where`: a class, or "package.module:Class" (read from the source, not imported)."""
    if isinstance(where, str):
        module, name = where.split(":")
        for node in _module_tree(module).body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return node.body
        raise LookupError(f"no class {name} in {module}")
    node = ast.parse(textwrap.dedent(inspect.getsource(where))).body[0]
    if not isinstance(node, ast.ClassDef):
        raise LookupError(f"{where} is not a class")
    return node.body


@cache
def field_docs(where) -> dict[str, str]:
    """Field name -> the string literal that follows its annotation in the class body."""
    try:
        body = _class_body(where)
    except (OSError, TypeError):
        return {}
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def constant(where: str):
    """The literal value of a module-level constant, "package.module:NAME", read from the source."""
    module, name = where.split(":")
    for node in _module_tree(module).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return ast.literal_eval(node.value)
    raise LookupError(f"no constant {name} in {module}")
