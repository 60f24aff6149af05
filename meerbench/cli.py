"""The ``meerbench`` command: run, list, report.

User errors (unknown names, bad files, missing data, unwritable folders) print one paragraph on
stderr and exit with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from meerbench.errors import ConfigError, MeerbenchError
from meerbench.settings import PRECISIONS

if TYPE_CHECKING:
    import numpy as np

    from meerbench.metrics.scorefiles import ScoreTable

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")  # a non-UTF-8 file name prints
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, one line already printed)
        return int(exc.code or 0)
    signal.signal(signal.SIGTERM, _terminated)  # unwind: partial folders are removed on the way
    try:
        return args.func(args)
    except MeerbenchError as exc:
        return _fail(str(exc))
    except OSError as exc:  # a file the user pointed at, or a folder we must write to
        return _fail(os_error_message(exc))
    except UnicodeError as exc:
        return _fail(f"text or a file name that is not valid {exc.encoding} ({exc})")
    except KeyboardInterrupt:
        print("meerbench: interrupted; finished work is cached, rerun to resume.", file=sys.stderr)
        return 130


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _fail(message: str) -> int:
    print(f"meerbench: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def os_error_message(exc: OSError) -> str:
    """One line for a failed file operation: what could not be done, to which path, and why.

    Permission errors on an existing unreadable file are reads; other permission errors, a
    read-only file system, a full disk or a path through a regular file are writes.
    """
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    if path is None:  # e.g. a full disk while writing to an open file
        return str(exc)
    unreadable = (isinstance(exc, PermissionError) and os.path.exists(path)
                  and not os.access(path, os.R_OK))
    verb = "read" if unreadable or exc.errno in (errno.ENOENT, errno.EISDIR) else "write"
    return f"cannot {verb} {os.fsdecode(path)}: {exc.strerror or exc}"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` names each option's default, except where there is none to show (no value, a
    switch that is off): their help says what happens instead."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action) or ""


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (exit 2) in place of usage + error, and help that
    shows defaults (sub-command parsers are of this class too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"meerbench: error: {message} (see `{self.prog} --help`)\n")


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in [minimum, maximum] (argparse names the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    return parse


def input_size(text: str) -> tuple[int, int]:
    """An argparse ``type``: ``N`` (square) or ``HxW``, positive pixels."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected N or HxW in pixels (e.g. 112), got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("meerbench")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


POSITIVE = whole_number(1)
NON_NEGATIVE = whole_number(0)
#: DataLoader worker processes: each is a process, so an absurd count is refused, not forked.
WORKERS = whole_number(0, 256)
#: how ``metrics --scores`` makes folds for a file without a fold column.
FOLDS_BY = ("identity", "order")


