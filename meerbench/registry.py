"""One generic registry for models, protocols, dataset formats and task types.

Each registry loads its built-ins on first use (``builtins``: the module that registers them, or
a ``"module:function"`` called with the registry), so ``MODELS.names()`` is complete without
importing anything first, and ``import meerbench`` imports neither torch nor the built-ins.
Built-ins register an object or a lazy ``"module:attr"`` string. Third-party packages add entries
through the entry-point groups ``meerbench.models``, ``meerbench.protocols``,
``meerbench.datasets`` and ``meerbench.tasks``. A name is registered once: a second registration
is an error naming both sources, and a plugin whose name a built-in already has is ignored with a
warning. Unknown names fail with the known names and the closest match.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from meerbench.errors import ConfigError, UnknownNameError


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
            self.obj = _import(self.target or "")
        return self.obj

    def source(self) -> str:
        """Where the entry comes from, for messages: its origin and what it names."""
        return f"{self.origin} ({self.target or type(self.obj).__name__})"


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


class Registry:
    """Name -> object mapping with lazy built-ins and entries, entry-point discovery and
    did-you-mean errors."""

    def __init__(self, kind: str, group: str, builtins: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self.builtins = builtins
        self._table: dict[str, Entry] = {}
        self._builtins_loaded = builtins is None
        self._entry_points_loaded = False

    @property
    def _entries(self) -> dict[str, Entry]:
        """The entries, built-ins included (loaded on first use)."""
        if not self._builtins_loaded:
            self._builtins_loaded = True  # before loading: the loader registers through here
            loader = _import(self.builtins or "")
            if callable(loader):
                loader(self)
        return self._table

    @_entries.setter
    def _entries(self, table: dict[str, Entry]) -> None:
        self._table = table

    def register(self, name: str, description: str = "") -> Callable[[Any], Any]:
        """Decorator: ``@MODELS.register("pixels", "grey pixels")`` on a factory."""

        def decorate(obj: Any) -> Any:
            text = description or ((obj.__doc__ or "").strip().splitlines() or [""])[0]
            self.add(name, obj, text)
            return obj

        return decorate

    def add(self, name: str, obj: Any, description: str = "", origin: str = "builtin") -> None:
        """Register an already loaded object."""
        self._put(Entry(name, description, obj=obj, origin=origin))

    def add_lazy(self, name: str, target: str, description: str, origin: str = "builtin") -> None:
        """Register ``target`` (``"package.module:attr"``) without importing it."""
        self._put(Entry(name, description, target=target, origin=origin))

    def _put(self, entry: Entry) -> None:
        known = self._entries.get(entry.name)
        if known is not None:
            raise ConfigError(f"{self.kind} '{entry.name}' is registered twice: by "
                              f"{known.source()} and by {entry.source()}; rename one of them.")
        self._entries[entry.name] = entry

    def _discover(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            dist = ep.dist.name if ep.dist is not None else "?"
            plugin = Entry(ep.name, f"(plugin from {dist})", target=ep.value, origin=dist)
            known = self._entries.get(ep.name)
            if known is not None:
                warnings.warn(f"The {self.kind} '{ep.name}' of plugin {plugin.source()} is "
                              f"ignored: {known.source()} has that name.", UserWarning,
                              stacklevel=3)
                continue
            self._entries[ep.name] = plugin

    def remove(self, name: str) -> None:
        """Forget ``name`` (a test or notebook that registered something for a while)."""
        self.entry(name)
        del self._entries[name]

    def loaded(self) -> list[Any]:
        """Every registered object, in registration order: built-ins first, as they register."""
        self._discover()
        return [entry.load() for entry in list(self._entries.values())]

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


MODELS = Registry("model", "meerbench.models", "meerbench.models.cards:register_builtins")
PROTOCOLS = Registry("protocol", "meerbench.protocols", "meerbench.protocol")
DATASETS = Registry("dataset", "meerbench.datasets", "meerbench.data.formats")
TASKS = Registry("task type", "meerbench.tasks", "meerbench.protocol:register_builtin_tasks")
