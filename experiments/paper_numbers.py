"""The numbers the two papers report, typed in from their texts (`/work/shared/papers/`).

Cfd-CAM (Chen, Shi, Ho): Table 1 and Table 2, mean and std over the tumour slices
(Dice, IoU, HD95 in pixels). LT-Grad-CAM (Dong et al.): Tables 1-4 in percent (mIoU,
precision, recall, micro-F1); Fig. 4 and 5 are plots without printed numbers.

Layout: ``PAPER[recipe][(group, method)] = {metric: value}``, where a value is a
``(mean, std)`` pair (Cfd-CAM) or a single number (LT-Grad-CAM, percent). ``group`` is the
dataset label of the Cfd-CAM tables and "" for the LT-Grad-CAM tables; ``method`` is the
row label exactly as printed in the paper. Metric keys are those of ``summary["headline"]``.

Note: the paper's Table 2 "ms" rows for BraTS T2 and T2-FLAIR differ from the Cfd-CAM rows of
its Table 1 (0.646 vs 0.660 and 0.698 vs 0.733 Dice); both are kept as printed.
"""

from __future__ import annotations

MeanStd = tuple[float, float]
PaperValue = MeanStd | float
PaperTable = dict[tuple[str, str], dict[str, PaperValue]]

BRATS_T1, BRATS_T1CE, BRATS_T2, BRATS_FLAIR = (
    "BraTS T1",
    "BraTS T1-CE",
    "BraTS T2",
    "BraTS T2-FLAIR",
)
TCGA = "TCGA-LGG"
CFD_DATASETS = (BRATS_T1, BRATS_T1CE, BRATS_T2, BRATS_FLAIR, TCGA)


def _dice_iou_hd95(dice: MeanStd, iou: MeanStd, hd95: MeanStd) -> dict[str, PaperValue]:
    return {"dice": dice, "iou": iou, "hd95": hd95}


def _lt(miou: float, precision: float, recall: float, f1: float) -> dict[str, PaperValue]:
    return {"miou": miou, "precision": precision, "recall": recall, "f1": f1}


