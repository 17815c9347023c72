"""Dataclass configs to and from plain JSON-able dicts.

Unknown keys are refused (never silently skipped); nested dataclass fields (such as a
`FeatureSpec`) are rebuilt from their dicts; tuples survive the JSON round trip.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from synth.errors import ConfigError

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass instance as a JSON-able dict (nested dataclasses become dicts)."""
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"expected a dataclass config, got {type(config).__name__}")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build dataclass `cls` from `data`, refusing unknown keys and rebuilding nested dataclasses."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints.get(name)
        target = _dataclass_in(hint)
        if target is not None and isinstance(value, dict):
            value = config_from_dict(target, value)
        elif _is_tuple(hint) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"bad {cls.__name__}: {err}") from err


def _dataclass_in(hint: Any) -> type | None:
    if hint is None:
        return None
    if dataclasses.is_dataclass(hint):
        return hint  # type: ignore[return-value]
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg  # type: ignore[return-value]
    return None


def _is_tuple(hint: Any) -> bool:
    if hint is None:
        return False
    origin = typing.get_origin(hint)
    if origin is tuple:
        return True
    return any(typing.get_origin(a) is tuple for a in typing.get_args(hint))
