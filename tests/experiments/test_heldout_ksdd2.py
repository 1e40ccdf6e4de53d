"""The held-out KSDD2-format surfaces (experiments/heldout/ksdd2.py) are read by the project's
KSDD2 reader with the labels and masks they were written with, in KolektorSDD2's file format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from experiments.heldout.ksdd2 import generate_ksdd2
from src.data.ksdd2 import KSDD2DataModule


def test_ksdd2_surfaces_read_with_their_labels(tmp_path):
    root = tmp_path / "ksdd2"
    names = generate_ksdd2(root, train=10, test=6, seed=4)
    manifest = json.loads((root / ".heldout.json").read_text())
    assert manifest["params"] == {"format": "ksdd2", "train": 10, "test": 6, "seed": 4}
    dm = KSDD2DataModule(root, image_size=(160, 58), val_fraction=0.2)
    items = {item["id"]: item for s in ("train", "val", "test") for item in dm.dataset(s)}
    assert sorted(items) == sorted(f"{f}/{n}" for f in ("train", "test") for n in names[f])
    assert {i["id"] for i in dm.dataset("test")} == {f"test/{n}" for n in names["test"]}
    for folder in ("train", "test"):
        files = sorted(p.name for p in (root / folder).iterdir())
        assert files == sorted(f"{n}{s}.png" for n in names[folder] for s in ("", "_GT"))
        defective = []
        for name in names[folder]:
            with Image.open(root / folder / f"{name}.png") as img:
                assert img.format == "PNG" and img.mode == "RGB"
                image = np.asarray(img)
            with Image.open(root / folder / f"{name}_GT.png") as gt_file:
                assert gt_file.mode == "L"
                gt = np.asarray(gt_file)
            assert image.dtype == gt.dtype == np.uint8
            assert gt.shape == image.shape[:2]
            assert 600 <= gt.shape[0] <= 660 and 210 <= gt.shape[1] <= 250  # ~230 x 630
            assert set(np.unique(gt).tolist()) <= {0, 255}
            item = items[f"{folder}/{name}"]
            assert item["label"].item() == float(gt.any()) == manifest[folder][name]["defective"]
            assert bool(manifest[folder][name]["defects"]) == gt.any()
            assert tuple(item["mask"].shape) == (160, 58)
            defective.append(gt.any())
        assert 1 <= sum(defective) < len(defective)  # about a third of each folder


def test_ksdd2_surfaces_are_deterministic(tmp_path):
    a = generate_ksdd2(tmp_path / "a", train=3, test=1, seed=7)
    b = generate_ksdd2(tmp_path / "b", train=3, test=1, seed=7, workers=2)
    assert a == b
    for folder, names in a.items():
        for name in names:
            for suffix in ("", "_GT"):
                pa, pb = (tmp_path / r / folder / f"{name}{suffix}.png" for r in ("a", "b"))
                np.testing.assert_array_equal(
                    np.asarray(Image.open(pa)), np.asarray(Image.open(pb))
                )
    with pytest.raises(FileExistsError):
        generate_ksdd2(tmp_path / "a", train=3, test=1, seed=7)


def test_ksdd2_command_line(tmp_path, capsys):
    from experiments.heldout.__main__ import main

    out = tmp_path / "cli"
    main(["ksdd2", str(out), "--train", "2", "--test", "1", "--seed", "3", "--workers", "1"])
    assert "2 in train/, 1 in test/" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "test").iterdir()) == ["20000.png", "20000_GT.png"]
    assert json.loads((out / ".heldout.json").read_text())["params"]["seed"] == 3
