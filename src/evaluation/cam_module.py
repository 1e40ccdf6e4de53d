"""CAM evaluation as a Lightning test loop: CAM engine -> mask -> per-image metrics.

Runs under `Trainer(inference_mode=False)`: gradient CAMs need autograd, which a Lightning
test loop disables by default. Gradients are switched on inside the step only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from src.cams import build_cam
from src.evaluation.faithfulness import Faithfulness, faithfulness_metrics
from src.evaluation.image_result import (
    ImageResult,
    binary_result,
    class_map_id,
    gated_mask,
    multilabel_result,
)
from src.evaluation.items import truncated_uint8_rgb
from src.evaluation.map_store import MapWriter, shard_path
from src.evaluation.masks import MaskMaker, voc_mask
from src.evaluation.metrics import AUTHORS_EMPTY_HD95
from src.evaluation.volumes import CaseStacker, Volumes


class CAMEvaluationModule(pl.LightningModule):
    """Computes CAMs per test image, turns them into a mask and scores it against the GT.

    Binary classifiers (one logit): one map per image, masks by `mask_maker` (DenseCRF in a
    worker pool, Otsu, threshold). Multi-label classifiers (VOC): one map per class in the
    image label, combined by the VOC rule (docs/masks.md). Which of the two is the
    DataModule's `task`, given here; logits of the other shape are an error. Results are kept
    in `results` (one `ImageResult` per image) and the maps are streamed to `maps_path`.
    With `faithfulness` (binary only), each map's faithfulness to the classifier is measured
    on the device while the batch is there (docs/metrics.md). With `volumes` (binary only),
    the scored masks are stacked per case into `cases` for the per-case metrics.
    """

    def __init__(
        self,
        net: nn.Module,
        cam_name: str,
        target_layers: list[str],
        cam_options: dict[str, Any],
        mask_maker: MaskMaker,
        maps_path: str | Path,
        *,
        task: str,
        empty_hd95: float | None = AUTHORS_EMPTY_HD95,
        normal_area_max: float | None = None,
        label_gate: bool = False,
        faithfulness: Faithfulness | None = None,
        volumes: Volumes | None = None,
    ) -> None:
        """`task` is the DataModule's (`binary` | `multilabel`); `empty_hd95`,
        `normal_area_max` and `label_gate` are the scoring options of `binary_result`."""
        super().__init__()
        if task not in ("binary", "multilabel"):
            raise ValueError(f"task must be 'binary' or 'multilabel', got {task!r}")
        if faithfulness is not None and task != "binary":
            raise ValueError("eval.faithfulness needs a binary (one-logit) task")
        self.faithfulness = faithfulness
        if volumes is not None and task != "binary":
            raise ValueError("per-case metrics need a binary task")
        self.volumes = volumes
        self.cases: CaseStacker | None = None
        self.task = task
        self.net = net
        self.cam_name = cam_name
        self.target_layers = list(target_layers)
        self.cam_options = dict(cam_options)
        self.mask_maker = mask_maker
        self.maps_path = Path(maps_path)
        self.empty_hd95 = empty_hd95
        self.normal_area_max = normal_area_max
        self.label_gate = label_gate
        self.results: list[ImageResult] = []
        self._writer: MapWriter | None = None
        self._pending: list[dict[str, Any]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The network's logits."""
        return self.net(images)

    def on_test_start(self) -> None:
        """Open the maps file (one shard per process under DDP) and forget earlier results."""
        self.results = []
        self._pending = []
        if self.volumes is not None:
            self.cases = CaseStacker(self.volumes, self.empty_hd95)
        path = self.maps_path
        if self.trainer.world_size > 1:  # one shard per process, merged by rank 0 afterwards
            path = shard_path(self.maps_path, self.global_rank)
        self._writer = MapWriter(path).__enter__()

    def _cams(self, images: torch.Tensor, targets: list[int] | None) -> torch.Tensor:
        with (
            torch.enable_grad(),
            build_cam(
                self.cam_name, self.net, target_layers=self.target_layers, **self.cam_options
            ) as cam,
        ):
            return cam(images, targets)

    def scores_and_maps(
        self, images: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, the score (B,) and the map (B, H, W) in [0, 1] that the mask is made from:
        the classifier's sigmoid and the CAM. A subclass evaluates other maps the same way."""
        return torch.sigmoid(logits[:, 0]), self._cams(images, None)

    def class_score(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's sigmoid probability (B,): what faithfulness perturbs."""
        return torch.sigmoid(self.net(images)[:, 0])

    def _faithfulness(self, images: torch.Tensor, maps: torch.Tensor) -> dict[str, np.ndarray]:
        """The faithfulness columns of a batch (empty when not measured), from the float16
        maps that are saved, as the masks are."""
        if self.faithfulness is None:
            return {}
        found = faithfulness_metrics(self.class_score, images, maps, self.faithfulness)
        return {name: values.cpu().numpy() for name, values in found.items()}

    def _check_task(self, logits: torch.Tensor) -> None:
        """The network's output must fit the DataModule's task: one logit per image for a
        binary task, one per class for a multi-label one."""
        per_class = logits.dim() == 2 and logits.shape[1] > 1
        if per_class != (self.task == "multilabel"):
            raise ValueError(
                f"the network's logits of shape {tuple(logits.shape)} do not fit the "
                f"DataModule's {self.task} task (binary: one logit per image; multilabel: "
                "one per class)"
            )

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """CAMs of one batch; binary masks are made in the background, VOC masks at once."""
        images = batch["image"]
        with torch.no_grad():
            logits = self.net(images)
        self._check_task(logits)
        if self.task == "multilabel":
            self._multilabel_step(batch, torch.sigmoid(logits))
            return
        scores, maps = self.scores_and_maps(images, logits)
        # Masks are made from the float16 maps that are saved, so `stage=masks` can recompute
        # them exactly from the maps file.
        saved = maps.detach().half().float()
        faithful = self._faithfulness(images, saved)
        maps_np = saved.cpu().numpy()
        images_np = truncated_uint8_rgb(images)
        gts = batch["mask"].cpu().numpy().astype(bool)
        labels = batch["label"].cpu().numpy()
        score_list = scores.detach().float().cpu().numpy()
        assert self._writer is not None
        for i, image_id in enumerate(batch["id"]):
            self._writer.add(image_id, maps_np[i])
        # Masks are made in the background (DenseCRF worker pool) while the next batch's CAMs
        # are computed; metrics are taken when they come back.
        self.mask_maker.submit(images_np, maps_np)
        self._pending.append(
            {
                "ids": list(batch["id"]),
                "gts": gts,
                "maps": maps_np,
                "labels": labels,
                "scores": score_list,
                "faithfulness": faithful,
            }
        )

    def _multilabel_step(self, batch: dict[str, Any], probs: torch.Tensor) -> None:
        """One map per (image, class in its label), in one CAM call; then the VOC rule."""
        present = [torch.nonzero(label > 0.5).flatten().tolist() for label in batch["label"]]
        owners = [i for i, classes in enumerate(present) for _ in classes]
        targets = [c for classes in present for c in classes]
        maps = np.zeros((0, *batch["image"].shape[2:]), np.float32)
        if targets:
            cams = self._cams(batch["image"][owners], targets)
            maps = cams.detach().half().float().cpu().numpy()
        assert self._writer is not None
        gts = batch["mask"].cpu().numpy()
        start = 0
        for i, image_id in enumerate(batch["id"]):
            classes = present[i]
            own = maps[start : start + len(classes)]
            start += len(classes)
            for class_index, cam_map in zip(classes, own, strict=True):
                self._writer.add(class_map_id(image_id, class_index), cam_map)
            pred = voc_mask(own, classes)
            score = float(probs[i, classes].mean()) if classes else 0.0
            all_probs = probs[i].tolist()
            self.results.append(
                multilabel_result(image_id, gts[i], pred, classes, score, all_probs)
            )

    def _collect(self) -> None:
        """Score the masks the mask maker has made, in submission order."""
        for info, masks in zip(self._pending, self.mask_maker.results(), strict=True):
            for i, image_id in enumerate(info["ids"]):
                label = int(info["labels"][i].max() > 0.5)
                if self.cases is not None:
                    scored = gated_mask(masks[i], label, self.label_gate)
                    self.cases.add(image_id, scored, info["gts"][i])
                self.results.append(
                    binary_result(
                        image_id,
                        info["gts"][i],
                        masks[i],
                        info["maps"][i],
                        label,
                        info["scores"][i],
                        self.empty_hd95,
                        self.normal_area_max,
                        self.label_gate,
                        {name: float(v[i]) for name, v in info["faithfulness"].items()},
                    )
                )
        self._pending = []

    def on_test_epoch_end(self) -> None:
        """Wait for the last masks and score them."""
        self._collect()

    def on_test_end(self) -> None:
        """The loop finished: the maps file is complete."""
        self.close_maps(complete=True)

    def close_maps(self, complete: bool) -> None:
        """Finish the maps file; an incomplete one (the loop failed) is discarded."""
        if self._writer is not None:
            error = None if complete else RuntimeError("evaluation interrupted")
            self._writer.__exit__(type(error) if error else None, error, None)
            self._writer = None
