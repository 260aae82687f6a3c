"""Run configuration: TOML presets (`configs/`), `--set` overrides, and the typed
parameters every component builds from them.

There is no central table of defaults. Each config key (`train.epochs`) is declared, with
its default, by exactly one parameters class: a frozen dataclass field made with `key()`.
Another component that needs the same fact declares the field without a default and gets
the owner's value. The set of known keys, their types and defaults is therefore derived
from the pipeline's components (`schema`), and `load` rejects unknown keys and wrong
types naming the key. Range and cross-key checks live in each class's `check()`, run by
`Params.from_config`, the one way parameters are made (the runner, tests and benchmarks
all use it).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import tomllib
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pipeline.errors import ConfigError

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
PRESET_DIR = PROJECT_ROOT / "configs"
_KEY = re.compile(r"[a-z_]+\.[a-z_0-9]+")
# TOML integers are 64-bit; tomllib returns larger ones as they are (TF would fail mid-run).
_INT64 = (-(2**63), 2**63 - 1)


def key(name: str, default: Any = dataclasses.MISSING, doc: str = "") -> Any:
    """A parameters field bound to config key `name` ("section.key"). Give `default` in
    the one class that owns the key; other readers leave it out."""
    assert _KEY.fullmatch(name), name
    return dataclasses.field(default=default, metadata={"key": name, "doc": doc})


@dataclass(frozen=True)
class KeySpec:
    name: str
    type: Any  # int, float, bool, str, tuple[str, ...] or tuple[int, ...]
    default: Any
    doc: str
    owner: str  # the parameters class that declares the default


@dataclass(frozen=True)
class Config:
    """Every known key with its value (defaults filled in) and where the values came from."""

    values: dict[str, Any]
    preset: str | None = None
    changed: tuple[str, ...] = ()  # keys set by the preset or --set

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested {section: {key: value}}, as a TOML file would hold it."""
        out: dict[str, dict[str, Any]] = {}
        for name, value in self.values.items():
            section, _, k = name.partition(".")
            out.setdefault(section, {})[k] = list(value) if isinstance(value, tuple) else value
        return out

    def differences(self) -> dict[str, Any]:
        """The keys whose value is not the default, for summaries and `show`."""
        return {k: self.to_dict()[k.partition(".")[0]][k.partition(".")[2]] for k in self.changed}


class Params:
    """Base of every component's parameters (a frozen, kw_only dataclass of `key()` fields)."""

    if typing.TYPE_CHECKING:  # every subclass is a dataclass: what `dataclasses` expects
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def from_config(cls, config: Config) -> Self:
        values = {
            f.name: config[f.metadata["key"]]
            for f in dataclasses.fields(cls)
            if "key" in f.metadata
        }
        params = cls(**values)
        params.check()
        return params

    def check(self) -> None:
        """Range and cross-key checks; raise ConfigError naming the key."""

    def cache_key(self) -> dict[str, Any]:
        """What of these parameters decides the stage's output (hashed into its fingerprint)."""
        return dataclasses.asdict(self)


def require(ok: bool, name: str, expected: str, value: Any) -> None:
    """The one shape of a config check's failure: key, what was expected, what was given."""
    if not ok:
        raise ConfigError(f"{name}: expected {expected}, got {value!r}")


def schema(param_classes: Iterable[type[Params]]) -> dict[str, KeySpec]:
    """Every key the given parameters classes read, with its type and its one default."""
    specs: dict[str, KeySpec] = {}
    readers: dict[str, list[tuple[str, Any]]] = {}
    for cls in param_classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "key" not in f.metadata:
                continue
            name = f.metadata["key"]
            readers.setdefault(name, []).append((cls.__qualname__, hints[f.name]))
            if f.default is dataclasses.MISSING:
                continue
            if name in specs:
                raise AssertionError(
                    f"config key {name} has two defaults: "
                    f"{specs[name].owner} and {cls.__qualname__}"
                )
            specs[name] = KeySpec(
                name, hints[f.name], f.default, f.metadata["doc"], cls.__qualname__
            )
    for name, uses in readers.items():
        if name not in specs:
            raise AssertionError(
                f"config key {name} is read by {uses[0][0]} but no "
                "parameters class declares its default"
            )
        for owner, type_ in uses:
            if type_ != specs[name].type:
                raise AssertionError(
                    f"config key {name}: {owner} reads it as {type_}, "
                    f"{specs[name].owner} declares {specs[name].type}"
                )
    return dict(sorted(specs.items()))


