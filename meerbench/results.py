"""Result files: one versioned JSON per (model, protocol) plus side files: per-pair scores (CSV,
plain or gzip-compressed as the shipped reference Results carry them) and restoration samples.

Every Result is validated when it is read (and before it is written) in one place,
:func:`validate_result`: schema, sections, types, finite numbers, ranges and ordered intervals,
with the file and the JSON field named in the error. Side files (``files.*``) are plain names
resolved in the Result's own folder; anything that resolves elsewhere is refused.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from meerbench.errors import MeerbenchError
from meerbench.io import ensure_writable_dir, write_json

SCHEMA = "meerbench.result/1"
SECTIONS = ("model", "protocol", "metrics", "counts", "provenance", "timings", "files")
MAX_BYTES = 256 << 20  # far above any real Result (per-image lists included)
#: A task section (or one entry of it) is "ok" with its numbers or "skipped" with a reason;
#: Results before ``status`` existed mark a skip with ``skipped: <reason>``.
STATUSES = ("ok", "skipped")
#: Restoration metrics in report order, with the range of their values.
RESTORATION_RANGES = {
    "psnr": (0.0, math.inf), "psnr_masked_region": (0.0, math.inf),
    "ssim": (-1.0, 1.0), "ssim_masked_region": (-1.0, 1.0),
    "identity_similarity": (-1.0, 1.0), "fid": (0.0, math.inf),
    "lpips": (0.0, math.inf), "lpips_masked_region": (0.0, math.inf),
}
#: What a restorer was given besides the masked image (``metrics.restoration.given``), as the
#: restorer declares it (``restoration_given``); Results written before the field say nothing.
RESTORER_GIVEN = {
    "true-map": "masked image + its true occluder map",
    "template-map": "masked image + a fixed lower-face map (no true map known)",
    "masked-image": "masked image only (finds the occluder itself)",
}
#: JSON files a results folder holds next to its Results, skipped by name (they carry a schema).
NOT_RESULTS = frozenset({"leaderboard.json"})


class NotAResult(UserWarning):
    """JSON files in a results folder that are not Results were skipped (named in the message)."""


@dataclass
class Result:
    """Everything needed to trust, compare and recompute one evaluation."""

    model: dict[str, Any]
    protocol: dict[str, Any]
    metrics: dict[str, Any]
    counts: dict[str, Any]
    provenance: dict[str, Any]
    timings: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "model": self.model, "protocol": self.protocol,
                "metrics": self.metrics, "counts": self.counts, "provenance": self.provenance,
                "timings": self.timings, "files": self.files}

    @property
    def stem(self) -> str:
        return result_stem(self.model["name"], self.protocol["id"], self.protocol["version"])

    def write(self, out_dir: Path) -> Path:
        """Validate, then write ``<stem>.json`` (:func:`result_stem`) atomically into
        ``out_dir``."""
        ensure_writable_dir(out_dir)
        path = result_path(out_dir, self.model.get("name"), self.protocol.get("id"),
                           self.protocol.get("version", 1))
        data = json.loads(json.dumps(self.to_dict()))  # as it will read back: tuples are lists
        validate_result(data, path)
        write_json(path, data)
        return path


def result_stem(model: str, protocol: str, version: int) -> str:
    """``<model>__<protocol>``, with ``.v<N>`` for protocol versions after the first: the Results
    (and side files) of two versions of a protocol never replace each other in one folder, and
    version-1 names stay as they always were."""
    return f"{model}__{protocol}" + ("" if version == 1 else f".v{version}")


def result_path(out_dir: Path, model: Any, protocol: Any, version: Any = 1) -> Path:
    """Where the Result of ``model`` on ``protocol`` (at ``version``) goes in ``out_dir``.

    Both names must be plain file names, and an existing read-only Result there is refused:
    ``os.replace`` would silently replace it (root, or a writable folder, may replace it).
    """
    at = _At(out_dir)
    stem = result_stem(_name(model, at["model"]["name"]), _name(protocol, at["protocol"]["id"]),
                       _positive(version, at["protocol"]["version"]))
    path = out_dir / f"{stem}.json"
    if path.exists() and not (path.stat().st_mode & 0o222 and os.access(path, os.W_OK)):
        raise MeerbenchError(f"Result {path} exists and is read-only; meerbench does not replace "
                             "it. Make it writable (chmod u+w) or write to another --out.")
    return path


def read_results(paths: Iterable[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(path, validated Result) of every Result JSON given as a file or in a folder given (not
    recursive, sorted by name).

    A folder may hold other JSON next to its Results: files named in :data:`NOT_RESULTS` and JSON
    without a ``schema`` key are skipped with a :class:`NotAResult` warning naming them. A file
    that has a ``schema`` claims to be a Result and must pass :func:`validate_result`; a file
    given by name must be a Result.
    """
    found: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for file in sorted(p.glob("*.json")):
                data = None if file.name in NOT_RESULTS else _load(file)
                if isinstance(data, dict) and "schema" in data:
                    found.append((file, _checked(file, data)))
                else:
                    skipped.append(file)
        elif p.is_file():
            found.append((p, read_result(p)))
        else:
            raise MeerbenchError(f"No such file or folder: {p}")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} JSON file(s) that are not meerbench Results "
                      f"(no 'schema'; leaderboard files): {', '.join(map(str, skipped))}",
                      NotAResult, stacklevel=2)
    if not found:
        raise MeerbenchError(f"No Result JSON files found in {', '.join(map(str, paths))}.")
    return found