# Cfd-CAM Table 1, every row (the WSSS CAM rows are reproduced; Swin-MIL and the UL/FSL
# rows are listed as "not reproduced"). Keys: (dataset, "<type>: <method>") is avoided so the
# method label stays the paper's; the type lives in experiments.recipes.
CFDCAM_TABLE1: PaperTable = {
    (BRATS_T1, "Grad-CAM (2016)"): _dice_iou_hd95(
        (0.107, 0.090), (0.059, 0.055), (121.816, 22.963)
    ),
    (BRATS_T1, "ScoreCAM (2020)"): _dice_iou_hd95((0.296, 0.128), (0.181, 0.089), (60.302, 14.110)),
    (BRATS_T1, "LayerCAM (2021)"): _dice_iou_hd95((0.571, 0.170), (0.419, 0.161), (23.335, 27.369)),
    (BRATS_T1, "Swin-MIL (2022)"): _dice_iou_hd95((0.477, 0.170), (0.330, 0.147), (46.468, 30.408)),
    (BRATS_T1, "Cfd-CAM (ours)"): _dice_iou_hd95((0.575, 0.169), (0.427, 0.143), (23.859, 20.243)),
    (BRATS_T1, "C&F (2020), UL"): _dice_iou_hd95((0.200, 0.082), (0.113, 0.051), (79.187, 14.304)),
    (BRATS_T1, "C&F (2020), FSL"): _dice_iou_hd95((0.572, 0.196), (0.426, 0.187), (29.027, 20.881)),
    (BRATS_T1, "Opt. U-net (2021)"): _dice_iou_hd95(
        (0.836, 0.062), (0.723, 0.090), (11.730, 10.345)
    ),
    (BRATS_T1CE, "Grad-CAM (2016)"): _dice_iou_hd95(
        (0.127, 0.088), (0.071, 0.054), (129.890, 27.854)
    ),
    (BRATS_T1CE, "ScoreCAM (2020)"): _dice_iou_hd95(
        (0.397, 0.189), (0.267, 0.163), (46.834, 22.093)
    ),
    (BRATS_T1CE, "LayerCAM (2021)"): _dice_iou_hd95(
        (0.510, 0.209), (0.367, 0.180), (29.850, 45.877)
    ),
    (BRATS_T1CE, "Swin-MIL (2022)"): _dice_iou_hd95(
        (0.460, 0.169), (0.314, 0.140), (46.996, 22.821)
    ),
    (BRATS_T1CE, "Cfd-CAM (ours)"): _dice_iou_hd95(
        (0.610, 0.156), (0.456, 0.157), (23.352, 13.642)
    ),
    (BRATS_T1CE, "C&F (2020), UL"): _dice_iou_hd95(
        (0.179, 0.080), (0.101, 0.050), (77.982, 14.042)
    ),
    (BRATS_T1CE, "C&F (2020), FSL"): _dice_iou_hd95(
        (0.246, 0.104), (0.144, 0.070), (130.616, 9.879)
    ),
    (BRATS_T1CE, "Opt. U-net (2021)"): _dice_iou_hd95(
        (0.845, 0.058), (0.736, 0.085), (11.593, 11.120)
    ),
    (BRATS_T2, "Grad-CAM (2016)"): _dice_iou_hd95(
        (0.049, 0.058), (0.026, 0.034), (141.025, 23.107)
    ),
    (BRATS_T2, "ScoreCAM (2020)"): _dice_iou_hd95((0.530, 0.184), (0.382, 0.174), (28.611, 11.596)),
    (BRATS_T2, "LayerCAM (2021)"): _dice_iou_hd95((0.624, 0.178), (0.476, 0.173), (23.978, 44.323)),
    (BRATS_T2, "Swin-MIL (2022)"): _dice_iou_hd95((0.437, 0.149), (0.290, 0.117), (38.006, 30.000)),
    (BRATS_T2, "Cfd-CAM (ours)"): _dice_iou_hd95((0.660, 0.132), (0.506, 0.141), (19.323, 10.714)),
    (BRATS_T2, "C&F (2020), UL"): _dice_iou_hd95((0.230, 0.089), (0.133, 0.058), (76.256, 13.192)),
    (BRATS_T2, "C&F (2020), FSL"): _dice_iou_hd95(
        (0.611, 0.221), (0.474, 0.217), (109.817, 27.735)
    ),
    (BRATS_T2, "Opt. U-net (2021)"): _dice_iou_hd95((0.884, 0.064), (0.798, 0.098), (8.349, 9.125)),
    (BRATS_FLAIR, "Grad-CAM (2016)"): _dice_iou_hd95(
        (0.150, 0.077), (0.083, 0.050), (110.031, 23.307)
    ),
    (BRATS_FLAIR, "ScoreCAM (2020)"): _dice_iou_hd95(
        (0.432, 0.209), (0.299, 0.178), (39.385, 17.182)
    ),
    (BRATS_FLAIR, "LayerCAM (2021)"): _dice_iou_hd95(
        (0.652, 0.206), (0.515, 0.210), (22.055, 33.959)
    ),
    (BRATS_FLAIR, "Swin-MIL (2022)"): _dice_iou_hd95(
        (0.272, 0.115), (0.163, 0.079), (41.870, 19.231)
    ),
    (BRATS_FLAIR, "Cfd-CAM (ours)"): _dice_iou_hd95(
        (0.733, 0.126), (0.594, 0.153), (15.273, 8.251)
    ),
    (BRATS_FLAIR, "C&F (2020), UL"): _dice_iou_hd95(
        (0.306, 0.190), (0.199, 0.167), (75.651, 14.214)
    ),
    (BRATS_FLAIR, "C&F (2020), FSL"): _dice_iou_hd95(
        (0.578, 0.137), (0.419, 0.130), (138.138, 14.283)
    ),
    (BRATS_FLAIR, "Opt. U-net (2021)"): _dice_iou_hd95(
        (0.914, 0.058), (0.847, 0.093), (8.093, 11.879)
    ),
    (TCGA, "Grad-CAM (2016)"): _dice_iou_hd95((0.407, 0.229), (0.283, 0.190), (81.278, 38.648)),
    (TCGA, "ScoreCAM (2020)"): _dice_iou_hd95((0.490, 0.222), (0.351, 0.184), (57.821, 30.275)),
    (TCGA, "LayerCAM (2021)"): _dice_iou_hd95((0.378, 0.211), (0.255, 0.171), (69.696, 42.493)),
    (TCGA, "Swin-MIL (2022)"): _dice_iou_hd95((0.271, 0.144), (0.165, 0.101), (111.634, 17.670)),
    (TCGA, "Cfd-CAM (ours)"): _dice_iou_hd95((0.508, 0.223), (0.369, 0.193), (56.866, 29.337)),
    (TCGA, "C&F (2020), UL"): _dice_iou_hd95((0.300, 0.162), (0.188, 0.119), (101.980, 18.358)),
    (TCGA, "C&F (2020), FSL"): _dice_iou_hd95((0.637, 0.216), (0.502, 0.224), (46.925, 17.889)),
    (TCGA, "Opt. U-net (2021)"): _dice_iou_hd95((0.668, 0.196), (0.532, 0.209), (47.035, 19.529)),
}

CFDCAM_TABLE2: PaperTable = {
    (BRATS_T1, "Cfd-CAM (ss)"): _dice_iou_hd95((0.406, 0.152), (0.266, 0.121), (45.610, 15.356)),
    (BRATS_T1, "Cfd-CAM (ms)"): _dice_iou_hd95((0.575, 0.169), (0.427, 0.143), (23.859, 20.243)),
    (BRATS_T1CE, "Cfd-CAM (ss)"): _dice_iou_hd95((0.537, 0.189), (0.389, 0.176), (30.075, 18.408)),
    (BRATS_T1CE, "Cfd-CAM (ms)"): _dice_iou_hd95((0.610, 0.156), (0.456, 0.157), (23.352, 13.642)),
    (BRATS_T2, "Cfd-CAM (ss)"): _dice_iou_hd95((0.573, 0.179), (0.424, 0.177), (24.716, 9.795)),
    (BRATS_T2, "Cfd-CAM (ms)"): _dice_iou_hd95((0.646, 0.142), (0.493, 0.154), (19.696, 7.494)),
    (BRATS_FLAIR, "Cfd-CAM (ss)"): _dice_iou_hd95((0.599, 0.221), (0.462, 0.221), (24.604, 14.609)),
    (BRATS_FLAIR, "Cfd-CAM (ms)"): _dice_iou_hd95((0.698, 0.159), (0.557, 0.181), (17.675, 9.698)),
    (TCGA, "Cfd-CAM (ss)"): _dice_iou_hd95((0.503, 0.253), (0.373, 0.226), (58.668, 35.295)),
    (TCGA, "Cfd-CAM (ms)"): _dice_iou_hd95((0.508, 0.223), (0.369, 0.193), (56.866, 29.337)),
}

