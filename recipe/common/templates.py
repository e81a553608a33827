"""Command templates of the runners (the experiment matrix, both study specs): a template is split with `shlex.split`
first, then each token is formatted on its own, so a value with spaces or shell characters is always exactly one
argument and no shell is ever used. A token that is exactly `{name}` of a list variable expands to its items; literal
braces are `{{` / `}}`; variables may use one another (resolved once each; cycles and unknown names are errors).
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping, Sequence
from typing import Any

_WHOLE_FIELD = re.compile(r"^\{(\w+)\}$")


class SpecError(ValueError):
    """A spec or command-line mistake (unknown variable or name, template cycle, ...): one line for the user."""


class Resolver(string.Formatter):
    """Formats templates against raw variables, resolving each variable once, recursively (cycle-checked)."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw, self.done, self.stack = dict(raw), {}, []

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        if not field_name.isidentifier():
            raise SpecError(f"template field {{{field_name}}}: only plain names are allowed (no index/attribute)")
        value = self.resolve(field_name)
        if isinstance(value, list):
            raise SpecError(f"list variable {{{field_name}}} can only stand alone as a whole command token")
        return value, field_name

    def resolve(self, name: str) -> Any:
        """The value of variable `name`, its own templates formatted."""
        if name in self.done:
            return self.done[name]
        if name not in self.raw:
            raise SpecError(f"unknown template variable {{{name}}}; known: {sorted(self.raw)}")
        if name in self.stack:
            raise SpecError(f"template variables form a cycle: {' -> '.join([*self.stack, name])}")
        self.stack.append(name)
        value = self.raw[name]
        if isinstance(value, str):
            value = self.vformat(value, (), {})
        elif isinstance(value, (list, tuple)):
            value = [self.vformat(str(v), (), {}) for v in value]
        self.stack.pop()
        self.done[name] = value
        return value

    def format_value(self, value: Any) -> Any:
        """A string formatted; a mapping or list formatted item by item; anything else unchanged."""
        if isinstance(value, str):
            return self.vformat(value, (), {})
        if isinstance(value, Mapping):
            return {k: self.format_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.format_value(v) for v in value]
        return value


def build_argv(template: str, variables: Mapping[str, Any]) -> list[str]:
    """The argv of a command template (split first, then each token formatted: no shell, no injection).

    Args:
        template: a command line, e.g. "bash run.sh data.train_files={train} {extra}".
        variables: raw variables (strings may use one another; a list variable expands where it is a whole token).
    """
    resolver = Resolver(variables)
    argv: list[str] = []
    for token in shlex.split(template):
        whole = _WHOLE_FIELD.match(token)
        if whole and isinstance(resolver.resolve(whole.group(1)), list):
            argv.extend(resolver.resolve(whole.group(1)))
        else:
            argv.append(resolver.vformat(token, (), {}))
    return argv
