"""Untrusted dataset inputs: files confined to their data root, UTF-8 text, printable names.

Every path a reader builds from a protocol option, a manifest row or a folder listing goes
through ``RootGuard``: it resolves symlinks and ``..`` and refuses a path that ends outside the
data root, so a dataset can never make meerbench read (or quote in an error) a file elsewhere.
File names must be valid UTF-8: sample keys and identities are written to lists and Results as
text, so a name that is not (a Linux file name is any bytes) is refused, naming its folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from meerbench.data.dataset import Dataset
from meerbench.errors import DatasetError, MeerbenchError


class RootGuard:
    """Checks that paths resolve inside one root; resolved folders are remembered, so checking
    every image of a large dataset costs about one ``lstat`` per file (and string operations:
    no Path objects are made per file)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.resolved_root = root.resolve()
        self._prefix = os.path.join(str(self.resolved_root), "")  # ends with the separator
        self._folders: dict[str, str] = {}

    def check(self, path: Path, where: str, value: object = None) -> Path:
        """``path`` unchanged when it resolves inside the root; otherwise a DatasetError naming
        ``where`` (file and line, or option) and ``value`` (what was written there)."""
        shown = path if value is None else value
        try:
            resolved = self._resolve(os.fspath(path))
        except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, symlink loop, too long
            raise DatasetError(f"{where}: {str(shown)!r} is not a usable path ({exc}).") from None
        if not os.path.join(resolved, "").startswith(self._prefix):
            raise DatasetError(
                f"{where}: {str(shown)!r} resolves to {resolved}, outside the data root "
                f"{self.root}; every file of a dataset must lie inside its root (symlinks "
                "included): copy the file in instead of linking or pointing to it.")
        return path

    def _resolve(self, path: str) -> str:
        """As ``Path.resolve`` (which also refuses symlink loops), one ``lstat`` per file and per
        folder: a folder is its resolved parent plus its name unless it is a symlink."""
        folder, name = os.path.split(path)
        if name in ("", ".", ".."):
            return str(Path(path).resolve())
        full = os.path.join(self._folder(folder), name)
        return str(Path(full).resolve()) if os.path.islink(full) else full

    def _folder(self, folder: str) -> str:
        resolved = self._folders.get(folder)
        if resolved is None:
            resolved = self._folders[folder] = self._resolve(folder) if folder not in (
                "", os.sep) else str(Path(folder or ".").resolve())
        return resolved


def option_path(root: Path, value: str, dataset: str, option: str) -> Path:
    """``root / value`` for the file or folder option ``option`` of ``dataset``, kept inside
    ``root`` (an absolute path or ``..`` out is refused, naming the option and its value)."""
    return RootGuard(root).check(root / value, f"dataset '{dataset}': field "
                                               f"'dataset.options.{option}'", value)


def check_dataset(dataset: Dataset) -> Dataset:
    """Refuse a dataset with a file outside its root or a name that is not UTF-8 text."""
    guard = RootGuard(dataset.root)
    for s in dataset.samples:
        where = f"dataset '{dataset.name}', sample '{printable(s.key)}'"
        for path in (s.path, s.twin, s.mask_map):
            if path is not None:
                guard.check(path, where)
        for text in (s.key, s.identity):
            if printable(text) != text:
                folder = printable(str((dataset.root / s.key).parent))
                raise DatasetError(
                    f"{folder}: the name {printable(text)!r} is not valid "
                    "UTF-8; rename it (sample keys and identities are stored as text).")
    return dataset


def printable(text: str) -> str:
    """``text`` with undecodable bytes of a file name (lone surrogates) shown as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def decode_text(data: bytes, path: Path | str, error: type[MeerbenchError] = DatasetError) -> str:
    """UTF-8 text with a leading BOM (as Excel writes) dropped; invalid bytes are an ``error``
    naming the file, the line and the byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise error(f"{path}, line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); save "
                    "the file as UTF-8.") from None


def read_text(path: Path, what: str, error: type[MeerbenchError] = DatasetError) -> str:
    """A UTF-8 text file (see ``decode_text``); a missing or unreadable file names ``what``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what[:1].upper()}{what[1:]} not found: {path}") from None
    except OSError as exc:
        raise error(f"Cannot read {what} {path}: {exc.strerror or exc}") from None
    return decode_text(data, path, error)


def read_yaml(path: Path, what: str, error: type[MeerbenchError]) -> Any:
    """A UTF-8 YAML file (protocols, training configs); a syntax error is one line naming it."""
    import yaml

    try:
        return yaml.safe_load(read_text(path, what, error))
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
