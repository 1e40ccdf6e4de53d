"""The sweep table renders split-level metrics, whose std is null (VOC/KSDD2)."""

from __future__ import annotations

from src.evaluation.sweep_report import to_markdown


def test_markdown_renders_metrics_without_std():
    rows = [
        {
            "job": "0_delta=0",
            "method": "ltgradcam",
            "delta": 0,
            "data": "ksdd2",
            "modality": None,
            "miou_mean": 0.3537,
            "miou_std": None,
            "dice_mean": 0.5,
            "dice_std": 0.25,
        },
    ]
    table = to_markdown(rows).splitlines()
    assert table[0] == "| method | delta | miou | dice | job |"
    assert table[2] == "| ltgradcam | 0 | 0.3537 | 0.500 ± 0.250 | 0_delta=0 |"