def build_parser() -> argparse.ArgumentParser:
    from meerbench.models.contract import CHANNELS, FLIP_FUSION
    from meerbench.models.files import STATE_DICT_ARCHITECTURES

    parser = Parser(
        prog="meerbench", description="Benchmark masked face recognition and restoration."
    )
    parser.add_argument("--version", action="version", version=f"meerbench {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate a model on a protocol")
    run.add_argument("--model", default="meer",
                     help="a registered model name (`meerbench list models`) or a path: a model "
                          "card YAML, a folder holding card.yaml, an ONNX file, a TorchScript "
                          "file, or a plain checkpoint (state dict, .safetensors) with --arch")
    run.add_argument("--weights", help="checkpoint file to load instead of the card's weights")
    run.add_argument("--protocol", default="synthmask", help="protocol name or YAML path")
    run.add_argument("--data", help="dataset folder (default: $MEERBENCH_DATA/<dataset>)")
    run.add_argument("--out", default="results", help="folder for Result JSON and scores")
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: cuda when available)")
    run.add_argument("--batch-size", type=POSITIVE, default=64,
                     help="images per forward pass; another size is another embedding cache key")
    run.add_argument("--workers", type=WORKERS, default=0,
                     help="DataLoader worker processes (0 .. 256; 0 reads images in the main "
                          "process)")
    run.add_argument("--precision", default="auto", choices=PRECISIONS,
                     help="embedding precision; auto: fp32 on CPU (bf16 rounds differently on "
                          "different CPUs), bf16 for torch networks on GPUs (fp16 without "
                          "bf16), fp32 for other models (classical, ONNX, dlib)")
    run.add_argument("--chunk-size", type=POSITIVE, default=2048,
                     help="images per cache chunk (the unit of resume and of torchrun sharding)")
    run.add_argument("--json", action="store_true",
                     help="print the Result JSON on stdout (and nothing else) instead of the table")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    files = run.add_argument_group(
        "model files", "for --model PATH to a file without a card: the architecture of a plain "
        "checkpoint and the preprocessing contract (ArcFace's unless given)")
    files.add_argument("--arch", choices=STATE_DICT_ARCHITECTURES,
                       help="network of a plain checkpoint (state dict or .safetensors)")
    files.add_argument("--name", help="the model's name in Results (default: the file's "
                       "stem, or the card's name)")
    files.add_argument("--input-size", type=input_size, metavar="N|HxW",
                       help="input pixels (default: 112)")
    files.add_argument("--channels", choices=CHANNELS, help="channel order (default: RGB)")
    files.add_argument("--mean", type=float, nargs="+",
                       help="per-channel mean of x/255, or one for all (default: 0.5)")
    files.add_argument("--std", type=float, nargs="+",
                       help="per-channel std of x/255, or one for all (default: 0.5)")
    files.add_argument("--embedding-dim", type=POSITIVE,
                       help="embedding width (default: measured from the network)")
    files.add_argument("--flip-fusion", choices=FLIP_FUSION,
                       help="add (sum) or append (concat) the mirror image's embedding "
                            "(default: none)")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="list registered models, protocols, dataset formats or "
                         "task types")
    lst.add_argument("what", choices=("models", "protocols", "datasets", "tasks"))
    lst.add_argument("--json", action="store_true",
                     help="print a JSON list of {name, description}")
    lst.set_defaults(func=cmd_list)

    prep = sub.add_parser("prepare", help="check a dataset, prepare its faces, write its lists")
    prep.add_argument("protocol", help="protocol name or YAML path")
    prep.add_argument("--data", help="dataset folder (default: $MEERBENCH_DATA/<dataset>)")
    prep.add_argument("--out", default="lists", help="folder for the generated lists")
    prep.add_argument("--workers", type=whole_number(1, 256), default=None,
                      help="processes that align an unaligned dataset (default: the idle cores; "
                           "1 aligns in this process)")
    prep.add_argument("--no-progress", action="store_true", help="hide progress bars")
    prep.set_defaults(func=cmd_prepare)

    pck = sub.add_parser("pack", help="write a folder or CSV manifest of aligned faces as an "
                         "insightface RecordIO training set (train.rec, train.idx, property)")
    pck.add_argument("src", help="folder <identity>/<image> or a CSV manifest (path,identity,...)")
    pck.add_argument("--out", required=True, help="folder for train.rec, train.idx and property")
    pck.add_argument("--shard-size", type=whole_number(1), default=None, metavar="N",
                     help="write shards of N images, train-00000.rec/.idx, train-00001.rec/.idx, "
                          "... (default: one train.rec, as insightface distributes sets)")
    pck.add_argument("--no-progress", action="store_true", help="hide progress bars")
    pck.set_defaults(func=cmd_pack)

    msk = sub.add_parser("mask", help="put reproducible synthetic masks on a folder of faces")
    msk.add_argument("src", help="folder of face images (searched recursively)")
    msk.add_argument("--out", required=True, help="new folder for masked images and manifest")
    msk.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of the occluder draws")
    msk.add_argument("--families", default="seen",
                     help="'seen', 'unseen' or a comma list (surgical,cloth,n95,kn95,fabric,"
                          "scarf,hand,gaiter)")
    msk.add_argument("--landmarks", default="auto", choices=("auto", "template", "dlib68"),
                     help="auto: dlib 68 points when installed and a face is found, else the "
                          "ArcFace template of an aligned face")
    msk.add_argument("--no-progress", action="store_true", help="hide progress bars")
    msk.set_defaults(func=cmd_mask)

    met = sub.add_parser("metrics",
                         help="verification metrics of any score file (CSV or bob 4-column)")
    met.add_argument("--scores", required=True, help="CSV with header score,label[,...] or bob "
                     "4-column 'ref_subject probe_subject probe_key score'")
    met.add_argument("--json", action="store_true", help="print the full result as JSON")
    met.add_argument("--accuracy-rule", default="insightface", choices=("insightface", "exact"),
                     help="threshold search of k-fold accuracy (docs/metrics.md)")
    met.add_argument("--tar-rule", default="floor", choices=("floor", "nearest", "interp"),
                     help="how TAR@FAR reads the ROC at each FAR target (docs/metrics.md)")
    met.add_argument("--eer-rule", default="min_gap", choices=("min_gap", "interp"),
                     help="how the EER is read off the ROC (docs/metrics.md)")
    met.add_argument("--far", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3, 1e-4],
                     help="FAR targets for TAR@FAR")
    met.add_argument("--folds", type=whole_number(2), default=10,
                     help="folds for k-fold accuracy when the file has no fold column")
    met.add_argument("--folds-by", choices=FOLDS_BY,
                     help="without a fold column: identity deals the sorted probe identities "
                          "round-robin into folds (a pair goes to its probe identity's fold); "
                          "order cuts the file into contiguous folds (default: identity when the "
                          "file names identities, else order)")
    met.add_argument("--bootstrap", type=NON_NEGATIVE, default=1000,
                     help="bootstrap rounds (0: no CIs)")
    met.add_argument("--seed", type=NON_NEGATIVE, default=0, help="bootstrap seed")
    met.add_argument("--no-progress", action="store_true", help="hide the bootstrap progress bar")
    met.add_argument("--save-parquet", metavar="PATH",
                     help="also write the pairs read as a Parquet score file (binary, exact, "
                          "read back several times faster than CSV)")
    met.set_defaults(func=cmd_metrics)

    trn = sub.add_parser("train",
                         help="train MEER or a baseline from a YAML config (torchrun-ready)")
    trn.add_argument("--config", required=True, help="training YAML (configs/train/*.yaml)")
    trn.add_argument("--out", help="output folder (default: runs/<name>)")
    trn.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    trn.add_argument("--stop-after", type=POSITIVE, help="stop (with a checkpoint) after this step")
    trn.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    trn.add_argument("--loader-only", type=POSITIVE, metavar="STEPS",
                     help="measure the streaming loader alone over STEPS steps (no model, no "
                          "output) and print its samples/s")
    trn.set_defaults(func=cmd_train)

    wts = sub.add_parser("weights", help="download a model's weights into the cache")
    wts_sub = wts.add_subparsers(dest="action", required=True)
    fetch = wts_sub.add_parser("fetch", help="download, check sha256, place atomically; for a "
                               "card without a URL, say which file to place where (exit 1 until "
                               "it is there)")
    fetch.add_argument("model", help="model card name (see `meerbench list models`)")
    fetch.add_argument("--sha256", help="expected sha256 when the card does not record one")
    fetch.set_defaults(func=cmd_weights_fetch)

    rep = sub.add_parser("report", help="tables (md, LaTeX, CSV, HTML) and plots from Results")
    rep.add_argument("paths", nargs="+", help="Result JSON files or folders of them")
    rep.add_argument("--out",
                     help="folder for tables and plots (default: print the first --format)")
    rep.add_argument("--format", nargs="+", default=["md", "latex", "csv", "html"],
                     choices=("md", "latex", "csv", "html"), help="table formats written to --out")
    rep.add_argument("--reference", help="model that significance markers compare against")
    rep.add_argument("--rounds", type=NON_NEGATIVE, default=1000, help="paired bootstrap rounds")
    rep.add_argument("--no-plots", action="store_true")
    rep.add_argument("--metrics", nargs="+", metavar="METRIC",
                     help="only these metrics: keys such as acc, eer, tar@0.001, rank1, psnr, or "
                          "prefixes ending in '@' (tar@); in every format, the CSV too "
                          "(default: each task's headline metrics; the CSV holds all)")
    rep.add_argument("--conditions", nargs="+", metavar="CONDITION",
                     help="only these conditions of task types that have them, e.g. UMR-MP MR-MP "
                          "(default: all)")
    rep.set_defaults(func=cmd_report)

    exp = sub.add_parser("export", help="every reported number as one tidy table (CSV or "
                         "Parquet) for pandas")
    exp.add_argument("paths", nargs="+", help="Result JSON files or folders of them")
    exp.add_argument("--format", choices=("csv", "parquet"), default="csv")
    exp.add_argument("--out", required=True, help="file to write (atomically)")
    exp.set_defaults(func=cmd_export)

    board = sub.add_parser("leaderboard", help="leaderboard.md + static HTML; --check gates CI")
    board.add_argument("results", nargs="+", help="Result JSON files or folders of them")
    board.add_argument("--out", default="reports", help="folder for the leaderboard")
    board.add_argument("--check", metavar="REPORTS_DIR",
                       help="compare against a committed leaderboard; exit 1 on any number that "
                            "moved beyond its tolerance, 2 on bad input, 3 if the check itself "
                            "fails")
    board.set_defaults(func=cmd_leaderboard)

    cmp_ = sub.add_parser("compare", help="per-condition differences with paired significance")
    cmp_.add_argument("a", help="Result JSON of model A")
    cmp_.add_argument("b", help="Result JSON of model B (same protocol)")
    cmp_.add_argument("--rounds", type=NON_NEGATIVE, default=1000, help="paired bootstrap rounds")
    cmp_.add_argument("--json", action="store_true",
                      help="print the comparison as JSON (rows, p-values, notes), not a table")
    cmp_.set_defaults(func=cmd_compare)
    return parser


