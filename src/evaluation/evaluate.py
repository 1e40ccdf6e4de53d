"""An evaluation that runs a network: the test loop under the pipeline's Trainer, its
results gathered over DDP processes and its maps shards merged, then the result files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist
from torch.utils.data import DataLoader

from src.evaluation.cam_module import CAMEvaluationModule
from src.evaluation.image_result import ImageResult
from src.evaluation.map_store import MAPS_FILE, merge_shards
from src.evaluation.masks import MaskMaker
from src.evaluation.publish import publish
from src.evaluation.settings import EvalSettings, Method
from src.evaluation.summary import build_summary
from src.evaluation.volumes import CaseStacker

#: Builds the test-loop module from the mask maker and the maps file it streams to.
ModuleFactory = Callable[[MaskMaker, Path], CAMEvaluationModule]


def evaluate(
    trainer: pl.Trainer,
    build_module: ModuleFactory,
    loader: DataLoader,
    method: Method,
    settings: EvalSettings,
    info: dict[str, Any],
    wandb_run: Any | None = None,
) -> dict[str, Any]:
    """Run the test loop over `loader` and write the results of the run; returns the summary
    (empty on the DDP processes other than rank 0, which write nothing). `info` goes into
    `summary.json` as it is (what produced the maps: layers, options, checkpoint);
    `trainer` must have `inference_mode=False` (gradient CAMs need autograd)."""
    maps_path = settings.output_dir / MAPS_FILE
    evaluated = run_test_loop(trainer, build_module, loader, method, settings, maps_path)
    if evaluated is None:
        return {}
    results, cases = evaluated
    summary = build_summary(results, settings, method, info, cases)
    publish(results, summary, settings, method, loader.dataset, maps_path, wandb_run, cases)
    return summary


def run_test_loop(
    trainer: pl.Trainer,
    build_module: ModuleFactory,
    loader: DataLoader,
    method: Method,
    settings: EvalSettings,
    maps_path: Path,
) -> tuple[list[ImageResult], CaseStacker | None] | None:
    """Every image's result and the per-case stack (None when the images are not slices of
    volumes), on rank 0 (None on the other DDP processes): the mask maker lives as long as
    the loop, and a failed loop leaves no maps file."""
    with method.mask_maker(settings.mask_workers) as mask_maker:
        module = build_module(mask_maker, maps_path)
        try:
            trainer.test(module, dataloaders=loader, verbose=False)
        finally:
            module.close_maps(complete=False)  # no-op after a complete loop
    results, cases = module.results, module.cases
    if trainer.world_size > 1:
        results = gather_results(results)
        cases = gather_cases(cases)
        if trainer.is_global_zero:
            merge_shards(maps_path, trainer.world_size)
        trainer.strategy.barrier("eval-merged")
        if not trainer.is_global_zero:
            return None
    return results, cases


def gather_results(results: Sequence[ImageResult]) -> list[ImageResult]:
    """All processes' results, each image once (a distributed sampler repeats a few images so
    that every process gets the same number)."""
    shards: list[list[ImageResult] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, list(results))
    unique: dict[str, ImageResult] = {}
    for shard in shards:
        for result in shard or []:
            unique.setdefault(result.id, result)
    return list(unique.values())


def gather_cases(cases: CaseStacker | None) -> CaseStacker | None:
    """All processes' cases in one stack: a case's slices are spread over the processes, so
    the cases none finished alone are completed here from their packed slices."""
    if cases is None:
        return None
    shards: list[CaseStacker | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, cases)
    total = CaseStacker(cases.volumes, cases.empty_hd95)
    for shard in shards:
        if shard is not None:
            total.merge(shard)
    return total
