"""Command line: write a held-out phantom set, or draw a preview of one.

python -m experiments.heldout brats OUT --cases 24 --normal 8 --seed 1 [--shape 240 240 155]
python -m experiments.heldout kaggle3m OUT --patients 20 --seed 1 [--size 256]
python -m experiments.heldout ksdd2 OUT --train 480 --test 160 --seed 1
python -m experiments.heldout preview PNG --brats DIR --kaggle3m DIR
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.heldout",
        description="Held-out phantoms for evaluation only (see experiments/heldout/__init__.py).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    workers = min(os.cpu_count() or 1, 2)

    brats = sub.add_parser("brats", help="BraTS 2021 layout")
    brats.add_argument("out")
    brats.add_argument("--cases", type=int, default=24)
    brats.add_argument("--normal", type=int, default=8, help="cases without tumour")
    brats.add_argument("--seed", type=int, default=1)
    brats.add_argument(
        "--shape", type=int, nargs=3, default=[240, 240, 155],
        help="voxels over the 240 x 240 x 155 mm field of view (BraTS: 240 240 155)",
    )  # fmt: skip
    brats.add_argument("--workers", type=int, default=workers)

    kaggle = sub.add_parser("kaggle3m", help="TCGA-LGG kaggle_3m layout")
    kaggle.add_argument("out")
    kaggle.add_argument("--patients", type=int, default=20)
    kaggle.add_argument("--seed", type=int, default=1)
    kaggle.add_argument("--size", type=int, default=256, help="slice side in pixels (256)")
    kaggle.add_argument("--workers", type=int, default=workers)

    ksdd2 = sub.add_parser("ksdd2", help="KolektorSDD2 layout (surfaces, 0/255 defect masks)")
    ksdd2.add_argument("out")
    ksdd2.add_argument("--train", type=int, default=480, help="images in train/")
    ksdd2.add_argument("--test", type=int, default=160, help="images in test/")
    ksdd2.add_argument("--seed", type=int, default=1)
    ksdd2.add_argument("--workers", type=int, default=workers)

    preview = sub.add_parser("preview", help="a figure of tumour slices of both sets")
    preview.add_argument("png")
    preview.add_argument("--brats", required=True)
    preview.add_argument("--kaggle3m", required=True)

    args = parser.parse_args(argv)
    start = time.monotonic()
    if args.command == "brats":
        from experiments.heldout.brats import generate_brats

        ids = generate_brats(
            args.out, cases=args.cases, normal=args.normal, seed=args.seed,
            shape=args.shape, workers=args.workers,
        )  # fmt: skip
        print(f"{len(ids)} cases in {args.out} ({time.monotonic() - start:.0f} s)")
    elif args.command == "kaggle3m":
        from experiments.heldout.kaggle3m import generate_kaggle3m

        names = generate_kaggle3m(
            args.out, patients=args.patients, seed=args.seed, size=args.size,
            workers=args.workers,
        )  # fmt: skip
        print(f"{len(names)} patients in {args.out} ({time.monotonic() - start:.0f} s)")
    elif args.command == "ksdd2":
        from experiments.heldout.ksdd2 import generate_ksdd2

        names = generate_ksdd2(
            args.out, train=args.train, test=args.test, seed=args.seed, workers=args.workers
        )
        counts = ", ".join(f"{len(v)} in {k}/" for k, v in names.items())
        print(f"{counts} of {args.out} ({time.monotonic() - start:.0f} s)")
    else:
        from experiments.heldout.preview import draw_preview

        draw_preview(args.png, args.brats, args.kaggle3m)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
