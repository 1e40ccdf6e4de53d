"""Split engine (docs/data.md): sizes, determinism, disjointness, split files."""

from __future__ import annotations

import json

import pytest
import torch

from src.data.base import sample_weights
from src.data.errors import DataFormatError
from src.data.splits import carve_val, read_split_file, seeded_split, write_split_file

IDS = [f"case{i:03d}" for i in range(50)]


@pytest.mark.parametrize(
    "n, expected",
    [
        (1, [1, 0, 0]),
        (2, [1, 1, 0]),
        (3, [1, 1, 1]),
        (10, [8, 1, 1]),
        (12, [10, 1, 1]),
        (50, [40, 5, 5]),
    ],
)
def test_sizes_keep_every_split_filled_when_possible(n, expected):
    split = seeded_split(IDS[:n], (0.8, 0.1, 0.1), seed=0)
    assert [len(split[k]) for k in ("train", "val", "test")] == expected


def test_seeded_split_is_a_deterministic_partition():
    a = seeded_split(IDS, (0.8, 0.1, 0.1), seed=7)
    b = seeded_split(list(reversed(IDS)), (0.8, 0.1, 0.1), seed=7)  # input order is irrelevant
    assert a == b
    assert sorted(a["train"] + a["val"] + a["test"]) == IDS
    assert not set(a["train"]) & set(a["val"]) and not set(a["val"]) & set(a["test"])
    assert seeded_split(IDS, (0.8, 0.1, 0.1), seed=8) != a
    with pytest.raises(ValueError, match="split_ratios"):
        seeded_split(IDS, (0.8, -0.1, 0.3), seed=0)


def test_carve_val_keeps_official_test():
    split = carve_val(IDS[:20], IDS[20:25], 0.1, seed=1)
    assert split["test"] == IDS[20:25]
    assert len(split["val"]) == 2 and sorted(split["train"] + split["val"]) == IDS[:20]


def test_split_file_round_trip_and_errors(tmp_path):
    split = seeded_split(IDS, (0.8, 0.1, 0.1), seed=0)
    write_split_file(tmp_path / "split.json", split)
    assert read_split_file(tmp_path / "split.json", IDS) == split
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": IDS[:2], "holdout": IDS[2:3]}))
    with pytest.raises(DataFormatError, match=r"bad.json: unknown split names \['holdout'\]"):
        read_split_file(bad, IDS)
    bad.write_text("{not json")
    with pytest.raises(DataFormatError, match="bad.json: cannot parse"):
        read_split_file(bad, IDS)
    with pytest.raises(DataFormatError, match="split file not found"):
        read_split_file(tmp_path / "missing.json", IDS)


def test_sample_weights_balance_classes():
    labels = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    assert sample_weights(labels).tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3])
    multi = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # item 2 has the rarer class 1 (1 item) -> weight 1; item 1 only class 0 (2 items) -> 1/2.
    assert sample_weights(multi).tolist() == pytest.approx([0.5, 1.0, 1.0])
