"""The ``meerbench`` command: run, list, report.

User errors (unknown names, bad files, missing data, unwritable folders) print one paragraph on
stderr and exit with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from meerbench.errors import MeerbenchError
from meerbench.settings import PRECISIONS

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


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (exit 2) in place of usage + error."""

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


POSITIVE = whole_number(1)
NON_NEGATIVE = whole_number(0)
#: DataLoader worker processes: each is a process, so an absurd count is refused, not forked.
WORKERS = whole_number(0, 256)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="meerbench", description="Benchmark masked face recognition and restoration."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate a model on a protocol")
    run.add_argument("--model", default="meer", help="registered model name (default: meer)")
    run.add_argument("--weights", help="checkpoint file to load instead of the card's weights")
    run.add_argument("--protocol", default="synthmask", help="protocol name or YAML path")
    run.add_argument("--data", help="dataset folder (default: $MEERBENCH_DATA/<dataset>)")
    run.add_argument("--out", default="results", help="folder for Result JSON and scores")
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: cuda when available)")
    run.add_argument("--batch-size", type=POSITIVE, default=64)
    run.add_argument("--workers", type=WORKERS, default=0,
                     help="DataLoader worker processes (0 .. 256)")
    run.add_argument("--precision", default="auto", choices=PRECISIONS)
    run.add_argument("--chunk-size", type=POSITIVE, default=2048,
                     help="images per cache chunk (the unit of resume and of torchrun sharding)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="list registered models, protocols, dataset formats or "
                         "task types")
    lst.add_argument("what", choices=("models", "protocols", "datasets", "tasks"))
    lst.set_defaults(func=cmd_list)

    prep = sub.add_parser("prepare", help="check a dataset, prepare its faces, write its lists")
    prep.add_argument("protocol", help="protocol name or YAML path")
    prep.add_argument("--data", help="dataset folder (default: $MEERBENCH_DATA/<dataset>)")
    prep.add_argument("--out", default="lists", help="folder for the generated lists")
    prep.add_argument("--no-progress", action="store_true")
    prep.set_defaults(func=cmd_prepare)

    msk = sub.add_parser("mask", help="put reproducible synthetic masks on a folder of faces")
    msk.add_argument("src", help="folder of face images (searched recursively)")
    msk.add_argument("--out", required=True, help="new folder for masked images and manifest")
    msk.add_argument("--seed", type=NON_NEGATIVE, default=0)
    msk.add_argument("--families", default="seen",
                     help="'seen', 'unseen' or a comma list (surgical,cloth,n95,kn95,fabric,"
                          "scarf,hand,gaiter)")
    msk.add_argument("--landmarks", default="auto", choices=("auto", "template", "dlib68"),
                     help="auto: dlib 68 points when installed and a face is found, else the "
                          "ArcFace template of an aligned face")
    msk.add_argument("--no-progress", action="store_true")
    msk.set_defaults(func=cmd_mask)

    met = sub.add_parser("metrics",
                         help="verification metrics of any score file (CSV or bob 4-column)")
    met.add_argument("--scores", required=True, help="CSV with header score,label[,...] or bob "
                     "4-column 'ref_subject probe_subject probe_key score'")
    met.add_argument("--json", action="store_true", help="print the full result as JSON")
    met.add_argument("--accuracy-rule", default="insightface", choices=("insightface", "exact"))
    met.add_argument("--tar-rule", default="floor", choices=("floor", "nearest", "interp"))
    met.add_argument("--eer-rule", default="min_gap", choices=("min_gap", "interp"))
    met.add_argument("--far", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3, 1e-4],
                     help="FAR targets for TAR@FAR")
    met.add_argument("--folds", type=whole_number(2), default=10,
                     help="contiguous folds for k-fold accuracy when the file has no fold column")
    met.add_argument("--bootstrap", type=NON_NEGATIVE, default=1000,
                     help="bootstrap rounds (0: no CIs)")
    met.add_argument("--seed", type=NON_NEGATIVE, default=0)
    met.set_defaults(func=cmd_metrics)

    trn = sub.add_parser("train",
                         help="train MEER or a baseline from a YAML config (torchrun-ready)")
    trn.add_argument("--config", required=True, help="training YAML (configs/train/*.yaml)")
    trn.add_argument("--out", help="output folder (default: runs/<name>)")
    trn.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    trn.add_argument("--stop-after", type=POSITIVE, help="stop (with a checkpoint) after this step")
    trn.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    trn.set_defaults(func=cmd_train)

    wts = sub.add_parser("weights", help="download a model's weights into the cache")
    wts_sub = wts.add_subparsers(dest="action", required=True)
    fetch = wts_sub.add_parser("fetch", help="download, check sha256, place atomically")
    fetch.add_argument("model", help="model card name (see `meerbench list models`)")
    fetch.add_argument("--sha256", help="expected sha256 when the card does not record one")
    fetch.set_defaults(func=cmd_weights_fetch)

    rep = sub.add_parser("report", help="tables (md, LaTeX, CSV, HTML) and plots from Results")
    rep.add_argument("paths", nargs="+", help="Result JSON files or folders of them")
    rep.add_argument("--out", help="folder for tables and plots (default: print Markdown)")
    rep.add_argument("--format", nargs="+", default=["md", "latex", "csv", "html"],
                     choices=("md", "latex", "csv", "html"))
    rep.add_argument("--reference", help="model that significance markers compare against")
    rep.add_argument("--rounds", type=NON_NEGATIVE, default=1000, help="paired bootstrap rounds")
    rep.add_argument("--no-plots", action="store_true")
    rep.set_defaults(func=cmd_report)

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
    cmp_.add_argument("--rounds", type=NON_NEGATIVE, default=1000)
    cmp_.set_defaults(func=cmd_compare)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from meerbench.engine.evaluate import evaluate
    from meerbench.models import load_model
    from meerbench.settings import resolve_device

    device = str(resolve_device(args.device))  # before any model or data is loaded
    model = load_model(args.model, weights=args.weights) if args.weights else args.model
    result = evaluate(
        model, args.protocol, data=args.data, out_dir=args.out, device=device,
        batch_size=args.batch_size, workers=args.workers, precision=args.precision,
        chunk_size=args.chunk_size, progress=not args.no_progress,
    )
    from meerbench.engine.distributed import world

    if world()[0] != 0:  # under torchrun only rank 0 reports
        return 0
    print(summary_table(result.to_dict()))
    print(f"\nResult: {Path(args.out) / (result.stem + '.json')}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from meerbench.engine.distributed import world
    from meerbench.train import train

    out = train(args.config, args.out, resume=not args.no_resume, progress=not args.no_progress,
                stop_after=args.stop_after)
    if world()[0] == 0:
        print(f"trained model in {out}")
    return 0


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from meerbench.models.weights import fetch_model_weights

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
    width = max((len(name) for name, _ in rows), default=0)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from meerbench.engine.evaluate import prepare_dataset
    from meerbench.io import ensure_writable_dir, write_text
    from meerbench.protocol import load_protocol, task_type

    proto = load_protocol(args.protocol)
    out = ensure_writable_dir(Path(args.out))
    dataset, info = prepare_dataset(proto, args.data, not args.no_progress)
    found = {
        "identities": len({s.identity for s in dataset.samples}),
        "images_masked": sum(s.masked for s in dataset.samples),
        "images_unmasked": sum(not s.masked for s in dataset.samples),
    }
    print(f"{proto.id} v{proto.version}: {dataset.name} at {dataset.root}")
    for key, value in found.items():
        published = proto.published.get(key)
        note = f" (published: {published:,})" if isinstance(published, int) else ""
        print(f"  {key:<16} {value:>8,}{note}")
    if proto.published.get("notes") and any(
            isinstance(proto.published.get(k), int) and proto.published[k] != v
            for k, v in found.items()):
        print(f"  Differences: {proto.published['notes']}")
    stem = f"{proto.id}-v{proto.version}"
    keys = [s.key for s in dataset.samples]
    for name, config in proto.tasks.items():  # each task's lists, in the protocol's order
        plan = task_type(name).plan(config, dataset)
        listing = task_type(name).list_file(plan, keys)
        if listing is not None:
            path = out / f"{stem}-{listing.suffix}.csv"
            write_text(path, listing.text())
            print(f"  {listing.summary} -> {path} (sha256 {(plan.sha256 or '')[:16]})")
    if "alignment" in info:
        a = info["alignment"]
        print(f"  aligned with {a['aligner']}: {a['aligned']:,}; centre-crop fallback: "
              f"{a['fallback_centre_crop']:,}")
    return 0


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

    from meerbench.metrics.scorefiles import load_scores
    from meerbench.metrics.verification import VerificationSettings, verification_report

    table = load_scores(args.scores)
    settings = VerificationSettings.from_dict({
        "accuracy_rule": args.accuracy_rule, "far_targets": args.far, "tar_rule": args.tar_rule,
        "eer_rule": args.eer_rule, "bootstrap": args.bootstrap, "seed": args.seed})
    n = len(table.scores)
    folds = table.folds if table.folds is not None else np.arange(n) * args.folds // n
    groups = None if table.probe_ids is None else np.unique(table.probe_ids, return_inverse=True)[1]
    conditions = table.conditions if table.conditions is not None else np.full(n, "all", object)
    report = {}
    for cond in dict.fromkeys(conditions.tolist()):
        sel = conditions == cond
        report[cond] = verification_report(table.scores[sel], table.labels[sel], folds[sel],
                                           settings, None if groups is None else groups[sel])
    result = {"scores": str(args.scores), "settings": settings.to_dict(),
              "verification": report}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(summary_table({"model": {"name": Path(args.scores).name},
                             "protocol": {"id": "score file", "version": "-"},
                             "metrics": {"verification": report}}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from meerbench.report.commands import report_command

    return _emit(report_command(args.paths, args.out, args.format, args.reference, args.rounds,
                                plots=not args.no_plots))


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from meerbench.report.commands import leaderboard_command

    out = None if args.check else args.out
    return _emit(leaderboard_command(args.results, out=out, check=args.check))


def cmd_compare(args: argparse.Namespace) -> int:
    from meerbench.report.commands import compare_command

    return _emit(compare_command(args.a, args.b, rounds=args.rounds))


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
