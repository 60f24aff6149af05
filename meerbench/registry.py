"""One generic registry for models, protocols and dataset formats.

Built-ins register either eagerly with a decorator or lazily as a ``"module:attr"`` string, so
``import meerbench`` does not import torch. Third-party packages add entries through the
entry-point groups ``meerbench.models``, ``meerbench.protocols`` and ``meerbench.datasets``.
Unknown names fail with the known names and the closest match.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from meerbench.errors import UnknownNameError


@dataclass
class Entry:
    """One registered name: either a loaded object or a lazy ``module:attr`` target."""

    name: str
    description: str
    target: str | None = None
    obj: Any = None
    origin: str = "builtin"

    def load(self) -> Any:
        if self.obj is None:
            module_name, _, attr = (self.target or "").partition(":")
            module = importlib.import_module(module_name)
            self.obj = getattr(module, attr) if attr else module
        return self.obj


class Registry:
    """Name -> object mapping with lazy entries, entry-point discovery and did-you-mean errors."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, Entry] = {}
        self._entry_points_loaded = False

    def register(self, name: str, description: str = "") -> Callable[[Any], Any]:
        """Decorator: ``@MODELS.register("pixels", "grey pixels")`` on a factory."""

        def decorate(obj: Any) -> Any:
            text = description or ((obj.__doc__ or "").strip().splitlines() or [""])[0]
            self.add(name, obj, text)
            return obj

        return decorate

    def add(self, name: str, obj: Any, description: str = "", origin: str = "builtin") -> None:
        """Register an already loaded object."""
        self._entries[name] = Entry(name, description, obj=obj, origin=origin)

    def add_lazy(self, name: str, target: str, description: str, origin: str = "builtin") -> None:
        """Register ``target`` (``"package.module:attr"``) without importing it."""
        self._entries[name] = Entry(name, description, target=target, origin=origin)

    def _discover(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._entries:
                dist = ep.dist.name if ep.dist is not None else "?"
                self._entries[ep.name] = Entry(
                    ep.name, f"(plugin from {dist})", target=ep.value, origin=dist
                )

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._entries

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        self._discover()
        for name in sorted(self._entries):
            yield self._entries[name]

    def entry(self, name: str) -> Entry:
        self._discover()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def get(self, name: str) -> Any:
        return self.entry(name).load()

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return (
            f"Unknown {self.kind} '{name}'.{hint} "
            f"Known {self.kind}s: {', '.join(known) or 'none'}. "
            f"Run `meerbench list {self.kind}s` for descriptions."
        )


MODELS = Registry("model", "meerbench.models")
PROTOCOLS = Registry("protocol", "meerbench.protocols")
DATASETS = Registry("dataset", "meerbench.datasets")
