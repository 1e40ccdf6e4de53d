"""Reproduce a table of the Cfd-CAM or LT-Grad-CAM paper: run every row, write the table.

    python experiments/run_recipe.py --list
    python experiments/run_recipe.py cfdcam_table1 --data-root /data/BraTS2021 \
        --tcga-root /data/kaggle_3m
    python experiments/run_recipe.py ltgrad_table3 --data-root /data/VOCdevkit \
        --vgg-weights /weights/vgg16-397923af.pth
    python experiments/run_recipe.py ltgrad_fig4 --demo
    python experiments/run_recipe.py ltgrad_delta_select --demo --launcher submitit_local
    python experiments/run_recipe.py ltgrad_fig4 --data-root /data/KolektorSDD2 \
        --vgg-weights /weights/vgg16-397923af.pth --launcher submitit_slurm \
        --launcher-option partition=gpu
    python experiments/run_recipe.py ltgrad_fig4 --data-root /data/KolektorSDD2 \
        --vgg-weights /weights/vgg16-397923af.pth --collect
    python experiments/run_recipe.py demo_table1 --seeds 3

Tables go to experiments/results/<recipe>.md/.csv (demo: experiments/results/demo/).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `experiments` and `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.engine import (  # noqa: E402
    REPO_ROOT,
    RecipeConfigError,
    Settings,
    collect_recipe,
    mode_folder,
    run_recipe,
    summary_line,
)
from experiments.launch import LAUNCHERS  # noqa: E402
from experiments.recipes import DATASETS, RECIPES  # noqa: E402
from experiments.select_delta import NAME as SELECTION  # noqa: E402
from experiments.select_delta import TITLE as SELECTION_TITLE  # noqa: E402
from experiments.select_delta import TRAIN, run_selection  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run the jobs of a paper table (a recipe) and write the table beside the "
        "paper's numbers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="recipes:\n"
        + "\n".join(f"  {name:15s} {recipe.title}" for name, recipe in RECIPES.items())
        + f"\n  {SELECTION:15s} {SELECTION_TITLE}",
    )
    parser.add_argument("recipes", nargs="*", help="recipe names, or 'all'")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.add_argument(
        "--data-root", help="root of the recipe's main dataset (BraTS, VOC or KSDD2)"
    )
    for dataset in DATASETS:
        flags = [f"--{dataset.replace('_', '-')}-root"] + (
            ["--tcga-root"] if dataset == "tcga_lgg" else []
        )
        parser.add_argument(*flags, dest=f"{dataset}_root", help=f"root of the {dataset} dataset")
    parser.add_argument(
        "--vgg-weights", help="local ImageNet VGG16 state_dict for the LT-Grad-CAM recipes"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="the datasets' demos (generated data in the real formats; BraTS, TCGA-LGG, VOC "
        "and KSDD2: data=demo, demo_tcga, demo_voc and demo_ksdd2 with budgets a classifier "
        "learns from); "
        "tables go to results/demo/",
    )
    parser.add_argument(
        "--plumbing",
        action="store_true",
        help="every dataset generated small with tiny budgets (1 epoch, 64 px, 6 images): "
        "checks that the rows run, numbers mean nothing; tables go to results/plumbing/",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only rows whose key matches (fnmatch, repeatable; see --dry-run for keys)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for every job, applied last (repeatable), e.g. trainer=gpu",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="run folders (default outputs/experiments, demo outputs/experiments/demo)",
    )
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "experiments" / "results")
    parser.add_argument("--rerun", action="store_true", help="do not reuse finished jobs")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="run every row with N seeds (the config's seed + 0..N-1; seed 0 is the one-seed "
        "run, reused), each training its own classifier; tables show mean ± std over seeds",
    )
    parser.add_argument(
        "--launcher",
        choices=list(LAUNCHERS),
        help="run the rows as parallel jobs of this Hydra launcher (SLURM job array, local "
        "processes, or basic: one after the other) and wait for them; default: in this process",
    )
    parser.add_argument(
        "--launcher-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hydra.launcher setting (repeatable), e.g. partition=gpu, timeout_min=600",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: write the tables from the run folders of earlier (launched) jobs",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="compose and validate every job, print the equivalent commands, run nothing",
    )
    return parser


def settings_for(args: argparse.Namespace, primary: str) -> Settings:
    roots = {
        dataset: getattr(args, f"{dataset}_root")
        for dataset in DATASETS
        if getattr(args, f"{dataset}_root")
    }
    if args.data_root and primary not in roots:
        roots[primary] = args.data_root
    mode = Settings(demo=args.demo or args.plumbing, plumbing=args.plumbing)
    runs_dir = args.runs_dir or REPO_ROOT / "outputs" / "experiments" / mode_folder(mode)
    return Settings(
        roots=roots,
        runs_dir=runs_dir,
        results_dir=args.results_dir,
        demo=mode.demo,
        plumbing=mode.plumbing,
        vgg_weights=args.vgg_weights,
        extra=tuple(args.override),
        only=tuple(args.only),
        rerun=args.rerun,
        launcher=args.launcher,
        launcher_options=tuple(args.launcher_option),
        seeds=args.seeds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, recipe in RECIPES.items():
            print(f"{name:15s} {len(recipe.jobs()):3d} jobs  {recipe.title}")
        return 0
    names = list(RECIPES) if args.recipes == ["all"] else args.recipes
    if not names:
        parser.error("name a recipe (or 'all'); --list shows them")
    unknown = [name for name in names if name not in RECIPES and name != SELECTION]
    if unknown:
        known = ", ".join([*RECIPES, SELECTION])
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; known: {known}")
    if args.launcher_option and not args.launcher:
        parser.error("--launcher-option needs --launcher")
    if args.seeds < 1:
        parser.error("--seeds needs at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in names:
        if name == SELECTION:
            outcomes, written = run_selection(
                settings_for(args, RECIPES[TRAIN].primary), args.dry_run, args.collect
            )
            if not args.dry_run:
                print(summary_line(dataclasses.replace(RECIPES[TRAIN], name=SELECTION), outcomes))
                for path in written:
                    print(f"  wrote {path}")
            continue
        recipe = RECIPES[name]
        settings = settings_for(args, recipe.primary)
        try:
            if args.collect:
                outcomes, written = collect_recipe(recipe, settings)
            else:
                outcomes, written = run_recipe(recipe, settings, args.dry_run)
        except RecipeConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if not args.dry_run:
            print(summary_line(recipe, outcomes))
            for path in written:
                print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
