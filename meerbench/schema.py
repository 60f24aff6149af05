"""A small validator for YAML-born dicts: errors name the file, the field and the expectation."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from meerbench.errors import ProtocolError

_MISSING = object()


class Fields:
    """Reads typed fields out of one mapping and rejects fields it was not asked about."""

    def __init__(self, data: Any, source: str, prefix: str = "") -> None:
        self.source = source
        self.prefix = prefix
        if not isinstance(data, Mapping):
            raise self.error("", f"a mapping, got {type(data).__name__}")
        self.data = dict(data)
        self.seen: set[str] = set()

    def where(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix and name else (self.prefix or name)

    def error(self, name: str, expected: str) -> ProtocolError:
        field = self.where(name) or "(top level)"
        return ProtocolError(f"{self.source}: field '{field}': expected {expected}.")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        """The value of ``name`` checked against ``kind``; required unless a default is given."""
        self.seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is _MISSING:
                raise self.error(name, f"a value of type {_kind_name(kind)} (the field is missing)")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(name, f"{_kind_name(kind)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.error(name, f"{_kind_name(kind)}, got {value!r}")
        return value

    def positive_int(self, name: str, default: Any = _MISSING) -> int:
        value = self.get(name, int, default)
        if value is not None and value <= 0:
            raise self.error(name, f"a positive integer, got {value}")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.get(name, str, default)
        if value not in allowed:
            raise self.error(name, f"one of {', '.join(allowed)}, got {value!r}")
        return value

    def sub(self, name: str, default: Any = _MISSING) -> Fields | None:
        """A nested mapping as its own ``Fields`` (``None`` when absent and optional)."""
        value = self.get(name, dict, default)
        return None if value is None else Fields(value, self.source, self.where(name))

    def finish(self) -> None:
        """Fail on any field that was not read: catches misspellings."""
        unknown = sorted(set(self.data) - self.seen)
        if not unknown:
            return
        name = unknown[0]
        close = difflib.get_close_matches(str(name), sorted(self.seen), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ProtocolError(
            f"{self.source}: unknown field '{self.where(str(name))}': {hint}"
            f"allowed fields here are: {', '.join(sorted(self.seen))}."
        )


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             dict: "a mapping", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
