"""The procedural renderer: drawing primitives (``draw``), SynthFace faces (``face``) and
landmark-driven occluders (``occluders``). Pure functions of their seeds; no files."""
