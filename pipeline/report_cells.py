"""What a cell of the HTML report holds (a link, a status, a yes/no, ...: the templates'
`cell` macro draws each kind), how the report writes numbers, and the Jinja2
environment of pipeline/templates/ (autoescaped: content never becomes markup).
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

_STATUS_CLASS = {
    "succeeded": "ok",
    "ran": "ok",
    "cached": "ok",
    "failed": "bad",
    "interrupted": "bad",
    "abandoned": "bad",
}


@dataclass(frozen=True)
class Link:
    href: str | None  # None: just the text (the target is missing or outside the root)
    text: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Status:
    status: str | None

    @property
    def css(self) -> str:
        return _STATUS_CLASS.get(self.status or "", "warn")


@dataclass(frozen=True)
class YesNo:
    value: bool | None  # None: nothing was decided
    text: str = ""  # instead of yes / no


@dataclass(frozen=True)
class Bar:
    px: str  # its width


@dataclass(frozen=True)
class Joined:
    parts: tuple  # cells side by side


@dataclass(frozen=True)
class Items:
    lines: tuple[str, ...]  # a bulleted list, or `empty` without lines
    empty: Any


@dataclass(frozen=True)
class Pairs:
    pairs: tuple[tuple[str, Any], ...]  # "name value, name value"


def fmt(value: Any, spec: str = ".4g") -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, float):
        return format(value, spec)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


class _MetricFormat(string.Formatter):
    """str.format over a stage's metrics: a missing one is "-", numbers as `fmt`."""

    def get_value(self, key, args, kwargs):
        return kwargs.get(key)

    def format_field(self, value, format_spec):
        return fmt(value, format_spec or ".4g")


_FORMAT = _MetricFormat()


def metric_format(spec: str, metrics: Mapping[str, Any]) -> str:
    return _FORMAT.format(spec, **metrics)


def first_field(spec: str) -> str | None:
    """The first metric a format string names."""
    return next((name for _, name, _, _ in _FORMAT.parse(spec) if name), None)


def environment() -> jinja2.Environment:
    """pipeline/templates/, autoescaped; `c is link` (and so on) tests a cell's kind."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    for kind in (Link, Code, Status, YesNo, Bar, Joined, Items, Pairs):
        env.tests[kind.__name__.lower()] = lambda v, kind=kind: isinstance(v, kind)
    return env
