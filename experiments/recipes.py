"""The registry of recipes: one per table (or figure) of the two papers.

A recipe names its Hydra experiment config (`conf/experiment/<name>.yaml`, the shared
settings), lists the paper's rows with the overrides that turn each row into one run of
`src.pipeline.stages.run_pipeline`, and says how its table is laid out. Rows the project does
not reproduce (Swin-MIL, the non-CAM methods of the Cfd-CAM paper) are listed with the
paper's numbers and no job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from experiments.paper_numbers import CFD_DATASETS, TCGA
from src.evaluation.metrics import AUTHORS_EMPTY_HD95

DATASETS = ("brats", "tcga_lgg", "voc", "ksdd2")
LAYOUTS = ("mean_std", "percent", "stages", "sweep")


@dataclass(frozen=True)
class Row:
    """One row (or, for the pivoted layouts, one cell column) of a paper's table.

    `group` is the dataset label of the Cfd-CAM tables ("" for the LT-Grad-CAM tables) or the
    method of a delta sweep; `method` is the row label as printed in the paper (the key into
    `paper_numbers`). `dataset` says which data root the job reads; "" = not reproduced."""

    group: str
    method: str
    overrides: tuple[str, ...] = ()
    dataset: str = ""
    kind: str = ""
    demo: bool = True

    @property
    def reproduced(self) -> bool:
        return bool(self.dataset)

    @property
    def key(self) -> str:
        """A file-name-safe id, unique within a recipe (the job's run folder)."""
        text = f"{self.group} {self.method}"
        text = text.replace("δ", "delta").replace("+", "p").lower()
        return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


@dataclass(frozen=True)
class Recipe:
    """A paper table: its experiment config, rows and layout (one of `LAYOUTS`)."""

    name: str
    title: str
    layout: str
    metrics: tuple[tuple[str, str], ...]
    rows: tuple[Row, ...]
    primary: str
    demo_note: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The backbone starts from a local ImageNet state_dict (VGG16, docs/training.md): the launcher's
    # --vgg-weights fills backbone.net.weights.
    imagenet_weights: bool = False
    # The rows run the default config (the demo: data generated in the real BraTS format)
    # with only their own overrides: no experiment config and no data root, so they share the
    # classifier that `make run` trained and stored.
    on_demo_config: bool = False
    # The method (`Row.method`) the paired comparison (`experiments/paired.py`) holds every
    # other row against, matched within the row's group: the paper's proposed method, or for
    # a δ sweep the untruncated δ=0 of the same method.
    reference: str = ""

    @property
    def experiment(self) -> str | None:
        return None if self.on_demo_config else self.name

    def jobs(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if row.reproduced)


CFD_METRICS = (("dice", "Dice ↑"), ("iou", "IoU ↑"), ("hd95", "HD95 ↓"))
LT_METRICS = (
    ("miou", "mIoU"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("f1", "Micro-F1"),
)
MODALITIES = {"BraTS T1": "t1", "BraTS T1-CE": "t1ce", "BraTS T2": "t2", "BraTS T2-FLAIR": "flair"}


def _cfd_data(dataset: str) -> tuple[tuple[str, ...], str]:
    """Overrides and data key of one dataset label of the Cfd-CAM tables."""
    if dataset == TCGA:
        return ("data=tcga_lgg",), "tcga_lgg"
    return (f"modality={MODALITIES[dataset]}",), "brats"


_CFD_TABLE1_METHODS = (
    ("Grad-CAM (2016)", "cam=gradcam"),
    ("ScoreCAM (2020)", "cam=scorecam"),
    ("LayerCAM (2021)", "cam=layercam"),
    ("Swin-MIL (2022)", None),
    ("Cfd-CAM (ours)", "cam=cfdcam"),
)
_CFD_NOT_CAM = (("C&F (2020), UL", "UL"), ("C&F (2020), FSL", "FSL"))
#: The supervised ceiling: a U-Net trained on the training masks (docs/supervised.md).
_CFD_UNET = ("Opt. U-net (2021)", "method=supervised")
#: That U-Net trained on Cfd-CAM's masks of training slices instead, on their confident
#: regions with the label-free Otsu split (docs/selftrain.md).
_SELF_TRAINED = (
    "Cfd-CAM -> U-Net (self-trained)",
    (
        "method=selftrain",
        "selftrain.confident_foreground=otsu",
        "selftrain.confident_background=1.0",
    ),
)


def _cfd_row(dataset: str, method: str, cam: tuple[str, ...], kind: str = "") -> Row:
    """A reproduced row of the Cfd-CAM tables: the `cam` overrides on the data of `dataset`."""
    data_overrides, data = _cfd_data(dataset)
    return Row(dataset, method, (*data_overrides, *cam), data, kind)


def _cfd_table(
    number: int, title: str, rows: list[Row], notes: tuple[str, ...], reference: str
) -> Recipe:
    """The layout, metrics and demo subset that the Cfd-CAM tables share."""
    return Recipe(
        name=f"cfdcam_table{number}",
        title=f"Cfd-CAM, Table {number}: {title}",
        layout="mean_std",
        metrics=CFD_METRICS,
        rows=tuple(rows),
        primary="brats",
        notes=notes,
        reference=reference,
    )


def _cfdcam_table1() -> Recipe:
    rows = []
    for dataset in CFD_DATASETS:
        for method, cam in _CFD_TABLE1_METHODS:
            if cam is None:
                rows.append(Row(dataset, method, kind="WSSS"))
            else:
                rows.append(_cfd_row(dataset, method, (cam,), "WSSS"))
        rows += [Row(dataset, method, kind=kind) for method, kind in _CFD_NOT_CAM]
        rows.append(_cfd_row(dataset, _CFD_UNET[0], (_CFD_UNET[1],), "FSL"))
    return _cfd_table(
        1,
        "WSSS methods on BraTS 2021 (four modalities) and TCGA-LGG",
        rows,
        notes=(
            "mean ± std over the tumour slices of the test split (docs/metrics.md); HD95 in pixels, "
            f"{AUTHORS_EMPTY_HD95} when exactly one mask is empty",
            "Swin-MIL and the C&F rows: not reproduced, paper numbers only",
            "Opt. U-net: our supervised ceiling (method=supervised), MONAI's DynUNet trained "
            "on the training masks and scored on the same slices (docs/supervised.md)",
            "Grad-CAM and LayerCAM use layer4 (cam.layers=1); ScoreCAM preset pgc",
        ),
        reference="Cfd-CAM (ours)",
    )


#: The demo's row group; its paper numbers are the paper's BraTS T2-FLAIR rows.
DEMO_GROUP = "demo (BraTS-format FLAIR phantoms)"
#: The demo's SupCon ablation: Cfd-CAM on a classifier fine-tuned after the demo's scaled
#: SupCon pretraining (conf/experiment/demo_supcon.yaml; docs/demo.md, "SupCon in the
#: demo"), which `make run` leaves off. It trains its own classifier (per seed).
SUPCON_ABLATION = ("Cfd-CAM (ours), with SupCon", ("experiment=[demo,demo_supcon]", "cam=cfdcam"))
LOCALISATION_METRICS = (("pointing", "Pointing ↑"), ("mass_in_gt", "Mass in GT ↑"))


def _demo_table1() -> Recipe:
    """Table 1's CAM rows on the classifier `make run` trains (same config, same store key)."""
    rows = [
        Row(DEMO_GROUP, method, (cam,), "brats", "WSSS")
        for method, cam in _CFD_TABLE1_METHODS
        if cam is not None
    ]
    rows.append(Row(DEMO_GROUP, SUPCON_ABLATION[0], SUPCON_ABLATION[1], "brats", "WSSS"))
    rows.append(Row(DEMO_GROUP, _SELF_TRAINED[0], _SELF_TRAINED[1], "brats", "WSSS"))
    rows.append(Row(DEMO_GROUP, _CFD_UNET[0], (_CFD_UNET[1],), "brats", "FSL"))
    return Recipe(
        name="demo_table1",
        title="Cfd-CAM, Table 1 rows on the `make run` demo classifier",
        layout="mean_std",
        metrics=CFD_METRICS + LOCALISATION_METRICS,
        rows=tuple(rows),
        primary="brats",
        notes=(
            "ours: the demo config of `make run` (generated BraTS-format FLAIR phantoms, its "
            "stored classifier), the same evaluated slices for every method; paper: BraTS "
            "T2-FLAIR at 240 px on the real data",
            "mean ± std over the tumour slices; HD95 in pixels of the demo's image size, "
            f"{AUTHORS_EMPTY_HD95} when exactly one mask is empty",
            "Pointing: share of tumour slices whose map maximum lies in the tumour; Mass in GT: "
            "mean share of the map's mass inside the tumour (threshold-free, no paper value)",
            "Grad-CAM and LayerCAM use layer4 (cam.layers=1); ScoreCAM preset pgc; all four "
            "use the authors' DenseCRF masks",
            "Cfd-CAM (ours), with SupCon: the demo's SupCon pretraining scaled to its budget "
            "(8 epochs of batch 64 on 64 px crops, the authors' temperature, head, "
            "augmentations and optimiser; docs/demo.md) before the same fine-tuning, then "
            "Cfd-CAM: its own classifier, the ablation of the paper's recipe",
            "Cfd-CAM -> U-Net (self-trained): the same U-Net trained on Cfd-CAM's DenseCRF "
            "masks of training slices labelled positive, on their confident regions only "
            "(object: the DenseCRF refinement of the mask's part above Otsu's threshold of "
            "the map inside it; background: outside the mask; the rest ignored), and empty "
            "masks on those labelled negative (method=selftrain; no pixel label; not in the "
            "paper)",
            "Opt. U-net: the supervised ceiling (method=supervised), trained on the demo's "
            "training masks, mask = probability > 0.5",
        ),
        on_demo_config=True,
        reference="Cfd-CAM (ours)",
    )


def _cfdcam_table2() -> Recipe:
    rows = [
        _cfd_row(dataset, label, ("cam=cfdcam", f"cam.options.scales={scales}"))
        for dataset in CFD_DATASETS
        for label, scales in (("Cfd-CAM (ss)", "[1]"), ("Cfd-CAM (ms)", "[1,2]"))
    ]
    return _cfd_table(
        2,
        "single-scale (ss) vs multi-scale (ms) Cfd-CAM",
        rows,
        notes=(
            "ss = cam.options.scales=[1], ms = cam.options.scales=[1,2] (docs/cfdcam.md); mean ± std over tumour slices",
            "the paper's ms rows for T2 and T2-FLAIR differ from its Table 1 Cfd-CAM rows",
        ),
        reference="Cfd-CAM (ms)",
    )


# VGG16's five max-pool outputs (the network's cam_stages); one stage alone = cam.layers
# naming it (the CAM options are not part of the classifier's cache key).
_VGG16_STAGES = ("features.4", "features.9", "features.16", "features.23", "features.30")


def _ltgrad_table1() -> Recipe:
    rows = [
        Row(
            "",
            f"S{i + 1}",
            ("cam=gradcam", f"cam.layers=[{stage}]"),
            "voc",
        )
        for i, stage in enumerate(_VGG16_STAGES)
    ]
    rows += [
        Row("", "S3+S4+S5", ("cam=gradcam", "cam.layers=3"), "voc"),
        Row("", "S1+S2+S3+S4+S5", ("cam=gradcam", "cam.layers=5"), "voc"),
    ]
    return Recipe(
        name="ltgrad_table1",
        title="LT-Grad-CAM, Table 1: Grad-CAM per VGG16 stage and fused stages (PASCAL VOC 2012)",
        layout="stages",
        metrics=(("miou", "mIoU"),),
        rows=tuple(rows),
        primary="voc",
        imagenet_weights=True,
        reference="S5",
        notes=(
            "mIoU in %, one confusion matrix over the VOC val split (21 classes, 255 ignored)",
            "fused stages: sum of the upsampled per-stage maps (Eq. 8, cam.options.fusion=sum), no truncation",
            "single stages use the plain VGG16 max-pool indices (backbone=vgg16, not vgg16_bn)",
        ),
    )


def _lt_rows(dataset: str, labels: tuple[str, ...]) -> tuple[Row, ...]:
    overrides = {
        "Grad-CAM++": ("cam=gradcampp", "cam.layers=1"),
        "Grad-CAM": ("cam=gradcam", "cam.layers=1"),
        "LTGrad-CAM(l=1, δ=0)": ("cam=ltgradcam", "cam.layers=1", "cam.options.delta=0"),
        "FullGrad": ("cam=fullgrad",),
        "LTFullGrad(δ=0)": ("cam=ltfullgrad", "cam.options.delta=0"),
        "Layer-CAM(l=1, δ=0)": ("cam=ltlayercam", "cam.layers=1", "cam.options.delta=0"),
        "Layer-CAM(l=5, δ=0)": ("cam=ltlayercam", "cam.layers=5", "cam.options.delta=0"),
        "LTGrad-CAM(l=5, δ=0)": ("cam=ltgradcam", "cam.layers=5", "cam.options.delta=0"),
        "LTGrad-CAM(l=5, δ=20)": ("cam=ltgradcam", "cam.layers=5", "cam.options.delta=20"),
    }
    return tuple(Row("", label, overrides[label], dataset) for label in labels)


_LT_NOTES = (
    "values in %; one confusion matrix over the split; precision, recall and F1 micro-averaged "
    "over the foreground classes",
    "FullGrad uses every conv bias (target layers ignored), as the paper",
)
#: The paper's proposed setting, the reference of its comparison tables.
_LT_PROPOSED = "LTGrad-CAM(l=5, δ=20)"
_COMPARISON = (
    "Grad-CAM++",
    "Grad-CAM",
    "FullGrad",
    "Layer-CAM(l=1, δ=0)",
    "Layer-CAM(l=5, δ=0)",
    "LTGrad-CAM(l=5, δ=0)",
    "LTGrad-CAM(l=5, δ=20)",
)


def _ltgrad_table(
    number: int, dataset: str, title: str, labels: tuple[str, ...], reference: str
) -> Recipe:
    return Recipe(
        name=f"ltgrad_table{number}",
        title=f"LT-Grad-CAM, Table {number}: {title}",
        layout="percent",
        metrics=LT_METRICS,
        rows=_lt_rows(dataset, labels),
        primary=dataset,
        notes=_LT_NOTES,
        imagenet_weights=True,
        reference=reference,
    )


SWEEP_METHODS = (
    ("LTGrad-CAM", "ltgradcam"),
    ("LTLayer-CAM", "ltlayercam"),
    ("LTFullGrad", "ltfullgrad"),
)
SWEEP_DELTAS = tuple(range(0, 100, 10))


def _ltgrad_fig(number: int, split: str) -> Recipe:
    rows = tuple(
        Row(
            label,
            f"δ={delta}",
            (f"cam={cam}", f"cam.options.delta={delta}"),
            "ksdd2",
        )
        for label, cam in SWEEP_METHODS
        for delta in SWEEP_DELTAS
    )
    return Recipe(
        name=f"ltgrad_fig{number}",
        title=f"LT-Grad-CAM, Fig. {number}: mIoU against the truncation percentile δ "
        f"(KSDD2, {split} split)",
        layout="sweep",
        metrics=(("miou", "mIoU"),),
        rows=rows,
        primary="ksdd2",
        imagenet_weights=True,
        reference="δ=0",
        notes=(
            "the paper shows this as a plot only (no printed numbers); l = 5 stages",
            f"plots: experiments/results/[demo/]ltgrad_fig{number}[_seedsN]_sweep/sweep_miou_vs_delta.png",
        ),
    )


def _registry() -> dict[str, Recipe]:
    recipes = [
        _cfdcam_table1(),
        _cfdcam_table2(),
        _demo_table1(),
        _ltgrad_table1(),
        _ltgrad_table(
            2,
            "voc",
            "gradient truncation on Grad-CAM and FullGrad (PASCAL VOC 2012)",
            ("Grad-CAM++", "Grad-CAM", "LTGrad-CAM(l=1, δ=0)", "FullGrad", "LTFullGrad(δ=0)"),
            "LTGrad-CAM(l=1, δ=0)",
        ),
        _ltgrad_table(3, "voc", "comparison on PASCAL VOC 2012", _COMPARISON, _LT_PROPOSED),
        _ltgrad_table(4, "ksdd2", "comparison on KSDD2", _COMPARISON, _LT_PROPOSED),
        _ltgrad_fig(4, "test"),
        _ltgrad_fig(5, "train"),
    ]
    return {recipe.name: recipe for recipe in recipes}


RECIPES: dict[str, Recipe] = _registry()
