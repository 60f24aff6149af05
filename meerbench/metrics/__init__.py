"""Metrics over arrays: verification (1:1), identification (1:N), statistics and score files.

Metrics know nothing about models or files (except :mod:`.scorefiles`, which parses them). Each
metric whose definition differs between tools takes an explicit rule and records it; see
``shared/design/METRICS.md`` for the definitions and their references. Identification imports
torch lazily, so importing this package stays light; restoration metrics live in
:mod:`.restoration` and are imported on demand.
"""

from meerbench.metrics.errors import MetricInputError, ScoreFileError
from meerbench.metrics.identification import (
    IdentificationSettings,
    identification_report,
    topk_similarity,
)
from meerbench.metrics.scorefiles import (
    ScoreTable,
    load_scores,
    write_bob4,
    write_scores_csv,
    write_scores_parquet,
)
from meerbench.metrics.stats import bootstrap_ci, mcnemar
from meerbench.metrics.verification import (
    VerificationSettings,
    VerificationState,
    auc,
    eer,
    kfold_accuracy,
    paired_bootstrap_tar_difference,
    roc,
    tar_at_far,
    validate_scores,
    verification_report,
)

__all__ = [
    "IdentificationSettings",
    "MetricInputError",
    "ScoreFileError",
    "ScoreTable",
    "VerificationSettings",
    "VerificationState",
    "auc",
    "bootstrap_ci",
    "eer",
    "identification_report",
    "kfold_accuracy",
    "load_scores",
    "mcnemar",
    "paired_bootstrap_tar_difference",
    "roc",
    "tar_at_far",
    "topk_similarity",
    "validate_scores",
    "verification_report",
    "write_bob4",
    "write_scores_csv",
    "write_scores_parquet",
]