# LT-Grad-CAM Table 1: mIoU (%) of Grad-CAM per VGG16 stage and fused stages (VOC).
LTGRAD_TABLE1: PaperTable = {
    ("", "S1"): {"miou": 10.13},
    ("", "S2"): {"miou": 10.87},
    ("", "S3"): {"miou": 11.68},
    ("", "S4"): {"miou": 14.03},
    ("", "S5"): {"miou": 25.31},
    ("", "S3+S4+S5"): {"miou": 22.84},
    ("", "S1+S2+S3+S4+S5"): {"miou": 21.57},
}

LTGRAD_TABLE2: PaperTable = {
    ("", "Grad-CAM++"): _lt(20.32, 47.75, 27.43, 33.06),
    ("", "Grad-CAM"): _lt(25.31, 40.93, 42.02, 39.5),
    ("", "LTGrad-CAM(l=1, δ=0)"): _lt(26.23, 42.46, 44.1, 40.59),
    ("", "FullGrad"): _lt(28.2, 48.72, 42.52, 42.84),
    ("", "LTFullGrad(δ=0)"): _lt(28.11, 48.01, 42.9, 42.77),
}

LTGRAD_TABLE3: PaperTable = {
    ("", "Grad-CAM++"): _lt(20.32, 47.75, 27.43, 33.06),
    ("", "Grad-CAM"): _lt(25.31, 40.93, 42.02, 39.5),
    ("", "FullGrad"): _lt(28.2, 48.72, 42.52, 42.84),
    ("", "Layer-CAM(l=1, δ=0)"): _lt(26.14, 43.41, 43.0, 40.5),
    ("", "Layer-CAM(l=5, δ=0)"): _lt(30.83, 52.07, 45.3, 45.95),
    ("", "LTGrad-CAM(l=5, δ=0)"): _lt(26.87, 40.86, 48.56, 41.24),
    ("", "LTGrad-CAM(l=5, δ=20)"): _lt(28.34, 43.39, 48.78, 43.06),
}

LTGRAD_TABLE4: PaperTable = {
    ("", "Grad-CAM++"): _lt(25.87, 34.75, 50.31, 41.11),
    ("", "Grad-CAM"): _lt(25.73, 27.79, 77.63, 40.93),
    ("", "FullGrad"): _lt(22.14, 23.41, 80.25, 36.25),
    ("", "Layer-CAM(l=1, δ=0)"): _lt(20.50, 21.67, 79.14, 34.03),
    ("", "Layer-CAM(l=5, δ=0)"): _lt(28.92, 31.8, 76.12, 44.86),
    ("", "LTGrad-CAM(l=5, δ=0)"): _lt(33.01, 37.07, 75.06, 49.63),
    ("", "LTGrad-CAM(l=5, δ=20)"): _lt(35.37, 40.88, 72.42, 52.26),
}

#: The demo table compares its CAM rows with the paper's BraTS T2-FLAIR ones; the paper has
#: no self-trained U-Net (its row shows no paper number).
DEMO_TABLE1: PaperTable = {
    **{
        ("demo (BraTS-format FLAIR phantoms)", method): CFDCAM_TABLE1[(BRATS_FLAIR, method)]
        for method in (
            "Grad-CAM (2016)",
            "ScoreCAM (2020)",
            "LayerCAM (2021)",
            "Cfd-CAM (ours)",
            "Opt. U-net (2021)",
        )
    },
    ("demo (BraTS-format FLAIR phantoms)", "Cfd-CAM (ours), with SupCon"): {},
    ("demo (BraTS-format FLAIR phantoms)", "Cfd-CAM -> U-Net (self-trained)"): {},
}

PAPER: dict[str, PaperTable] = {
    "cfdcam_table1": CFDCAM_TABLE1,
    "cfdcam_table2": CFDCAM_TABLE2,
    "demo_table1": DEMO_TABLE1,
    "ltgrad_table1": LTGRAD_TABLE1,
    "ltgrad_table2": LTGRAD_TABLE2,
    "ltgrad_table3": LTGRAD_TABLE3,
    "ltgrad_table4": LTGRAD_TABLE4,
    # Fig. 4 / Fig. 5 are curves; the paper prints no numbers for them.
    "ltgrad_fig4": {},
    "ltgrad_fig5": {},
}
