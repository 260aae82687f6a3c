"""Cache keys. A stage's fingerprint hashes its parameters, its input artifacts'
fingerprints and the source of the code it runs: the executor module and every
project module it imports, transitively (TFX hashes only the module file and
misses edits in imported helpers).
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
# Orchestration modules that do not change what a stage computes.
NOT_HASHED = ("pipeline.runner", "pipeline.cli", "pipeline.metadata", "pipeline.summary",
              "pipeline.fingerprint")


def _module_file(name: str) -> pathlib.Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return pathlib.Path(spec.origin)


def _imports(name: str, path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
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


@functools.lru_cache(maxsize=None)
def code_closure(module: str) -> tuple[tuple[str, str], ...]:
    """(module, sha256 of source) for `module` and the project modules it imports."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_HASHED:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        todo.extend(_imports(name, path))
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


def stage_fingerprint(stage: str, params: dict, input_fingerprints: dict[str, str],
                      executor_module: str) -> str:
    return digest({
        "stage": stage,
        "params": params,
        "inputs": input_fingerprints,
        "code": code_fingerprint(executor_module),
    })


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    from tensorflow.io import gfile

    h = hashlib.sha256()
    with gfile.GFile(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
