"""Cache keys. A stage's fingerprint hashes its parameters (`Params.cache_key()`), its
input artifacts' fingerprints and what the code it runs does: the syntax, less
docstrings, comments and formatting (`normalized_syntax`), of the executor module and
every project module it imports at run time, transitively. Imports under
`if TYPE_CHECKING:` are not run, so they are not followed: an executor can name its
parameters class for type checkers without its spec module (and the config machinery
behind it) entering the key. Modules are keyed by dotted name and content, never by
path, so a checkout at another path gets the same keys.

For comparison, TFX's cache key (get_cache_context in TFX's
tfx/orchestration/portable/cache_utils.py) hashes the pipeline and node info, the
serialized executor spec (the executor's class name, not its code), the serialized
input artifacts (their MLMD records, URIs included), the output artifacts without their
URIs, the parameters, and the content of `module_file` when that parameter is set.
Executor source and the modules it imports are not hashed, and input URIs are, so an
edited executor still hits and a moved root misses.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import pathlib
from typing import Any

# Packages whose source is ours and therefore part of a stage's code fingerprint.
PROJECT_PACKAGES = ("pipeline", "components", "models")


def _module_file(name: str) -> pathlib.Path | None:
    """The source file of a project module, found by path: importing it to ask (find_spec
    on a submodule imports its parent) would load Keras or TensorFlow just to hash them."""
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top)  # a project package: its __init__ is light
    if spec is None or not spec.submodule_search_locations:
        return None
    base = pathlib.Path(next(iter(spec.submodule_search_locations)), *rest)
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None  # a name imported from a module, not a module


def _imports(name: str, path: pathlib.Path, tree: ast.AST | None = None) -> set[str]:
    tree = tree or ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            # `from pkg import submodule` imports a module too
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PROJECT_PACKAGES}


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (or `if typing.TYPE_CHECKING:`)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in (
                "TYPE_CHECKING",
                "typing.TYPE_CHECKING",
            ):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def normalized_syntax(path: pathlib.Path, tree: ast.AST | None = None) -> bytes:
    """What a module's code does: its syntax tree without docstrings, comments, line
    numbers or formatting, so that editing any of those re-runs nothing. `tree`: the
    module already parsed (it is changed)."""
    tree = tree or ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False).encode()


@functools.cache
def _module_digest(name: str) -> tuple[str, frozenset[str]] | None:
    """(sha256 of the module's normalized syntax, the project modules it imports), or None
    for a name that is no project module. Cached: the stages' closures share most modules,
    and each is parsed once per process."""
    path = _module_file(name)
    if path is None:
        return None
    tree = ast.parse(path.read_text(), filename=str(path))  # parsed once for both
    imports = frozenset(_imports(name, path, tree))
    return hashlib.sha256(normalized_syntax(path, tree)).hexdigest(), imports


@functools.cache
def code_closure(module: str) -> tuple[tuple[str, str], ...]:
    """(module, sha256 of its normalized syntax) for `module` and the project modules it
    imports."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        digested = _module_digest(name)
        if digested is None:
            continue
        seen[name], imports = digested
        todo.extend(imports)
        # a package's __init__ runs on import of any submodule
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return tuple(sorted(seen.items()))


def code_fingerprint(module: str) -> str:
    return digest({"code": code_closure(module)})


def digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def stage_fingerprint(
    stage: str,
    params: dict,
    input_fingerprints: dict[str, str | None],
    executor_module: str,
) -> str:
    """params: the stage's `cache_key()`; input_fingerprints: input key -> upstream
    fingerprint and output name (None: a resolved input that found nothing)."""
    return digest(
        {
            "stage": stage,
            "params": params,
            "inputs": input_fingerprints,
            "code": code_fingerprint(executor_module),
        }
    )
