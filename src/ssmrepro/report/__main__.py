"""``python -m ssmrepro.report --scale smoke [--tables workflow/tables] [--results results] [--out reports]``"""

from __future__ import annotations

import argparse
import sys

from ..tables import TableError
from . import render


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssmrepro.report", description=__doc__)
    ap.add_argument("--scale", default="smoke")
    ap.add_argument("--tables", default="workflow/tables")
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--runs", default=None, help="where run logs (log.jsonl) are, for training curves")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    try:
        index = render(args.tables, args.results, args.out, args.scale, runs_dir=args.runs,
                       plots_enabled=not args.no_plots)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
