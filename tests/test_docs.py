"""The docs say what the code does: the README's config table and per-stage code closures
are equal to what the code declares, and the docs and comments cite only files that are
in the project."""

from __future__ import annotations

import json
import os
import re
import subprocess

from pipeline import config as cfg
from pipeline import fingerprint, runner
from tests.helpers import COMPONENTS

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Files the product writes (outputs, not sources) that the docs may name.
WRITTEN = {"quality.md", "anomalies.pbtxt", "projector_config.pbtxt"}
README = open(os.path.join(PROJECT, "README.md")).read()


def _table_rows(first_cell: str) -> dict[str, list[str]]:
    rows = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and re.fullmatch(first_cell, cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_readme_config_table_is_every_key_with_its_default():
    keys = cfg.schema(runner.param_classes(COMPONENTS.values()))
    rows = _table_rows(r"`[a-z_]+\.[a-z_0-9]+`")
    assert set(rows) == set(keys)
    for name, spec in keys.items():
        shown = rows[name][0].strip("`")
        default = spec.default
        expected = (json.dumps(list(default)) if isinstance(default, tuple)
                    else json.dumps(default) if isinstance(default, bool) else str(default))
        assert shown == expected, (name, shown, expected)


def test_readme_lists_each_stages_code_closure():
    rows = _table_rows("|".join(COMPONENTS))
    for name, component in COMPONENTS.items():
        listed = set(re.findall(r"`([\w.]+)`", rows[name][0]))
        assert listed == {m for m, _ in fingerprint.code_closure(component.executor_module)}, name


def test_docs_and_comments_cite_only_files_in_the_project():
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=PROJECT, capture_output=True, text=True, check=True).stdout.split()
    existing = set(tracked)
    basenames = {os.path.basename(f) for f in tracked}
    cited = re.compile(r"(?<![\w/.])((?:[\w.-]+/)*[\w.-]+\.(?:py|md|toml|pbtxt))\b")
    missing = []
    for f in tracked:
        if (not f.endswith((".py", ".md", ".toml")) or f.startswith("tests/")  # tests write files
                or not os.path.exists(os.path.join(PROJECT, f))):
            continue
        text = open(os.path.join(PROJECT, f)).read()
        for path in cited.findall(text):
            if (path.startswith("tfx/") or path in existing or path in basenames
                    or os.path.basename(path) in WRITTEN
                    or any(part.isupper() for part in re.split(r"[/.]", path))):  # FILE.toml
                continue
            if os.path.exists(os.path.join(PROJECT, os.path.dirname(f), path)):
                continue
            missing.append(f"{f}: {path}")
    assert not missing, "\n".join(missing)
