"""Models: the face-model contract, model cards, weights and ``load_model``.

Nothing is imported here, so ``meerbench.models.contract`` and the card schema load without
torch; ``MODELS`` (``meerbench.registry``) registers the built-in models on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meerbench.models.base import FaceModel


def load_model(name: str, /, **kwargs: Any) -> FaceModel:
    """Build a registered model by name, or the model in a file given by path (a card, ONNX,
    TorchScript, or a checkpoint with ``arch=``; see ``meerbench.models.files``);
    ``"<restorer>+<recognizer>"`` composes the two."""
    from meerbench.models.card_schema import Card
    from meerbench.models.files import is_model_path, model_from_file
    from meerbench.registry import MODELS

    if is_model_path(name):
        return model_from_file(name, **kwargs)
    restorer, plus, recognizer = name.partition("+")
    if plus:
        from meerbench.errors import UnknownNameError
        from meerbench.models.restorers import RESTORERS, RestoreThenRecognize

        if restorer not in RESTORERS:
            raise UnknownNameError(
                f"Unknown restorer '{restorer}' in '{name}'. Known restorers: "
                f"{', '.join(sorted(RESTORERS))}; compose as <restorer>+<recognizer>.")
        return RestoreThenRecognize(RESTORERS[restorer](), load_model(recognizer, **kwargs))
    obj = MODELS.get(name)
    if isinstance(obj, Card):
        from meerbench.models.cards import build_model

        return build_model(obj, **kwargs)
    return obj(**kwargs)
