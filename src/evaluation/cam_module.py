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
from src.evaluation.map_store import MapWriter, shard_path
from src.evaluation.masks import MaskMaker
from src.evaluation.metrics import binary_metrics, group_of


def to_uint8_rgb(images: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) in [0,1] -> (B,H,W,3) uint8, the form DenseCRF's bilateral term reads.

    Truncates like the authors' `uint8(255 * image)` (SPEC 5), not rounding.
    """
    array = images.detach().float().clamp(0, 1).mul(255).to(torch.uint8)
    return np.ascontiguousarray(array.permute(0, 2, 3, 1).cpu().numpy())


def image_row(
    image_id: str,
    gt: np.ndarray,
    mask: np.ndarray,
    label: int,
    score: float,
    empty_hd95: float | None,
) -> dict[str, Any]:
    """The per_image.csv row of one image: identity, group, classifier output, metrics."""
    row: dict[str, Any] = {
        "id": image_id,
        "group": group_of(gt),
        "label": int(label),
        "score": float(score),
        "gt_area": int(gt.sum()),
        "pred_area": int(mask.sum()),
    }
    row.update(binary_metrics(mask, gt, empty_hd95=empty_hd95))
    return row


class CAMEvaluationModule(pl.LightningModule):
    """Computes a CAM per test image, turns it into a mask and scores it against the GT.

    Results are kept in `rows` (one dict per image) and the maps are streamed to `maps_path`.
    """

    def __init__(
        self,
        net: nn.Module,
        cam_name: str,
        target_layers: list[str],
        cam_options: dict[str, Any],
        mask_maker: MaskMaker,
        maps_path: str | Path,
        empty_hd95: float | None = 373.12866,
    ) -> None:
        super().__init__()
        self.net = net
        self.cam_name = cam_name
        self.target_layers = list(target_layers)
        self.cam_options = dict(cam_options)
        self.mask_maker = mask_maker
        self.maps_path = Path(maps_path)
        self.empty_hd95 = empty_hd95
        self.rows: list[dict[str, Any]] = []
        self._writer: MapWriter | None = None
        self._pending: list[dict[str, Any]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def on_test_start(self) -> None:
        self.rows = []
        self._pending = []
        path = self.maps_path
        if self.trainer.world_size > 1:  # one shard per process, merged by rank 0 afterwards
            path = shard_path(self.maps_path, self.global_rank)
        self._writer = MapWriter(path).__enter__()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images = batch["image"]
        with (
            torch.enable_grad(),
            build_cam(
                self.cam_name, self.net, target_layers=self.target_layers, **self.cam_options
            ) as cam,
        ):
            maps = cam(images, None)
        with torch.no_grad():
            logits = self.net(images)
        scores = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else logits.softmax(1).amax(1)
        # Masks are made from the float16 maps that are saved, so `stage=masks` can recompute
        # them exactly from the maps file.
        maps_np = maps.detach().half().float().cpu().numpy()
        images_np = to_uint8_rgb(images)
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
            {"ids": list(batch["id"]), "gts": gts, "labels": labels, "scores": score_list}
        )

    def _collect(self) -> None:
        for info, masks in zip(self._pending, self.mask_maker.results(), strict=True):
            for i, image_id in enumerate(info["ids"]):
                self.rows.append(
                    image_row(
                        image_id,
                        info["gts"][i],
                        masks[i],
                        int(info["labels"][i].max() > 0.5),
                        info["scores"][i],
                        self.empty_hd95,
                    )
                )
        self._pending = []

    def on_test_epoch_end(self) -> None:
        self._collect()

    def on_test_end(self) -> None:
        self.close_maps(complete=True)

    def close_maps(self, complete: bool) -> None:
        """Finish the maps file; an incomplete one (the loop failed) is discarded."""
        if self._writer is not None:
            error = None if complete else RuntimeError("evaluation interrupted")
            self._writer.__exit__(type(error) if error else None, error, None)
            self._writer = None