def read_result(path: Path) -> dict[str, Any]:
    """Load and validate a Result JSON (see :func:`validate_result`)."""
    return _checked(path, _load(path))


def _load(path: Path) -> Any:
    """The parsed JSON of a would-be Result (size-capped); MeerbenchError names the file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise MeerbenchError(f"Result {path} is larger than {MAX_BYTES >> 20} MiB; "
                                 "not a meerbench result.")
        return json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # JSON or UTF-8; nested too deeply
        raise MeerbenchError(f"Cannot read result {path}: {exc}") from None


def _checked(path: Path, data: Any) -> dict[str, Any]:
    """``data`` validated as the Result at ``path``, its side files confined to its folder."""
    try:
        validate_result(data, path)
    except RecursionError as exc:
        raise MeerbenchError(f"Cannot read result {path}: {exc}") from None
    for role in data["files"]:
        result_file(path, data, role)
    return data


def result_file(path: Path, data: dict[str, Any], role: str) -> Path | None:
    """The side file ``files.<role>`` of the Result at ``path``, None when absent or missing.

    The name is resolved (symlinks too) in the Result's folder; a file outside it is refused
    and never opened.
    """
    name = data.get("files", {}).get(role)
    if name is None:
        return None
    at = _At(path)["files"][role]
    folder = path.parent.resolve()
    try:
        target = (folder / _name(name, at)).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise MeerbenchError(f"Result {path}: field '{at.field}': cannot resolve {name!r}: "
                             f"{exc}") from None
    if target.parent != folder:
        raise MeerbenchError(f"Result {path}: field '{at.field}': {name!r} resolves to {target}, "
                             f"outside the Result's folder {folder}; side files must lie next to "
                             "their Result.")
    return target if target.is_file() else None


# ----------------------------------------------------------------------------- validation


_MISSING = object()


@dataclass(frozen=True)
class _At:
    """A field of one JSON file (a Result unless ``kind`` says otherwise), for error messages:
    ``metrics.verification.MR-MP.auc``."""

    file: Path
    field: str = ""
    kind: str = "Result"

    def __getitem__(self, key: str | int) -> _At:
        if isinstance(key, int):
            return _At(self.file, f"{self.field}[{key}]", self.kind)
        return _At(self.file, f"{self.field}.{key}" if self.field else key, self.kind)

    def fail(self, expected: str, value: Any = _MISSING) -> MeerbenchError:
        if value is _MISSING:
            return MeerbenchError(f"{self.kind} {self.file}: field '{self.field}' is missing; "
                                  f"expected {expected}.")
        got = repr(value)
        got = got if len(got) <= 60 else got[:57] + "..."
        return MeerbenchError(f"{self.kind} {self.file}: field '{self.field or '(top level)'}': "
                              f"expected {expected}, got {got}.")


Check = Callable[[Any, _At], Any]


def validate_result(data: Any, path: Path) -> None:
    """Refuse a Result that readers could misreport: MeerbenchError names file and field.

    Checked: schema id, all sections, the type of every field the reports read, that every
    number is finite, rates (accuracy, AUC, EER, TAR, FAR, DIR, ...) in [0, 1], counts
    non-negative integers, 95% intervals ordered and in range, names used in file names plain.
    """
    at = _At(path)
    _finite(data, at)
    top = _mapping(data, at)
    if top.get("schema") != SCHEMA:
        raise at["schema"].fail(f"{SCHEMA!r} (a meerbench result)", top.get("schema"))
    _fields(top, at, True, **dict.fromkeys(SECTIONS, _mapping))
    _fields(top["model"], at["model"], True, name=_text)
    _fields(top["model"], at["model"], False, weights_sha256=_optional(_text),
            contract=_optional(_contract))
    _fields(top["protocol"], at["protocol"], True, id=_name, version=_positive, sha256=_sha256)
    _fields(top["protocol"], at["protocol"], False, lists=_values(_optional(_text)),
            config=_mapping)
    _metrics(top["metrics"], at["metrics"])
    _counts(top["counts"], at["counts"])
    _fields(top["provenance"], at["provenance"], False, **dict.fromkeys(
        ("date", "meerbench_version", "git_commit", "device", "precision", "torch_version"),
        _optional(_text)))
    for key, value in top["timings"].items():  # durations and rates; flags and notes pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _number(value, at["timings"][key], 0.0)
    _values(_name)(top["files"], at["files"])


def _finite(value: Any, at: _At) -> None:
    """Every number finite (JSON NaN, Infinity, 1e999) and every string valid UTF-8."""
    if isinstance(value, float) and not math.isfinite(value):
        raise at.fail("a finite number", value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise at.fail("text in UTF-8", value) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _finite(key, at)
            _finite(item, at[key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _finite(item, at[i])


def _fields(data: dict[str, Any], at: _At, required: bool, **checks: Check) -> None:
    """Run each check on its field; a missing field fails only when ``required``."""
    for key, check in checks.items():
        if key in data:
            check(data[key], at[key])
        elif required:
            raise at[key].fail(_EXPECTED.get(check, "a value"))


def _mapping(value: Any, at: _At) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise at.fail("a mapping", value)
    return value


def _list(value: Any, at: _At) -> list[Any]:
    if not isinstance(value, list):
        raise at.fail("a list", value)
    return value


def _text(value: Any, at: _At) -> str:
    if not isinstance(value, str):
        raise at.fail("a string", value)
    return value


def _flag(value: Any, at: _At) -> bool:
    if not isinstance(value, bool):
        raise at.fail("true or false", value)
    return value


def _number(value: Any, at: _At, lo: float = -math.inf, hi: float = math.inf,
            open_ends: bool = False) -> float:
    """A finite number in [lo, hi] (in (lo, hi) with ``open_ends``); booleans are not numbers."""
    inside = (lambda v: lo < v < hi) if open_ends else (lambda v: lo <= v <= hi)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not inside(value):
        left, right = "(" if open_ends else "[", ")" if open_ends else "]"
        where = f" in {left}{lo:g}, {hi:g}{right}" if math.isfinite(lo) or math.isfinite(hi) else ""
        raise at.fail(f"a finite number{where}", value)
    return float(value)


def _count(value: Any, at: _At) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise at.fail("a non-negative integer", value)
    return value


def _positive(value: Any, at: _At) -> int:
    if _count(value, at) == 0:
        raise at.fail("a positive integer", value)
    return value


def _sha256(value: Any, at: _At) -> str:
    if not (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value)):
        raise at.fail("a sha256 (64 lowercase hex digits)", value)
    return value


def _name(value: Any, at: _At) -> str:
    """Safe as one file-name component: no separator, not '.' or '..', no control character.
    Looser than ``schema.is_plain_name`` (the rule for names meerbench gives): a Result may come
    from another tool, and reports escape what they show."""
    if (not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\\" in value
            or any(ord(c) < 32 or ord(c) == 127 for c in value)):
        raise at.fail("a plain name (no path separator, '..' or control character)", value)
    return value


def _optional(check: Check) -> Check:
    return lambda value, at: None if value is None else check(value, at)


def _items(check: Check) -> Check:
    return lambda value, at: [check(v, at[i]) for i, v in enumerate(_list(value, at))]


def _values(check: Check) -> Check:
    return lambda value, at: {k: check(v, at[k]) for k, v in _mapping(value, at).items()}


def _interval(value: Any, at: _At, lo: float = 0.0, hi: float = 1.0) -> None:
    """None (no interval) or [low, high] with lo <= low <= high <= hi."""
    if value is None:
        return
    pair = _list(value, at)
    if len(pair) != 2:
        raise at.fail("[low, high] or null", value)
    low, high = (_number(v, at[i], lo, hi) for i, v in enumerate(pair))
    if low > high:
        raise at.fail("an interval with low <= high", value)


_rate = partial(_number, lo=0.0, hi=1.0)
_target = partial(_number, lo=0.0, hi=1.0, open_ends=True)
_threshold = _optional(_number)
_EXPECTED: dict[Check, str] = {_mapping: "a mapping", _text: "a string", _name: "a plain name",
                               _rate: "a number in [0, 1]", _interval: "[low, high] or null",
                               _flag: "true or false", _positive: "a positive integer"}


def _contract(value: Any, at: _At) -> None:
    contract = _mapping(value, at)
    _fields(contract, at, False, embedding_dim=_positive, input_size=_size)


def _size(value: Any, at: _At) -> None:
    if len(_items(_positive)(value, at)) != 2:
        raise at.fail("[height, width]", value)


def _metrics(metrics: dict[str, Any], at: _At) -> None:
    checks: dict[str, Check] = dict(
        verification=_values(lambda m, a: _verification(m, a, complete=True)),
        verification_by_family=_values(_values(
            lambda m, a: _verification(m, a, complete=False))),
        identification=_identification, restoration=_restoration)
    _fields(metrics, at, False, **checks)
    for key in metrics.keys() - checks.keys():  # other task types: their status, if any
        _skipped(_mapping(metrics[key], at[key]), at[key])
    for cond in metrics.get("verification", {}):  # conditions name plot files
        _name(cond, at["verification"][cond])


def _verification(value: Any, at: _At, complete: bool) -> None:
    """One verification entry; per-condition entries are ``complete``, per-family may be partial."""
    m = _mapping(value, at)
    _fields(m, at, False, n_pairs=_count, n_genuine=_count, n_impostor=_count)
    if all(k in m for k in ("n_pairs", "n_genuine", "n_impostor")) and (
            m["n_genuine"] + m["n_impostor"] != m["n_pairs"]):
        raise at["n_pairs"].fail("n_genuine + n_impostor", m["n_pairs"])
    if _skipped(m, at):
        return
    _fields(m, at, complete, accuracy=_optional(partial(_accuracy, complete=complete)),
            auc=partial(_auc, complete=complete), eer=partial(_eer, complete=complete),
            tar_at_far=_items(partial(_tar, complete=complete)))


def _skipped(m: dict[str, Any], at: _At) -> bool:
    """Whether a task section (or entry) is skipped: ``status`` (one of :data:`STATUSES`; a
    skip names its ``reason``) or, in older Results, a ``skipped`` reason."""
    _fields(m, at, False, status=_status, reason=_text, skipped=_text)
    status = m.get("status", "skipped" if "skipped" in m else "ok")
    if status == "skipped" and not (m.get("reason") or m.get("skipped")):
        raise at["reason"].fail("the reason the task was skipped")
    return status == "skipped"


def _status(value: Any, at: _At) -> str:
    if value not in STATUSES:
        raise at.fail(" or ".join(map(repr, STATUSES)), value)
    return value


def _accuracy(value: Any, at: _At, complete: bool) -> None:
    acc = _mapping(value, at)
    _fields(acc, at, complete, rule=_text, mean=_rate, per_fold=_items(_rate), ci95=_interval)
    _fields(acc, at, False, std=_rate, thresholds=_items(_threshold))


def _auc(value: Any, at: _At, complete: bool) -> None:
    _fields(_mapping(value, at), at, complete, value=_rate, ci95=_interval)


def _eer(value: Any, at: _At, complete: bool) -> None:
    eer = _mapping(value, at)
    _fields(eer, at, complete, value=_rate, ci95=_interval, rule=_text)
    _fields(eer, at, False, far=_rate, frr=_rate, threshold=_threshold)


def _tar(value: Any, at: _At, complete: bool) -> None:
    t = _mapping(value, at)
    _fields(t, at, complete, target=_target, tar=_rate, ci95=_interval, rule=_text,
            reliable=_flag, warning=_optional(_text))
    _fields(t, at, False, far=_rate, threshold=_threshold, n_negatives=_count)


def _identification(value: Any, at: _At) -> None:
    m = _mapping(value, at)
    if _skipped(m, at):
        return
    _fields(m, at, True, rank=_ranks, map=_rate, cmc=_items(_rate),
            dir_at_fpir=_items(_dir), ci95=_mapping)
    _fields(m, at, False, tie_rule=_text, n_probes_mated=_count, n_probes_nonmated=_count,
            n_gallery=_count, n_gallery_identities=_count)
    ci = m["ci95"]
    _fields(ci, at["ci95"], "1" in m["rank"], rank1=_interval)
    _fields(ci, at["ci95"], False, dir_at_fpir=_optional(_items(_interval)))
    if ci.get("dir_at_fpir") is not None and len(ci["dir_at_fpir"]) != len(m["dir_at_fpir"]):
        raise at["ci95"]["dir_at_fpir"].fail(
            f"one interval per dir_at_fpir entry ({len(m['dir_at_fpir'])})", ci["dir_at_fpir"])


def _ranks(value: Any, at: _At) -> None:
    for key, rate in _mapping(value, at).items():
        if not (key.isascii() and key.isdigit() and int(key) > 0):
            raise at[key].fail("a rank key '1', '5', ...", key)
        _rate(rate, at[key])


def _dir(value: Any, at: _At) -> None:
    d = _mapping(value, at)
    _fields(d, at, True, fpir_target=_target, dir=_rate, n_nonmated=_count, reliable=_flag)
    _fields(d, at, False, fpir=_rate, threshold=_threshold)


def _restoration(value: Any, at: _At) -> None:
    m = _mapping(value, at)
    _skipped(m, at)
    _fields(m, at, False, n_images=_count, given=_given)
    for key, (lo, hi) in RESTORATION_RANGES.items():
        if key not in m:
            continue
        entry, where = _mapping(m[key], at[key]), at[key]
        measure = _optional(partial(_number, lo=lo, hi=hi))
        _fields(entry, where, False, mean=measure, value=measure, per_image=_items(measure),
                n_images=_count, n_averaged=_count, n_empty_mask=_count, n_identical=_count,
                recognizer=_text, reason=_text)


def _given(value: Any, at: _At) -> None:
    if value not in RESTORER_GIVEN:
        raise at.fail(" or ".join(map(repr, RESTORER_GIVEN)), value)


def _counts(value: Any, at: _At) -> None:
    """Counts are non-negative integers, or mappings of them (pairs per condition)."""
    for key, item in _mapping(value, at).items():
        (_counts if isinstance(item, dict) else _count)(item, at[key])


# ----------------------------------------------------------------------------- provenance


def provenance(device: str, precision: str) -> dict[str, Any]:
    """Versions, machine and time of this run."""
    from importlib.metadata import version

    import numpy
    import torch

    return {
        "meerbench_version": version("meerbench"),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "platform": platform.platform(),
        "device": device,
        "precision": precision,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5, check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
