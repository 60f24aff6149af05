"""Models: the face-model contract, the registry's model factories and ``load_model``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meerbench.models.cards import register_builtin_cards
from meerbench.registry import MODELS

if TYPE_CHECKING:
    from meerbench.models.base import FaceModel

register_builtin_cards()  # every model card in baselines/*.yaml


def load_model(name: str, **kwargs: Any) -> FaceModel:
    """Build a registered model by name; ``"<restorer>+<recognizer>"`` composes the two."""
    restorer, plus, recognizer = name.partition("+")
    if plus:
        from meerbench.errors import UnknownNameError
        from meerbench.models.restorers import RESTORERS, RestoreThenRecognize

        if restorer not in RESTORERS:
            raise UnknownNameError(
                f"Unknown restorer '{restorer}' in '{name}'. Known restorers: "
                f"{', '.join(sorted(RESTORERS))}; compose as <restorer>+<recognizer>.")
        return RestoreThenRecognize(RESTORERS[restorer](), load_model(recognizer, **kwargs))
    factory = MODELS.get(name)
    return factory(**kwargs)
