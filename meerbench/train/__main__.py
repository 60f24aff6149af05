"""``python -m meerbench.train CONFIG [--out DIR]``: the same as ``meerbench train``; works under
``torchrun`` (e.g. ``torchrun --nproc_per_node=8 -m meerbench.train configs/train/meer-r50.yaml``).
"""

from __future__ import annotations

import argparse
import sys

from meerbench.errors import MeerbenchError
from meerbench.train import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meerbench.train", description=__doc__)
    parser.add_argument("config", help="training YAML (configs/train/*.yaml)")
    parser.add_argument("--out", help="output folder (default: runs/<name>)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this step")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        out = train(args.config, args.out, resume=not args.no_resume,
                    progress=not args.no_progress, stop_after=args.stop_after)
    except MeerbenchError as exc:
        print(f"meerbench: error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
