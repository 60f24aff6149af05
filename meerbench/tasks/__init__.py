"""Tasks: one module per task type, each owning everything about its task.

A task type reads its protocol section (``tasks.<name>``, and ``metrics.<name>`` when it has
``settings``), draws its lists from the prepared dataset (:meth:`Task.plan`), scores the model
(:meth:`Task.run`), keeps its numbers in a typed :class:`Section` of the Result (with an explicit
``status``) and says how they read (:class:`Metric`: label, unit, scale, higher is better),
which the reports, plots and console summary use. The engine loops over a protocol's tasks.

Built-ins: :mod:`.verification`, :mod:`.verification_dense`, :mod:`.operational`,
:mod:`.identification`, :mod:`.restoration`. A new task type is
one module: subclass :class:`Task`, then ``register_task(MyTask())`` (see
``docs/add-a-protocol.md``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from meerbench.errors import ConfigError
from meerbench.protocol import Protocol, task_type, task_types
from meerbench.registry import TASKS
from meerbench.results import STATUSES
from meerbench.schema import Fields

if TYPE_CHECKING:
    import torch

    from meerbench.data.dataset import Dataset
    from meerbench.models.base import FaceModel

SCORING_CODE = ("tasks", "metrics")  #: sub-packages of meerbench whose source keys cached scores


@functools.cache
def code_digest(module_file: str | None = None) -> str:
    """sha256 of the scoring code's sources (and of ``module_file``, a plugin task's module): in
    the key of every cached score, so changed scoring code scores again."""
    root = Path(__file__).resolve().parents[1]  # the meerbench package
    files = sorted(p for sub in SCORING_CODE for p in (root / sub).rglob("*.py"))
    if module_file is not None and Path(module_file).resolve().parent.parent != root:
        files.append(Path(module_file))
    digest = hashlib.sha256(version("meerbench").encode())
    for path in files:
        digest.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Metric:
    """How a metric reads, scales and compares; ``tolerance`` is in raw (unscaled) units;
    ``order`` places it among its task's metrics in tables."""

    key: str
    task: str
    label: str
    unit: str
    higher_is_better: bool
    scale: float = 100.0
    digits: int = 2
    tolerance: float = 1e-3
    order: tuple[float, ...] = ()

    def show(self, value: float) -> str:
        return f"{self.scale * value:.{self.digits}f}"

    @property
    def value_unit(self) -> str:
        """The unit of a raw (unscaled) value: rates are fractions where the tables show %."""
        if self.scale == 1:
            return self.unit
        return "fraction" if (self.unit, self.scale) == ("%", 100) else \
            f"{self.unit} / {self.scale:g}"


@dataclass(frozen=True)
class Cell:
    """A value with its 95% interval and rule; ``note`` says why it is missing or coarse;
    ``n`` is the count it rests on (pairs, probes, images), None when unknown."""

    value: float | None
    ci95: tuple[float, float] | None = None
    rule: str | None = None
    reliable: bool = True
    note: str | None = None
    n: int | None = None

    def half_width(self) -> float | None:
        """Larger distance from the value to an end of its interval (the '±' of the tables)."""
        if self.value is None or self.ci95 is None:
            return None
        return max(self.value - self.ci95[0], self.ci95[1] - self.value)

    def text(self, metric: Metric) -> str:
        """The value as every output shows it: ``77.98 ± 1.81`` (:data:`PM_LEGEND`), with
        :data:`DAGGER` when it is not measured reliably; ``n/a`` without a value."""
        if self.value is None:
            return "n/a"
        half = self.half_width()
        pm = "" if half is None else f" ± {metric.scale * half:.{metric.digits}f}"
        return metric.show(self.value) + pm + ("" if self.reliable else DAGGER)


#: The one meaning of ``±`` in tables, plots, the leaderboard and the console.
PM_LEGEND = ("± 95% CI: the larger distance from the value to an end of its 95% bootstrap "
             "interval (identities resampled)")
