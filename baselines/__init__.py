"""Model cards (YAML) of the built-in baselines, shipped as ``meerbench.baselines``.

Each ``NAME.yaml`` registers the model ``NAME``; see ``meerbench/models/cards.py`` for the fields.
"""
