"""What an evaluation needs to know besides its images and network, as plain typed values.

The pipeline builds these from its config (`evaluation_settings` in
`src/pipeline/eval_inputs.py`) and passes them in, so nothing under `src/evaluation` reads a Hydra config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.evaluation.faithfulness import Faithfulness
from src.evaluation.masks import MaskMaker
from src.evaluation.volumes import Volumes
from src.validation import check_choice

#: The DataModule tasks evaluation knows: one logit (object vs background) or one per class.
TASKS = ("binary", "multilabel")
HEADLINES = ("per_image", "confusion")


@dataclass(frozen=True)
class EvalSettings:
    """The options of one evaluation (`eval` group and the dataset's headline convention).

    `task` is the DataModule's (`binary` | `multilabel`): the one switch between per-image
    binary metrics and the VOC rule with split-level confusion metrics. `metrics` is the
    headline convention (`per_image` mean ± std over the abnormal images, or `confusion`
    split-level values), None for the task's default; `miou` = `foreground` makes the
    confusion headline's mIoU the foreground classes' (KSDD2). `label_gate`: binary images
    labelled negative are scored with an empty mask (`gated_mask`; KSDD2's convention).
    `faithfulness`: how the maps' faithfulness to the classifier is measured, None = not
    (`eval.faithfulness`; binary tasks only). `volumes`: the split's cases when its images
    are slices of volumes (BraTS, TCGA-LGG), for the per-case metrics; None otherwise.
    """

    output_dir: Path
    split: str
    task: str
    empty_hd95: float | None
    normal_area_max: float | None
    mask_workers: int
    figure_images: int
    metrics: str | None = None
    miou: str | None = None
    label_gate: bool = False
    target: str = "tumour"  # what a binary task's ground truth outlines, for the figures
    faithfulness: Faithfulness | None = None
    volumes: Volumes | None = None

    def __post_init__(self) -> None:
        """Refuse a task or headline this evaluation does not know, before any image runs."""
        check_choice("task", self.task, TASKS)
        if self.metrics is not None:
            check_choice("eval.metrics", self.metrics, HEADLINES)
        if self.metrics == "per_image" and not self.binary:
            raise ValueError("eval.metrics=per_image needs a binary (one-logit) task")
        if self.faithfulness is not None and not self.binary:
            raise ValueError("eval.faithfulness needs a binary (one-logit) task")

    @property
    def binary(self) -> bool:
        """One map and one mask per image, scored with per-image binary metrics."""
        return self.task == "binary"

    @property
    def headline_metrics(self) -> str:
        """The headline convention, the task's default when none was given."""
        if self.metrics is not None:
            return self.metrics
        return "per_image" if self.binary else "confusion"


@dataclass(frozen=True)
class Method:
    """What made the maps and the rule that turns them into masks (`summary.json`'s `method`
    and `mask`): a CAM method with its `cam.mask`, or the supervised U-Net with a threshold."""

    name: str
    mask: str
    threshold: float | None = None
    map_label: str = "CAM"  # what the overview figure calls the map

    def mask_maker(self, workers: int) -> MaskMaker:
        """A mask maker for this rule (`workers` DenseCRF processes; 0 = in this process)."""
        options = {} if self.threshold is None else {"threshold": self.threshold}
        return MaskMaker(method=self.mask, workers=workers, **options)

    def describe(self) -> str:
        """The binary mask rule as `summary.json` names it."""
        return f"threshold {self.threshold}" if self.mask == "threshold" else self.mask