#: Marks a rate whose operating point allows no error at all (target x negatives < 1).
DAGGER = "†"
DAGGER_LEGEND = f"{DAGGER} not measured: target x negatives < 1 allows no false accept or alarm"


def legend(cells: Iterable[Cell]) -> list[str]:
    """One console line explaining the marks that ``cells`` shown by :meth:`Cell.text` carry
    (``±``, ``†``); no line when they carry none."""
    cells = [c for c in cells if c.value is not None]
    parts = ([PM_LEGEND] if any(c.half_width() is not None for c in cells) else []) + (
        [DAGGER_LEGEND] if any(not c.reliable for c in cells) else [])
    return ["  " + "; ".join(parts)] if parts else []


def sci(value: float) -> str:
    """0.001 -> '1e-3', 0.1 -> '0.1': short FAR/FPIR labels."""
    if value >= 0.01:
        return f"{value:g}"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def interval(ci: Any) -> tuple[float, float] | None:
    """A Result's ``[low, high]`` (or null) as a Cell interval."""
    return None if ci is None else (float(ci[0]), float(ci[1]))


@dataclass(frozen=True)
class Section:
    """One entry of a Result's ``metrics``: ``status`` ``"ok"`` with its numbers (``values``, at
    the key paths Results have always used), or ``"skipped"`` with the ``reason``.

    Results written before ``status`` existed marked a skip with a ``skipped`` field holding the
    reason; :meth:`from_dict` reads both.
    """

    status: str = "ok"
    reason: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES or (self.status == "skipped") != bool(self.reason):
            raise ConfigError(f"A task section is 'ok', or 'skipped' with a reason; got status "
                              f"{self.status!r}, reason {self.reason!r}.")

    @classmethod
    def skipped(cls, reason: str, **values: Any) -> Section:
        return cls("skipped", reason, values)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        reason = {} if self.reason is None else {"reason": self.reason}
        return {**self.values, "status": self.status, **reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Section:
        legacy = data.get("skipped")
        status = data.get("status", "skipped" if legacy is not None else "ok")
        values = {k: v for k, v in data.items() if k not in ("status", "reason", "skipped")}
        return cls(status, data.get("reason", legacy), values)


@dataclass(frozen=True)
class Plan:
    """What a task drew from the dataset: the sample indices it needs embedded, the sha256 of
    its lists (into the cache key and the Result; None when it draws none) and the lists."""

    images: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sha256: str | None = None
    lists: Any = None


@dataclass(frozen=True)
class ListFile:
    """A task's lists as ``meerbench prepare`` writes them: ``<protocol>-v<N>-<suffix>.csv``
    with ``header`` and one line per row; ``summary`` is its console line."""

    suffix: str
    header: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    summary: str

    def text(self) -> str:
        return "\n".join(",".join(map(str, line)) for line in [self.header, *self.rows]) + "\n"


@dataclass
class Outcome:
    """What a task's run gives: its section, counts and side files (role -> file name)."""

    section: Any
    counts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    """What the engine hands a task's run: the model and data, the embeddings of every image
    the plans asked for, and the engine's own steps for tasks that run another model."""

    protocol: Protocol
    model: FaceModel
    dataset: Dataset
    embeddings: np.ndarray
    row: np.ndarray  #: sample index -> row of ``embeddings`` (-1: not embedded)
    out: Path | None  #: the Result's folder (None: nothing is written)
    stem: str  #: side files are ``<stem>.<suffix>``
    batch_size: int
    device_type: str  #: where ``embed_arrays`` runs ("cpu", "cuda"): its numbers depend on it
    embed_arrays: Callable[[FaceModel, torch.Tensor], np.ndarray]
    fit: Callable[[FaceModel], Any]
    _derived: dict[Hashable, Any] = field(default_factory=dict, repr=False)

    def derived(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()`` once per ``key`` in this evaluation: what several tasks compute alike
        (the scores of one pair list) is computed once."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def vectors(self, indices: np.ndarray) -> np.ndarray:
        """Embeddings of samples ``indices``."""
        return self.embeddings[self.row[indices]]

    def side_file(self, suffix: str) -> Path | None:
        return None if self.out is None else self.out / f"{self.stem}.{suffix}"


class Task:
    """A task type. Subclasses set ``name`` (the protocol section and the Result's
    ``metrics`` key) and implement :meth:`parse`, :meth:`run` and :meth:`cells`.

    ``settings``: a class with ``from_dict`` for the protocol's ``metrics.<name>`` section.
    ``per_condition``: tables put one metric of every condition side by side (verification);
    otherwise one table per protocol holds the task's metrics. ``headline``: the metric keys
    the tables show (prefixes end in '@'; empty: all, the CSV always holds all).
    ``dagger_legend``: what a † on this task's cells means. ``cached``: the outcome is a pure
    function of the embeddings, the dataset's labels, the protocol and the scoring code, so the
    engine keeps it in the store (:mod:`meerbench.engine.sections`); a task that runs other
    models or reads images leaves it False.
    """

    name: ClassVar[str]
    section: ClassVar[type] = Section
    settings: ClassVar[Any] = None
    per_condition: ClassVar[bool] = False
    headline: ClassVar[tuple[str, ...]] = ()
    dagger_legend: ClassVar[str] = DAGGER_LEGEND
    cached: ClassVar[bool] = False

    @property
    def title(self) -> str:
        return self.name.capitalize()

    def parse(self, fields: Fields) -> Any:
        """The task's config from its protocol section (unread fields are refused after)."""
        raise NotImplementedError

    def plan(self, config: Any, dataset: Dataset) -> Plan:
        """The lists of this task on ``dataset``; default: none, nothing to embed."""
        return Plan()

    def list_file(self, plan: Plan, keys: list[str]) -> ListFile | None:
        """The plan's lists as a file (``keys``: sample keys by index); default: none."""
        return None

    def run(self, config: Any, plan: Plan, ctx: Context) -> Outcome:
        raise NotImplementedError

    def read(self, metrics: dict[str, Any]) -> Any:
        """This task's section of a Result's ``metrics``, None when the Result has none."""
        entry = metrics.get(self.name)
        return None if entry is None else self.section.from_dict(entry)

    def write(self, section: Any, metrics: dict[str, Any]) -> None:
        metrics[self.name] = section.to_dict()

    def cells(self, section: Any) -> Iterator[tuple[str, Metric, Cell]]:
        """(condition, metric, cell) of every reportable number; the condition of a task
        without conditions is its name."""
        raise NotImplementedError

    def summary(self, section: Any) -> list[str]:
        """Console lines for one Result: the task's numbers as the tables show them."""
        if section.status != "ok":
            return [f"{self.name}  skipped: {section.reason}"]
        cells = [(m, c) for _, m, c in self.cells(section) if c.value is not None]
        shown = [f"{m.label}: {c.text(m)}{'' if m.unit in ('', '%') else ' '}{m.unit}"
                 for m, c in cells]
        return [f"{self.name}  " + ", ".join(shown), *legend(c for _, c in cells)]


def register_task(task: Task) -> Task:
    """Add a task type; its ``name`` becomes a protocol section. A taken name is refused.
    (A package can instead name it in the entry-point group ``meerbench.tasks``.)"""
    TASKS.add(task.name, task, ((task.__doc__ or "").strip().splitlines() or [""])[0],
              origin="register_task")
    return task


def sections(metrics: dict[str, Any]) -> Iterable[tuple[Task, Any]]:
    """(task type, typed section) of every task a Result's ``metrics`` holds, in report order."""
    for task in task_types():
        found = task.read(metrics)
        if found is not None:
            yield task, found


__all__ = ["DAGGER", "DAGGER_LEGEND", "PM_LEGEND", "Cell", "Context", "ListFile", "Metric",
           "Outcome", "Plan", "STATUSES", "Section", "Task", "interval", "legend",
           "register_task", "sci", "sections", "task_type", "task_types"]
