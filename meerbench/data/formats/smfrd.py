"""SMFRD: simulated-mask copies of WebFace and LFW; every image is masked.

The folder names inside the official archives are not confirmed, so the layout is an option:
``pattern`` places ``{part}`` (a top-level part such as the WebFace or LFW copy), ``{identity}``
and ``{file}`` in a relative path. The part of an image becomes its ``split``; identities are
folder names as they are (WebFace numbers and LFW names do not collide).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from meerbench.data.dataset import Dataset, Sample
from meerbench.data.formats.inputs import option_path
from meerbench.data.images import IMAGE_SUFFIXES
from meerbench.errors import DatasetError
from meerbench.schema import Fields

DEFAULT_PATTERN = "{part}/{identity}/{file}"
PLACEHOLDER = re.compile(r"\{(\w*)\}")
KNOWN = ("part", "identity", "file")


def compile_pattern(fields: Fields) -> tuple[str, str, re.Pattern[str]]:
    """The ``pattern`` option as (text, glob, regex with groups part/identity/file)."""
    text = fields.get("pattern", str, DEFAULT_PATTERN)
    names = PLACEHOLDER.findall(text)
    segments = text.split("/")
    if (
        any(n not in KNOWN for n in names) or len(set(names)) != len(names)
        or "identity" not in names or segments[-1] != "{file}"
        or any(s in ("", ".", "..") for s in segments) or any(c in text for c in "*?[]")
    ):
        raise fields.error("pattern", "a relative path of folders ending in '/{file}' with "
                                      f"'{{identity}}' and optionally '{{part}}', got {text!r}")
    glob = PLACEHOLDER.sub("*", text)
    regex = "".join(
        f"(?P<{piece[1:-1]}>[^/]+)" if PLACEHOLDER.fullmatch(piece) else re.escape(piece)
        for piece in re.split(r"(\{\w*\})", text) if piece
    )
    return text, glob, re.compile(regex)


class SMFRDFormat:
    """Options: ``pattern`` (default ``{part}/{identity}/{file}``) and ``parts`` (the part folder
    names to read, default all; each one named must exist)."""

    needs_root = True
    about = (
        "SMFRD is obtained from https://github.com/X-zhangyang/Real-World-Masked-Face-Dataset "
        "(WebFace-simulated: Baidu https://pan.baidu.com/s/1Qi_8D_kH2QCm761elZs5YA password 77m8,"
        " Google Drive 1q0ibaoFVEmXrjlk3-Oyx2oYR8HpVy6jc; LFW-simulated: Baidu "
        "https://pan.baidu.com/s/1Ge0KcYgu6oVAbLlDHCKwRg password o126, Google Drive "
        "1soLIUkGruSKMzg5z5_OYYqUVoca4E_lI). Expected layout (option 'pattern', default "
        f"'{DEFAULT_PATTERN}'): <root>/<part>/<identity>/<image>, e.g. <root>/lfw/<name>/*.jpg."
    )

    def read(self, root: Path | None, options: dict[str, Any], name: str) -> Dataset:
        fields = Fields(options, f"dataset '{name}'", "dataset.options")
        text, glob, regex = compile_pattern(fields)
        parts = fields.get("parts", list, None)
        if parts is not None and (not parts or not all(isinstance(p, str) and p for p in parts)
                                  or len(set(parts)) != len(parts)):
            raise fields.error("parts", f"a non-empty list of distinct folder names, got {parts!r}")
        if parts is not None and "part" not in regex.groupindex:
            raise fields.error("parts", f"no option when the pattern {text!r} has no {{part}}")
        fields.finish()
        assert root is not None
        for part in parts or []:
            if not option_path(root, part, name, "parts").is_dir():
                raise DatasetError(f"SMFRD part folder not found: {root / part}")
        samples = []
        for path in sorted(root.glob(glob)):
            relative = path.relative_to(root).as_posix()
            match = regex.fullmatch(relative)
            if match is None or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            part = match.groupdict().get("part")
            if parts is not None and part not in parts:
                continue
            samples.append(Sample(key=relative, path=path, identity=match["identity"],
                                  masked=True, split=part))
        if not samples:
            raise DatasetError(f"No images matching {text!r} under {root}. {self.about}")
        found = sorted({s.split for s in samples if s.split is not None})
        return Dataset(name, root, samples, info={
            "format": "smfrd", "pattern": text, "parts": found,
            "images_per_part": {p: sum(s.split == p for s in samples) for p in found},
            "identities": len({s.identity for s in samples}),
            "masks": "simulated (all images masked)",
        })
