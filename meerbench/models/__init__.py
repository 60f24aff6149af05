"""Models: the face-model contract, the registry's model factories and ``load_model``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meerbench.models.cards import register_builtin_cards
from meerbench.registry import MODELS

if TYPE_CHECKING:
    from meerbench.models.base import FaceModel

register_builtin_cards()  # every model card in baselines/*.yaml
# Reference models trained by this project (baselines/<name>/, see docs/meer.md).
for _name, _attr, _text in (
    ("meer-s", "meer_s", "MEER-S reference (decoupling + restoration + id-preserving refinement; "
                         "IResNet-18 x0.25 at 48 px, trained on synthmask-train on CPU)"),
    ("arcface-s", "arcface_s", "ArcFace on unmasked images; same encoder, pipeline and budget"),
    ("arcface-s-maskaug", "arcface_s_maskaug",
     "ArcFace on masked + unmasked images; same encoder, pipeline and budget"),
    ("from-s", "from_s", "FROM-style predicted-mask feature gate; same encoder and budget"),
    ("meer", "meer", "The best available MEER checkpoint (meer-r100, meer-r50, else meer-s)"),
):
    MODELS.add_lazy(_name, f"meerbench.models.meer:{_attr}", _text)


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
