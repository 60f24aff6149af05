"""A small validator for YAML-born dicts: errors name the file, the field and the expectation."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from meerbench.errors import ProtocolError

_MISSING = object()
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}")


def is_plain_name(value: object) -> bool:
    """The one rule for a value that names a file or folder (protocol ids, dataset and model
    names, Result side files, cache kinds): one path component of letters, digits, '.', '_',
    '+' and '-', at most 128 characters, not starting with '.', no '..'."""
    return isinstance(value, str) and bool(_PLAIN_NAME.fullmatch(value)) and ".." not in value
#: Default cap of a count: generous for real data, far below what would exhaust a machine.
MAX_COUNT = 1_000_000
INT64_MAX = 2**63 - 1


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
        if isinstance(value, int) and abs(value) > INT64_MAX:
            raise self.error(name, f"an integer within 64 bits, got {value}")
        return value

    def positive_int(self, name: str, default: Any = _MISSING, maximum: int = MAX_COUNT) -> int:
        """A count from 1 to ``maximum``: absurd sizes fail here, not after hours of work."""
        value = self.get(name, int, default)
        if value is not None and not 0 < value <= maximum:
            raise self.error(name, f"a positive integer of at most {maximum:,}, got {value}")
        return value

    def seed(self, name: str, default: Any = _MISSING) -> int:
        """A random seed: a whole number >= 0 (what numpy's generators accept)."""
        value = self.get(name, int, default)
        if value is not None and value < 0:
            raise self.error(name, f"a seed >= 0, got {value}")
        return value

    def name(self, field: str, default: Any = _MISSING) -> str:
        """A value that names a file or folder: one path component, never a way out of it."""
        value = self.get(field, str, default)
        if not is_plain_name(value):
            raise self.error(field, "a plain name of letters, digits, '.', '_', '+' and '-' (at "
                                    "most 128, not starting with '.', no '..': it names a file or "
                                    f"folder), got {value!r}")
        return value

    def unique_list(self, name: str, allowed: tuple[str, ...], default: Any = _MISSING
                    ) -> tuple[str, ...]:
        """A non-empty list drawn from ``allowed`` with no repeats (a set written as a list)."""
        value = self.get(name, list, default)
        for item in value:
            if item not in allowed:
                raise self.error(name, f"a list drawn from {', '.join(allowed)}, got {item!r}")
        if not value:
            raise self.error(name, f"a non-empty list drawn from {', '.join(allowed)}")
        repeated = next((item for i, item in enumerate(value) if item in value[:i]), None)
        if repeated is not None:
            raise self.error(name, f"each value once, got {repeated!r} more than once")
        return tuple(value)

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
        unknown = sorted(set(self.data) - self.seen, key=str)
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
