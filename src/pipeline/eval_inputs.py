"""What the evaluation gets from a run's config: its settings, its images and, for a CAM run,
its test loop.

`src/evaluation` reads no Hydra config; this module is where the `eval` and `cam` groups
become the plain values it takes. Both methods (CAM and the supervised U-Net) build their
evaluation from here, so their rows score the same images under the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from src.evaluation.cam_module import CAMEvaluationModule
from src.evaluation.evaluate import ModuleFactory
from src.evaluation.faithfulness import Faithfulness
from src.evaluation.masks import MaskMaker
from src.evaluation.sampling import limited_loader
from src.evaluation.settings import EvalSettings, Method
from src.evaluation.volumes import Volumes, case_of


def eval_loader(cfg: DictConfig, datamodule: pl.LightningDataModule) -> DataLoader:
    """The evaluation images (`eval.split`, `eval.limit`, `eval.positive_fraction`): the same
    for every method on the same data, so their rows compare the same slices."""
    loader = datamodule.eval_dataloader(cfg.eval.split, batch_size=cfg.eval.batch_size)
    if len(loader.dataset) == 0:
        raise RuntimeError(f"The {cfg.eval.split} split is empty: nothing to evaluate")
    return limited_loader(
        loader,
        cfg.eval.batch_size,
        cfg.eval.get("limit"),
        cfg.eval.get("positive_fraction"),
        cfg.eval.get("normal_area_max"),
    )


def evaluation_settings(cfg: DictConfig, datamodule: pl.LightningDataModule) -> EvalSettings:
    """Everything the evaluation reads from the config, in one place: the `eval` group, the
    headline convention (`eval.metrics`/`eval.miou`, null = the DataModule's own) and the
    DataModule's task."""
    return EvalSettings(
        output_dir=Path(cfg.paths.output_dir),
        split=cfg.eval.split,
        task=datamodule.task,
        empty_hd95=cfg.eval.empty_hd95,
        normal_area_max=cfg.eval.get("normal_area_max"),
        mask_workers=cfg.eval.mask_workers,
        figure_images=cfg.eval.figure_images,
        metrics=cfg.eval.get("metrics") or datamodule.eval_metrics,
        miou=cfg.eval.get("miou") or datamodule.eval_miou,
        label_gate=_or_default(cfg.eval.get("label_gate"), datamodule.eval_label_gate),
        target=datamodule.class_names[0] if datamodule.task == "binary" else "object",
        faithfulness=faithfulness_settings(cfg),
        volumes=case_volumes(datamodule, cfg.eval.split),
    )


def case_volumes(datamodule: pl.LightningDataModule, split: str) -> Volumes | None:
    """The split's cases and their voxel spacing when its images are slices of volumes
    (the DataModule's `volume_unit`; BraTS, TCGA-LGG), else None: no per-case metrics."""
    unit = getattr(datamodule, "volume_unit", None)
    if unit is None:
        return None
    slices: dict[str, int] = {}
    for image_id in datamodule.dataset(split).ids:
        case = case_of(image_id)
        slices[case] = slices.get(case, 0) + 1
    spacing = {case: datamodule.voxel_spacing(case) for case in slices}
    return Volumes(slices, spacing, unit)


def faithfulness_settings(cfg: DictConfig) -> Faithfulness | None:
    """`eval.faithfulness*` as the evaluation takes them; None when not measured."""
    if not cfg.eval.get("faithfulness"):
        return None
    return Faithfulness(
        steps=cfg.eval.faithfulness_steps,
        baseline=cfg.eval.faithfulness_baseline,
        chunk=cfg.eval.faithfulness_chunk,
    )


def _or_default(value: Any, default: Any) -> Any:
    """A config value, or the DataModule's convention where the config says null."""
    return default if value is None else value


def cam_method(cfg: DictConfig) -> Method:
    """The CAM method of `cfg.cam` and its mask rule (`cam.mask`, `cam.threshold`)."""
    return Method(cfg.cam.name, cfg.cam.mask, cfg.cam.get("threshold"))


def cam_module_factory(
    cfg: DictConfig,
    net: torch.nn.Module,
    target_layers: list[str],
    options: dict[str, Any],
    settings: EvalSettings,
) -> ModuleFactory:
    """The CAM test loop of `cfg.cam` on the classifier `net`."""

    def build(mask_maker: MaskMaker, maps_path: Path) -> CAMEvaluationModule:
        return CAMEvaluationModule(
            net,
            cfg.cam.name,
            target_layers,
            options,
            mask_maker,
            maps_path,
            task=settings.task,
            empty_hd95=settings.empty_hd95,
            normal_area_max=settings.normal_area_max,
            label_gate=settings.label_gate,
            faithfulness=settings.faithfulness,
            volumes=settings.volumes,
        )

    return build
