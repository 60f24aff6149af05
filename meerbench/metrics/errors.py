"""Errors raised by the metrics, and the checks shared by the metric settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meerbench.errors import DatasetError, MeerbenchError


class MetricInputError(MeerbenchError, ValueError):
    """Scores, labels, embeddings or settings that a metric cannot be computed from."""


class ScoreFileError(DatasetError, ValueError):
    """A score file is malformed: the message names the file, the line and what was expected."""


def reject_unknown_keys(section: str, data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Fail on a key outside ``allowed``, naming it and the allowed keys (typos never pass)."""
    allowed = sorted(allowed)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise MetricInputError(
            f"unknown {section} setting {unknown[0]!r}; allowed settings: {', '.join(allowed)}"
        )


def check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """Fail unless ``value`` is one of ``choices``, listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise MetricInputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def check_rounds(rounds: Any) -> None:
    """Bootstrap rounds: a whole number >= 0 (0 disables the bootstrap)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise MetricInputError(
            f"bootstrap must be a whole number >= 0 (0 disables it), got {rounds!r}"
        )
