"""Typed, validated settings: the base of every stage's options (``quant.stages``).

A subclass is a dataclass whose fields are the settings; :meth:`Options.from_dict` rejects
unknown keys and wrong types with one line naming the key (``sensitivity.batch_sise``), and
:meth:`Options.to_dict` gives back plain JSON values. Supported field types: ``bool``, ``int``,
``float``, ``str``, ``tuple[T, ...]``, ``dict[str, T]`` and ``X | None``. To add a setting, add a
field with a default; subclasses check values (ranges, choices) in ``check``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from .errors import MixDQError


def _type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str) -> Any:
    """``value`` as type ``tp``, or a one-line error naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # X | None: X's own message
            return _coerce(value, options[0], key)
        for arg in options:
            try:
                return _coerce(value, arg, key)
            except MixDQError:
                pass
        raise MixDQError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value stands for a one-element list
        if not isinstance(value, (list, tuple)):
            raise MixDQError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise MixDQError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise MixDQError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MixDQError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MixDQError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise MixDQError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported option type {tp!r} for {key}")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class Options:
    """Base class of typed settings. Subclasses set ``SECTION`` (the name in errors)."""

    SECTION: typing.ClassVar[str] = "options"

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = _coerce(getattr(self, field.name), hints[field.name],
                            f"{self.SECTION}.{field.name}")
            object.__setattr__(self, field.name, value)
        self.check()

    def check(self) -> None:
        """Value checks beyond types (ranges, choices, exclusions); raise :class:`MixDQError`."""

    def fail(self, key: str, message: str) -> MixDQError:
        return MixDQError(f"{self.SECTION}.{key}: {message}")

    def choice(self, key: str, choices: tuple) -> None:
        if getattr(self, key) not in choices:
            raise self.fail(key, f"expected one of {', '.join(map(str, choices))}, "
                                 f"got {getattr(self, key)!r}")

    def positive(self, *keys: str) -> None:
        for key in keys:
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise self.fail(key, f"must be positive, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict | None, section: str | None = None):
        """Build from a mapping; unknown keys and wrong types fail naming the key."""
        section = section or cls.SECTION
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise MixDQError(f"{section}: expected a mapping, got {data!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise MixDQError(f"{section}.{key}: unknown setting; known: {', '.join(names)}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING and f.name not in data]
        if required:
            raise MixDQError(f"{section}.{required[0]}: required")
        sub = type(cls.__name__, (cls,), {"SECTION": section})  # errors name this section
        made = sub(**data)
        return cls(**{f.name: getattr(made, f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists), every field included."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def check_generation(options: Options) -> None:
    """The ``guidance`` and ``resolution`` of a stage's options, checked as image generation
    checks them (a finite guidance >= 0, so that it is stored as standard JSON; a bounded
    resolution), with the key named."""
    from .generate import check_generation_args

    for key in ("guidance", "resolution"):
        try:
            check_generation_args(**{key: getattr(options, key)})
        except MixDQError as e:
            raise options.fail(key, str(e)) from None
