"""The U-Net's test loop: the CAM evaluation's loop with probability maps in place of CAMs.

Everything after the map (mask, per-image metrics, maps file, DDP gather, summary, figure,
W&B) is shared, so a supervised row is scored exactly like a CAM row.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from src.evaluation.cam_module import CAMEvaluationModule
from src.evaluation.masks import MaskMaker
from src.evaluation.metrics import AUTHORS_EMPTY_HD95
from src.evaluation.volumes import Volumes

METHOD = "supervised"


class SegmenterEvaluationModule(CAMEvaluationModule):
    """Scores the U-Net's foreground probability map (its mask: `mask_maker`, threshold 0.5).

    The image score is the largest pixel probability: the network's own "is there an object"
    answer, as the classifier's sigmoid is for a CAM row.
    """

    def __init__(
        self,
        net: nn.Module,
        mask_maker: MaskMaker,
        maps_path: str | Path,
        empty_hd95: float | None = AUTHORS_EMPTY_HD95,
        normal_area_max: float | None = None,
        volumes: Volumes | None = None,
        method: str = METHOD,
    ) -> None:
        """A binary task always: the U-Net has one output channel. `empty_hd95`,
        `normal_area_max` and `volumes` (per-case metrics) score it as a CAM row is scored;
        `method` names what trained it (`supervised`, or `selftrain` on pseudo-masks)."""
        super().__init__(
            net,
            method,
            [],
            {},
            mask_maker,
            maps_path,
            task="binary",
            empty_hd95=empty_hd95,
            normal_area_max=normal_area_max,
            volumes=volumes,
        )

    def scores_and_maps(
        self, images: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The largest pixel probability and the probability map itself."""
        probabilities = torch.sigmoid(logits[:, 0].float())
        return probabilities.flatten(1).amax(1), probabilities
