"""Error types that the CLI turns into one clear paragraph and exit status 2."""

from __future__ import annotations


class MeerbenchError(Exception):
    """Base class for user-facing errors: bad names, bad files, missing data."""


class UnknownNameError(MeerbenchError, KeyError):
    """A registry lookup failed; the message lists the known names and the closest match."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(MeerbenchError, ValueError):
    """A configuration or specification value is invalid (a ValueError too, for library callers);
    the message names the field and the value."""


class ProtocolError(MeerbenchError):
    """A protocol file is invalid: the message names the file, the field and what was expected."""


class DatasetError(MeerbenchError):
    """Data is missing or malformed: the message names the path (and line) at fault."""


class ModelError(MeerbenchError):
    """A model cannot be built or loaded: bad card, missing weights, contract mismatch."""


class TrainingError(MeerbenchError):
    """Training cannot go on (a loss became NaN or infinite): names the step, stage and terms."""