def resolve_preset(name_or_path: str) -> pathlib.Path:
    """A preset name (`conv_pool`) or a path to a TOML file."""
    path = pathlib.Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"--config: file not found: {path}")
        return path
    preset = PRESET_DIR / f"{name_or_path}.toml"
    if not preset.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
        raise ConfigError(f"--config: no preset named {name_or_path!r} (known: {known})")
    return preset


def load(
    param_classes: Iterable[type[Params]], preset: str | None = None, overrides: Iterable[str] = ()
) -> Config:
    """The config for these parameters classes: defaults < preset file < --set overrides.
    Unknown keys and wrong types raise ConfigError naming the key."""
    keys = schema(param_classes)
    given: dict[str, Any] = {}
    if preset:
        path = resolve_preset(preset)
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        for section, table in raw.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [{section}] must be a table of keys")
            for k, value in table.items():
                given[f"{section}.{k}"] = value
    for item in overrides:
        name, value = _parse_override(item)
        given[name] = value
    values = {name: spec.default for name, spec in keys.items()}
    for name, value in given.items():
        if name not in keys:
            raise ConfigError(_unknown(name, keys))
        values[name] = _coerce(name, value, keys[name].type)
    changed = tuple(n for n in keys if n in given and values[n] != keys[n].default)
    return Config(values, preset, changed)


def from_record(
    param_classes: Iterable[type[Params]], table: dict[str, dict[str, Any]], preset: str | None
) -> Config:
    """The config a run recorded (`Config.to_dict`), checked again against these classes:
    what a stage process that joins the run is configured by, whatever the preset files
    say now."""
    keys = schema(param_classes)
    given = {f"{s}.{k}": v for s, t in table.items() for k, v in t.items()}
    for name in given:
        if name not in keys:
            raise ConfigError(f"the run's recorded config: {_unknown(name, keys)}")
    values = {n: _coerce(n, given.get(n, spec.default), spec.type) for n, spec in keys.items()}
    changed = tuple(n for n in keys if values[n] != keys[n].default)
    return Config(values, preset, changed)


def _unknown(name: str, keys: dict[str, KeySpec]) -> str:
    section = name.partition(".")[0]
    same = [k for k in keys if k.startswith(section + ".")]
    if not same:
        sections = sorted({k.partition(".")[0] for k in keys})
        return f"unknown config section [{section}] in {name} (known: {', '.join(sections)})"
    return f"unknown config key {name} (known in [{section}]: {', '.join(same)})"


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
    name, text = item.split("=", 1)
    name = name.strip()
    if not _KEY.fullmatch(name):
        raise ConfigError(f"--set {item!r}: the key must look like section.name")
    try:  # TOML value syntax first (numbers, booleans, arrays, quoted strings) ...
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # ... else a bare string such as idx:/data/mnist
    return name, value


def _coerce(name: str, value: Any, type_: Any) -> Any:
    if type_ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type_ is bool and not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if type_ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if type_ is int and not _INT64[0] <= value <= _INT64[1]:
        raise ConfigError(f"{name}: expected a 64-bit integer (-2**63..2**63-1), got {value!r}")
    if typing.get_origin(type_) is tuple:
        item = typing.get_args(type_)[0]
        if isinstance(value, str) and item is str:
            value = value.split()
        elif isinstance(value, item) and not isinstance(value, bool):
            value = [value]  # --set data.holdout_labels=9
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, item) and not isinstance(v, bool) for v in value
        ):
            example = "[9]" if item is int else '["a", "b"]'
            raise ConfigError(
                f"{name}: expected a list of {item.__name__}s such as {example}, got {value!r}"
            )
        return tuple(value)
    if type_ in (int, float, str) and not isinstance(value, type_):
        raise ConfigError(f"{name}: expected {type_.__name__}, got {value!r}")
    return value
