"""Command-line glue for ``ssmrepro fetch`` and ``ssmrepro build-embedded``.

``ssmrepro.cli`` adds these with ``register(subparsers)``; standalone:
``python -m ssmrepro.data.cli fetch gopro --from ~/Downloads/GOPRO_Large.zip``.
"""

from __future__ import annotations

import argparse
import json
import sys


def _fetch(args) -> int:
    from .fetch import FetchError, fetch
    from .recipes import RecipeError

    try:
        r = fetch(args.name, root=args.root, from_path=args.from_path, url=args.url,
                  dvc=not args.no_dvc, keep_archives=args.keep_archive)
    except (FetchError, RecipeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"dataset": r.name, "path": str(r.path), "data_version": r.version,
                      "counts": r.counts, "dvc_file": str(r.dvc_file) if r.dvc_file else None}))
    return 0


def _build(args) -> int:
    from .embedded import EMBEDDED, build_embedded

    names = EMBEDDED if args.name == "all" else (args.name,)
    for n in names:
        try:
            r = build_embedded(n, root=args.root, size=args.size, count=args.count,
                               test_count=args.test_count, seed=args.seed,
                               masks_per_bin=args.masks_per_bin, dvc=args.dvc)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"dataset": r.name, "path": str(r.path), "data_version": r.version,
                          "counts": r.counts}))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("fetch", help="download/verify/extract a dataset into data/<name>")
    p.add_argument("name")
    p.add_argument("--root", default="data")
    p.add_argument("--from", dest="from_path", default=None,
                   help="an archive downloaded by hand (or a folder holding the recipe's archives)")
    p.add_argument("--url", default=None, help="override the recipe's URL (single-archive recipes)")
    p.add_argument("--no-dvc", action="store_true", help="do not run `dvc add data/<name>`")
    p.add_argument("--keep-archive", action="store_true", help="keep downloads in data/.cache")
    p.set_defaults(func=_fetch)

    b = subparsers.add_parser("build-embedded", help="build an embedded dataset (offline, deterministic)")
    b.add_argument("name", help="embedded_inpainting, embedded_deblur, embedded_defocus or all")
    b.add_argument("--root", default="data")
    b.add_argument("--size", type=int, default=None)
    b.add_argument("--count", type=int, default=None, help="training images")
    b.add_argument("--test-count", type=int, default=None)
    b.add_argument("--masks-per-bin", type=int, default=None)
    b.add_argument("--seed", type=int, default=None)
    b.add_argument("--dvc", action="store_true", help="also `dvc add` the result")
    b.set_defaults(func=_build)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ssmrepro-data")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
