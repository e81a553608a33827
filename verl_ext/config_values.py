"""Config values mean what they say: the bool and number fields of a config dataclass, checked from its annotations.

A Hydra override `domain.constraint.enable=no` (also `off`, `'false'`) arrives as the *string* "no", and a non-empty
string is true: without a check the term is switched ON by a setting that says off. Hydra parses `true`/`false`
(any case) as booleans, and YAML files loaded by OmegaConf also `yes`/`no`/`on`/`off`; anything that is still a string
when the dataclass is built is refused here, with a one-line error naming the key.

Rules, by the field's annotation (`bool`, `int`, `float`, or one of them `| None`):

* `bool`: a real boolean only (never 0/1, never a string);
* `int`: an integer, not a boolean (`2.0` and `"2"` are refused);
* `float`: an integer or a float, not a boolean, finite (a string such as `"1e-3"` is refused: Hydra already parses
  `1e-3` as a number);
* `X | None`: None, or the rule of X.

Fields with any other annotation (strings, tuples, mappings, nested configs) are left to the dataclass's own checks.

Usage, one line in each config dataclass::

    def __post_init__(self) -> None:
        check_field_values(self, "domain.constraint", DomainConfigError)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

CHECKED_TYPES = (bool, int, float)


class ConfigValueError(ValueError):
    """A config value has the wrong type (e.g. the string "no" for a boolean); the message names the key."""


def parse_bool(key: str, value: Any, error: type[Exception] = ConfigValueError) -> bool:
    """`value` if it is a real boolean; else `error` naming `key` (strings like "no", "off", "false" included)."""
    if isinstance(value, bool):
        return value
    raise error(f"{key}={value!r} must be true or false (a boolean, unquoted); got {type(value).__name__}")


def parse_int(key: str, value: Any, error: type[Exception] = ConfigValueError) -> int:
    """`value` if it is an integer and not a boolean; else `error` naming `key`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise error(f"{key}={value!r} must be an integer; got {type(value).__name__}")


def parse_float(key: str, value: Any, error: type[Exception] = ConfigValueError) -> float:
    """`value` if it is a finite int or float and not a boolean; else `error` naming `key`."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    raise error(f"{key}={value!r} must be a finite number; got {type(value).__name__}")


PARSERS = {bool: parse_bool, int: parse_int, float: parse_float}


@functools.cache
def checked_fields(cls: type) -> tuple[tuple[str, type, bool], ...]:
    """(name, base type, None allowed) of each field of dataclass `cls` annotated bool/int/float (or `| None`)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        optional = False
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = len(args) < len(typing.get_args(hint))
            hint = args[0] if len(args) == 1 else None
        if hint in CHECKED_TYPES:
            out.append((f.name, hint, optional))
    return tuple(out)


def check_field_values(
    obj: Any, prefix: str, error: type[Exception] = ConfigValueError, names: tuple[str, ...] | None = None
) -> None:
    """Check every bool/int/float field of the dataclass instance `obj` (see the module docstring).

    Args:
        obj: a dataclass instance (called from its `__post_init__`).
        prefix: the config path of its section, e.g. "domain.constraint"; errors name `<prefix>.<field>`.
        error: the exception class to raise (the section's own config error, a ValueError).
        names: only these fields (a subclass of another project's config checks its own fields); None: all.
    """
    for name, kind, optional in checked_fields(type(obj)):
        if names is not None and name not in names:
            continue
        value = getattr(obj, name)
        if value is None and optional:
            continue
        PARSERS[kind](f"{prefix}.{name}" if prefix else name, value, error)
