"""Everything an evaluation leaves behind: per_image.csv, summary.json, the figures, the W&B
run's summary, table and files, and the table printed on the console.

One place decides what is written for a task, so the CAM test loop, `stage=masks` and the
supervised U-Net produce the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from src.data.voc import VOC_CLASSES
from src.evaluation.figures import (
    ClassPanel,
    Panel,
    overlay_strip,
    pick_examples,
    save_histogram,
    save_overview,
)
from src.evaluation.image_result import ImageResult, gated_mask
from src.evaluation.items import item_index, truncated_uint8_rgb
from src.evaluation.map_store import MapArchive, label_class_maps, load_map
from src.evaluation.masks import voc_mask
from src.evaluation.metrics import scored_ground_truth
from src.evaluation.reports import (
    format_headline,
    format_table,
    write_json,
    write_per_case_csv,
    write_per_image_csv,
)
from src.evaluation.settings import EvalSettings, Method
from src.evaluation.summary import LOCALISATION
from src.evaluation.volumes import CaseStacker
from src.evaluation.wandb_report import log_results


def publish(
    results: Sequence[ImageResult],
    summary: dict[str, Any],
    settings: EvalSettings,
    method: Method,
    dataset: Dataset,
    maps_path: Path,
    wandb_run: Any | None,
    cases: CaseStacker | None = None,
) -> None:
    """Write the result files into `settings.output_dir` (`per_case.csv` too when `cases`
    are given), log them to `wandb_run` (if any) and print the results table. The run pipeline says the results are written once it has
    also finished the W&B run (`PipelineLoggers.finish`) and written the run's config."""
    output_dir = settings.output_dir
    write_per_image_csv(results, output_dir / "per_image.csv")
    write_json(summary, output_dir / "summary.json")
    if cases is not None:
        write_per_case_csv(cases.rows(), output_dir / "per_case.csv")
    rows = [result.as_row() for result in results]
    figure = output_dir / "overview.png"
    histogram = output_dir / "dice_histogram.png"
    panels: dict[str, Panel] = {}
    if settings.binary:
        panels = write_overview(rows, settings, method, dataset, maps_path, figure)
        title = f"{method.name}: per-image Dice ({settings.split})"
        save_histogram(rows, histogram, title=title)
    else:
        write_class_overview(rows, settings, method, dataset, maps_path, figure)
    if wandb_run is not None:
        overlays = {image_id: overlay_strip(*panel) for image_id, panel in panels.items()}
        log_results(
            wandb_run,
            summary,
            rows,
            overlays,
            [figure, histogram],
            files=[output_dir / "summary.json", output_dir / "per_image.csv"],
        )
    print_results(summary, settings, method)


def print_results(summary: dict[str, Any], settings: EvalSettings, method: Method) -> None:
    """The group table (binary tasks) and the headline, on the console."""
    if settings.binary:
        title = (
            f"{method.name}, {method.describe()} masks, on the {settings.split} split "
            f"({settings.output_dir})"
        )
        columns = ("dice", "iou", "hd95", *LOCALISATION)
        print("\n" + format_table(summary["groups"], columns, title=title))
    print("\n" + format_headline(summary["headline"], summary["headline_metrics"]) + "\n")
    found = summary.get("classifier", {}).get("map")
    if found is not None:
        images = summary["classifier"]["images"]
        print(
            f"classifier mAP over the {images} images of the {settings.split} split: {found:.4f}\n"
        )


def write_overview(
    rows: Sequence[dict[str, Any]],
    settings: EvalSettings,
    method: Method,
    dataset: Dataset,
    maps_path: Path,
    path: Path,
) -> dict[str, Panel]:
    """The overview figure of `settings.figure_images` images from best to worst Dice;
    returns the panels it shows, by image id (the W&B table shows them too)."""
    ids = pick_examples(rows, settings.figure_images)
    index = item_index(dataset)
    mask_maker = method.mask_maker(workers=0)
    panels: dict[str, Panel] = {}
    for image_id in ids:
        item = dataset[index[image_id]]
        image = truncated_uint8_rgb(item["image"][None])[0]
        cam_map = load_map(maps_path, image_id)
        mask = np.asarray(mask_maker(image[None], cam_map[None])[0], dtype=bool)
        label = int(np.asarray(item["label"]).max() > 0.5)
        mask = gated_mask(mask, label, settings.label_gate)
        # The ground truth the metrics in the titles were taken against.
        gt = scored_ground_truth(item["mask"].numpy(), settings.normal_area_max)
        panels[image_id] = (image, gt, cam_map, mask)
    save_overview(
        ids,
        panels.__getitem__,
        {r["id"]: r for r in rows},
        path,
        title=f"{method.name}: best to worst Dice on the {settings.split} split",
        map_label=method.map_label,
        target=settings.target,
    )
    return panels


def write_class_overview(
    rows: Sequence[dict[str, Any]],
    settings: EvalSettings,
    method: Method,
    dataset: Dataset,
    maps_path: Path,
    path: Path,
) -> dict[str, ClassPanel]:
    """The overview figure of a multi-label task (VOC): `settings.figure_images` images from
    best to worst pixel accuracy, with their ground-truth and predicted class masks. The
    prediction is the VOC rule on the saved maps of the classes in the image's label, as the
    evaluation made it (`remask_multilabel`); returns the panels shown, by image id."""
    ids = pick_examples(rows, settings.figure_images, metric="pixel_accuracy")
    rows_by_id = {r["id"]: r for r in rows}
    index = item_index(dataset)
    panels: dict[str, ClassPanel] = {}
    with MapArchive(maps_path) as maps:
        for image_id in ids:
            item = dataset[index[image_id]]
            image = truncated_uint8_rgb(item["image"][None])[0]
            classes = [int(c) for c in str(rows_by_id[image_id]["label"]).split()]
            own = label_class_maps(maps, image_id, classes, image.shape[:2])
            panels[image_id] = (image, np.asarray(item["mask"]), voc_mask(own, classes))
    save_overview(
        ids,
        panels.__getitem__,
        rows_by_id,
        path,
        title=f"{method.name}: best to worst pixel accuracy on the {settings.split} split",
        classes=["background", *VOC_CLASSES],
    )
    return panels