#: the ``run`` options that describe a model file (``meerbench.models.files.model_from_file``).
MODEL_FILE_OPTIONS = ("arch", "name", "input_size", "channels", "mean", "std", "embedding_dim",
                      "flip_fusion")


def cmd_run(args: argparse.Namespace) -> int:
    import json

    from meerbench.engine.evaluate import evaluate
    from meerbench.models import load_model
    from meerbench.models.files import is_model_path
    from meerbench.settings import resolve_device

    device = str(resolve_device(args.device))  # before any model or data is loaded
    options = {key: getattr(args, key) for key in MODEL_FILE_OPTIONS
               if getattr(args, key) is not None}
    if options and not is_model_path(args.model):
        flags = ", ".join(f"--{key.replace('_', '-')}" for key in options)
        raise ConfigError(f"{flags}: for a model file given to --model; '{args.model}' is a "
                          "registered model, whose card gives them.")
    if args.weights is not None:
        options["weights"] = args.weights
    model = load_model(args.model, **options) if options else args.model
    result = evaluate(
        model, args.protocol, data=args.data, out_dir=args.out, device=device,
        batch_size=args.batch_size, workers=args.workers, precision=args.precision,
        chunk_size=args.chunk_size, progress=not args.no_progress,
    )
    from meerbench.engine.distributed import world

    if world()[0] != 0:  # under torchrun only rank 0 reports
        return 0
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
        return 0
    print(summary_table(result.to_dict()))
    print(f"\nResult: {Path(args.out) / (result.stem + '.json')}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from meerbench.engine.distributed import world
    from meerbench.train import train

    if args.loader_only:
        from meerbench.train.stream import loader_throughput

        m = loader_throughput(args.config, args.loader_only, not args.no_progress)
        print(f"loader: {m['samples']:,} samples (masked face, twin, map) in {m['seconds']:.1f} "
              f"s: {m['samples_per_s']:.0f}/s with {m['workers']} workers "
              f"({m['samples_per_s_per_worker']:.0f}/s per worker)")
        return 0
    out = train(args.config, args.out, resume=not args.no_resume, progress=not args.no_progress,
                stop_after=args.stop_after)
    if world()[0] == 0:
        print(f"trained model in {out}")
    return 0


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from meerbench.models.card_schema import get_card
    from meerbench.models.weights import fetch_model_weights, local_weights, manual_download

    card = get_card(args.model)
    how = manual_download(card)
    if how is not None:  # no URL: say what to place where; 1 until the file is there
        print(how)
        return 0 if local_weights(card) is not None else 1
    path = fetch_model_weights(args.model, sha256=args.sha256)
    print(f"{args.model}: weights at {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "protocols":
        from meerbench.protocol import describe_protocols

        rows = describe_protocols()
    elif args.what == "models":
        from meerbench.models.cards import describe_models
        from meerbench.models.restorers import RESTORERS

        rows = describe_models() + [
            (f"{name}+<model>", f"restore-then-recognize: OpenCV {name[8:].upper()} inpainting of "
             "the occluder, then any model above (e.g. inpaint-telea+fisherfaces)")
            for name in sorted(RESTORERS)]
    else:
        from meerbench.registry import DATASETS, TASKS

        registry = DATASETS if args.what == "datasets" else TASKS
        rows = [(e.name, e.description) for e in registry.entries()]
    if args.json:
        import json

        print(json.dumps([{"name": name, "description": text} for name, text in rows], indent=2))
        return 0
    width = max((len(name) for name, _ in rows), default=0)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    return 0


#: centre-cropped images named by ``prepare`` (the preparation record keeps the first 100).
SHOWN_FAILURES = 5


def cmd_prepare(args: argparse.Namespace) -> int:
    from meerbench.engine.evaluate import dataset_counts, plan_tasks, prepare_dataset, shortfalls
    from meerbench.io import write_text
    from meerbench.protocol import load_protocol, task_type

    proto = load_protocol(args.protocol)
    if proto.dataset.format == "insightface-rec":
        return prepare_record_set(proto.dataset.name, proto.published, args.data)
    with created_folder(Path(args.out)) as out:
        dataset, info = prepare_dataset(proto, args.data, not args.no_progress, args.workers)
        plans = plan_tasks(proto, dataset)
        found = dataset_counts(dataset)
        print(f"{proto.id} v{proto.version}: {dataset.name} at {dataset.root}")
        for key, value in found.items():
            published = proto.published.get(key)
            note = f" (published: {published:,})" if isinstance(published, int) else ""
            print(f"  {key:<16} {value:>8,}{note}")
        if short := shortfalls(proto, found):
            print(f"  INCOMPLETE download? found {'; '.join(short)}")
        if proto.published.get("notes") and any(
                isinstance(proto.published.get(k), int) and proto.published[k] != v
                for k, v in found.items()):
            print(f"  Differences: {proto.published['notes']}")
        stem = f"{proto.id}-v{proto.version}"
        keys = [s.key for s in dataset.samples]
        for name, plan in plans.items():  # each task's lists, in the protocol's order
            listing = task_type(name).list_file(plan, keys)
            if listing is not None:
                path = out / f"{stem}-{listing.suffix}.csv"
                write_text(path, listing.text())
                print(f"  {listing.summary} -> {path} (sha256 {(plan.sha256 or '')[:16]})")
    if "alignment" in info:
        a = info["alignment"]
        total = a["aligned"] + a["fallback_centre_crop"]
        print(f"  aligned with {a['aligner']}: {a['aligned']:,}; centre-crop fallback (no face "
              f"found): {a['fallback_centre_crop']:,} of {total:,} "
              f"({a['fallback_centre_crop'] / max(total, 1):.1%})")
        if a["found_by"]:
            print(f"  faces found by {', '.join(f'{k} {v:,}' for k, v in a['found_by'].items())}")
        if a["failures"]:
            shown = a["failures"][:SHOWN_FAILURES]
            more = f", ... ({a['fallback_centre_crop'] - len(shown):,} more)" if (
                a["fallback_centre_crop"] > len(shown)) else ""
            print(f"  centre-cropped: {', '.join(shown)}{more}")
    return 0


def prepare_record_set(name: str, published: dict[str, Any], data: str | None) -> int:
    """``prepare`` of an insightface RecordIO training set: check the layout, count (no lists:
    training sets have none)."""
    import numpy as np

    from meerbench.data.formats.recordio import ABOUT, InsightfaceRecordSet
    from meerbench.errors import DatasetError
    from meerbench.settings import data_root

    root = data_root(name, data)
    if root is None or not root.is_dir():
        raise DatasetError(f"Dataset '{name}' not found at {root or f'$MEERBENCH_DATA/{name}'}. "
                           f"{ABOUT}")
    rs = InsightfaceRecordSet(root)
    p = rs.property
    identities = len(np.unique(rs.labels))
    print(f"{name} at {root}: insightface RecordIO, {len(rs):,} images, {identities:,} "
          f"identities ({p.classes:,} in property), {p.width}x{p.height}; index from "
          f"{rs.file.index_source}")
    for key, found in (("images", len(rs)), ("identities", identities)):
        if isinstance(published.get(key), int) and published[key] != found:
            print(f"  {key}: {found:,} (published: {published[key]:,})")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from meerbench.data.formats.folder import FolderFormat
    from meerbench.data.formats.manifest import read_manifest
    from meerbench.data.formats.recordio import pack_dataset

    src = Path(args.src)
    dataset = (read_manifest(src, src.stem) if src.is_file()
               else FolderFormat().read(src, {}, src.name))
    with created_folder(Path(args.out)) as out:
        images, identities = pack_dataset(dataset, out, shard_size=args.shard_size,
                                          progress=not args.no_progress)
    shards = f" ({-(-images // args.shard_size):,} shards)" if args.shard_size else ""
    print(f"packed {images:,} images of {identities:,} identities into {out}{shards}")
    return 0


@contextlib.contextmanager
def created_folder(path: Path) -> Iterator[Path]:
    """``path`` created and checked writable for the block; if the block fails, the folders it
    created are removed again while empty, so a failed command leaves no empty output folder."""
    from meerbench.io import ensure_writable_dir

    new = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    try:
        yield ensure_writable_dir(path)
    except BaseException:
        for folder in new:
            try:
                folder.rmdir()
            except OSError:  # not empty (or not ours to remove): keep it and its parents
                break
        raise


def cmd_mask(args: argparse.Namespace) -> int:
    from meerbench.data.masking import MaskingSpec, mask_folder
    from meerbench.data.render.occluders import resolve_families

    spec = MaskingSpec(seed=args.seed, families=resolve_families(args.families),
                       landmarks=args.landmarks)
    manifest = mask_folder(Path(args.src), Path(args.out), spec, progress=not args.no_progress)
    print(f"masked images in {args.out}; manifest {manifest}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from meerbench.metrics.scorefiles import load_scores, write_table_parquet
    from meerbench.metrics.stats import unique_inverse
    from meerbench.metrics.verification import VerificationSettings, verification_report

    settings = VerificationSettings.from_dict({
        "accuracy_rule": args.accuracy_rule, "far_targets": args.far, "tar_rule": args.tar_rule,
        "eer_rule": args.eer_rule, "bootstrap": args.bootstrap, "seed": args.seed})
    # probe identities serve the bootstrap and identity folds only: without them, not parsed
    wanted = ("fold", "condition", *(("probe_id",) if args.bootstrap else ()))
    table = load_scores(args.scores, None if args.save_parquet else wanted)
    if table.folds is None and table.probe_ids is None and args.folds_by != "order" and \
            "probe_id" not in wanted:
        table = load_scores(args.scores, (*wanted, "probe_id"))
    if args.save_parquet:
        write_table_parquet(args.save_parquet, table)
    n = len(table.scores)
    folds = (table.folds if table.folds is not None
             else score_folds(table, args.folds, args.folds_by, args.scores))
    by_order = table.folds is None and (args.folds_by == "order" or table.probe_ids is None)
    groups = None if table.probe_ids is None else unique_inverse(table.probe_ids)[1]
    names, codes = (unique_inverse(table.conditions) if table.conditions is not None
                    else (np.array(["all"], object), np.zeros(n, np.int64)))
    report = {}
    for c in sorted(range(len(names)), key=lambda c: int(np.argmax(codes == c))):  # file order
        sel, cond = codes == c, str(names[c])
        warn_single_class_folds(args.scores, cond, folds[sel], table.labels[sel], by_order)
        report[cond] = verification_report(table.scores[sel], table.labels[sel], folds[sel],
                                           settings, None if groups is None else groups[sel],
                                           progress=not args.no_progress)
    result = {"scores": str(args.scores), "settings": settings.to_dict(),
              "verification": report}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(summary_table({"model": {"name": Path(args.scores).name},
                             "protocol": {"id": "score file", "version": "-"},
                             "metrics": {"verification": report}}))
    return 0


def score_folds(table: ScoreTable, k: int, by: str | None, path: str) -> np.ndarray:
    """Fold ids for a score file without a fold column: ``identity`` deals the sorted probe
    identities round-robin into ``k`` folds (every pair in its probe identity's fold, so no
    probe identity spans folds); ``order`` cuts the rows into ``k`` contiguous folds. Default:
    identity when the file names identities."""
    import numpy as np

    from meerbench.metrics.stats import unique_inverse

    if by is None:
        by = "order" if table.probe_ids is None else "identity"
    if by == "order":
        n = len(table.scores)
        return np.arange(n) * k // n
    if table.probe_ids is None:
        raise ConfigError(f"{path}: --folds-by identity needs identities (a probe_id column, or "
                          "a bob score file); this file has none. Use --folds-by order.")
    identities, index = unique_inverse(table.probe_ids)  # sorted
    return (np.arange(len(identities)) % k)[index]


def warn_single_class_folds(path: str, condition: str, folds: np.ndarray, labels: np.ndarray,
                            by_order: bool) -> None:
    """Say on stderr when a fold holds one class only: it tests one kind of pair, and the
    threshold applied to it is learned from the other folds' skewed mix."""
    import numpy as np

    from meerbench.metrics.stats import unique_inverse

    ids, index = unique_inverse(folds)
    genuine = np.bincount(index, weights=labels.astype(float), minlength=len(ids))
    pairs = np.bincount(index, minlength=len(ids))
    single = int(((genuine == 0) | (genuine == pairs)).sum())
    if single:
        where = "" if condition == "all" else f" in condition {condition}"
        advice = (" (contiguous folds of a file sorted by label?); give the file a fold column"
                  " or identities for --folds-by identity" if by_order else "")
        print(f"meerbench: warning: {path}: {single} of {len(ids)} folds{where} hold pairs of one "
              f"class only (all genuine or all impostor), so k-fold accuracy is unreliable"
              f"{advice}.", file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> int:
    from meerbench.report.commands import report_command

    return _emit(report_command(args.paths, args.out, args.format, args.reference, args.rounds,
                                plots=not args.no_plots, metrics=args.metrics,
                                conditions=args.conditions))


def cmd_export(args: argparse.Namespace) -> int:
    from meerbench.report.frame import export_results

    out = export_results(args.paths, Path(args.out), args.format)
    print(f"wrote {out}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from meerbench.report.commands import leaderboard_command

    out = None if args.check else args.out
    return _emit(leaderboard_command(args.results, out=out, check=args.check))


def cmd_compare(args: argparse.Namespace) -> int:
    from meerbench.report.commands import compare_command

    return _emit(compare_command(args.a, args.b, rounds=args.rounds, as_json=args.json))


def _emit(outcome: tuple[int, str]) -> int:
    code, text = outcome
    print(text, end="" if text.endswith("\n") else "\n")
    return code


def summary_table(result: dict[str, Any]) -> str:
    """A compact plain-text table of the headline numbers of one Result: each task's lines."""
    from meerbench.tasks import sections

    lines = [f"{result['model']['name']} on {result['protocol']['id']} "
             f"v{result['protocol']['version']}"]
    for task, section in sections(result["metrics"]):
        lines += task.summary(section)
    if t := result.get("timings"):
        cache = " (cache hit)" if t.get("embed_cache_hit") else ""
        lines.append(f"timings  embed {t['embed']:.2f}s{cache}, total {t['total']:.2f}s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
