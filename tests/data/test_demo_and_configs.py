"""Demo data cache and the Hydra configs of the data group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from src.data.brats import BraTSDataModule
from src.data.demo import (
    MARKER,
    DemoBraTSDataModule,
    DemoKSDD2DataModule,
    DemoTCGADataModule,
    DemoVOCDataModule,
    ensure_demo_brats,
    ensure_demo_ksdd2,
    ensure_demo_tcga,
    ensure_demo_voc,
)
from src.data.generators.tcga_lgg import generate_tcga_lgg
from src.data.tcga_lgg import TCGALGGDataModule, read_binary_mask
from src.pipeline.stages import datamodule_arguments
from tests.helpers.files import snapshot

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"
TINY = {"shape": [24, 24, 10], "normal_cases": 1}


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_demo_is_generated_once_and_rebuilt_on_change(tmp_path):
    root = tmp_path / "demo"
    assert ensure_demo_brats(root, n_cases=3, seed=0, **TINY) == root
    marker = json.loads((root / MARKER).read_text())
    assert marker["params"]["n_cases"] == 3 and len(marker["cases"]) == 3
    first = _mtimes(root)
    ensure_demo_brats(root, n_cases=3, seed=0, **TINY)
    assert _mtimes(root) == first  # cached: nothing rewritten

    # An incomplete folder is rebuilt.
    case = marker["cases"][0]
    (root / case / f"{case}_t2.nii.gz").unlink()
    ensure_demo_brats(root, n_cases=3, seed=0, **TINY)
    assert (root / case / f"{case}_t2.nii.gz").is_file()

    # A marker with the right parameters but no cases listed (an interrupted generation)
    # is not a complete copy either.
    (root / MARKER).write_text(json.dumps({**marker, "cases": []}))
    ensure_demo_brats(root, n_cases=3, seed=0, **TINY)
    assert json.loads((root / MARKER).read_text())["cases"] == marker["cases"]

    # Other parameters rebuild it; the reader ignores the hidden marker.
    ensure_demo_brats(root, n_cases=4, seed=1, **TINY)
    assert len([p for p in root.iterdir() if p.is_dir()]) == 4
    dm = BraTSDataModule(root, cache_dir=tmp_path / "cache")
    dm.setup()
    assert sum(len(v) for v in dm.split.values()) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo")]  # no temp dirs left


def test_demo_refuses_to_replace_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a generated demo folder"):
        ensure_demo_brats(tmp_path / "mine", n_cases=2, **TINY)


KSDD2_TINY = {"n_train": 6, "n_test": 4, "defect_fraction": 0.5, "size": [126, 46]}


def test_ksdd2_demo_is_generated_once_rebuilt_on_change_and_read_by_the_reader(tmp_path):
    root = tmp_path / "ksdd2"
    dm = DemoKSDD2DataModule(root, demo=KSDD2_TINY, image_size=None, batch_size=2)
    dm.prepare_data()
    marker = json.loads((root / MARKER).read_text())
    assert len(marker["files"]) == 2 * (6 + 4)
    first = _mtimes(root)
    ensure_demo_ksdd2(root, **KSDD2_TINY)
    assert _mtimes(root) == first  # cached: nothing rewritten

    (root / marker["files"][0]).unlink()  # incomplete: rebuilt
    ensure_demo_ksdd2(root, **KSDD2_TINY)
    assert (root / marker["files"][0]).is_file()

    dm.setup()
    assert len(dm.split["test"]) == 4 and len(dm.split["train"]) + len(dm.split["val"]) == 6
    labels = [dm.dataset("test")[i]["label"].item() for i in range(4)]
    assert set(labels) <= {0.0, 1.0}

    ensure_demo_ksdd2(root, **{**KSDD2_TINY, "n_test": 5})
    assert len(list((root / "test").glob("*_GT.png"))) == 5


def test_ksdd2_demo_refuses_to_replace_a_real_folder(tmp_path):
    (tmp_path / "KSDD2" / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a generated demo folder"):
        ensure_demo_ksdd2(tmp_path / "KSDD2", **KSDD2_TINY)


VOC_TINY = {"n_train": 10, "n_val": 6, "size": [40, 56]}


def test_voc_demo_is_read_by_the_voc_reader_and_generated_once(tmp_path):
    """The generated folder is a VOC2012 devkit to the real reader: multi-hot labels from the
    XML, palette masks with classes and a void band, the official lists; the marker keeps it
    from being regenerated, and other parameters rebuild it."""
    from src.data.voc import VOC_CLASSES, VOID, read_index_mask

    root = tmp_path / "voc"
    dm = DemoVOCDataModule(root, demo=VOC_TINY, image_size=None, batch_size=1)
    assert not root.exists()  # building the DataModule generates nothing
    dm.prepare_data()
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Main"):
        assert (voc / sub).is_dir()
    marker = json.loads((root / MARKER).read_text())
    assert len(list((voc / "JPEGImages").glob("*.jpg"))) == 16
    assert all((root / f).is_file() for f in marker["files"])
    first = _mtimes(root)
    ensure_demo_voc(root, **VOC_TINY)
    assert _mtimes(root) == first  # cached: nothing rewritten

    dm.setup()
    assert len(dm.split["test"]) == 6 and len(dm.split["train"]) + len(dm.split["val"]) == 10
    labels, values = [], set()
    for i in range(6):
        item = dm.dataset("test")[i]
        label = item["label"]
        assert label.shape == (len(VOC_CLASSES),) and 1 <= label.sum() <= 3
        mask = item["mask"].numpy()
        present = {int(v) for v in mask.ravel()} - {0, VOID}
        assert present <= {int(c) + 1 for c in torch.nonzero(label).flatten()}
        labels.append(label)
        values |= {int(v) for v in mask.ravel()}
    assert {0, VOID} <= values and len(values) > 2  # background, void band, classes
    train_ids = [dm.dataset("train")[i]["label"] for i in range(len(dm.split["train"]))]
    assert max(float(x.sum()) for x in labels + train_ids) >= 2  # multi-label images
    mask_file = next((voc / "SegmentationClass").glob("*.png"))
    assert read_index_mask(mask_file).dtype == "uint8"
    main = (voc / "ImageSets" / "Main" / "aeroplane_val.txt").read_text().split()
    assert len(main) == 12 and set(main[1::2]) <= {"1", "-1"}

    ensure_demo_voc(root, **{**VOC_TINY, "n_val": 4})
    assert len((voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()) == 4


def test_voc_demo_recipe_reads_a_folder_as_it_is_with_demo_null(tmp_path):
    """`data=demo_voc data.root=<folder> data.demo=null`: the demo's recipe (its network,
    CAM and budgets) on a VOC folder made by other code (the plumbing generator), which is
    read and never written."""
    from src.data.generators.voc import generate_voc

    root = tmp_path / "VOC2012-other"
    lists = generate_voc(root, n_train=6, n_val=3, seed=1)
    before = snapshot(root)
    from src.pipeline.compose import compose_config

    overrides = ["data=demo_voc", f"data.root={root}", "data.demo=null"]
    cfg = compose_config(overrides, tmp_path / "run")
    assert cfg.backbone.net.width == 0.125 and cfg.backbone.net.head == "gmp"
    assert cfg.cam.name == "ltgradcam" and cfg.cam.layers == 5 and cfg.pretrain.enabled is False
    assert cfg.finetune.epochs == 30 and cfg.eval.limit is None
    dm = instantiate(cfg.data)
    assert isinstance(dm, DemoVOCDataModule) and dm.demo is None
    dm.prepare_data()
    dm.setup()
    assert sorted(dm.split["test"]) == sorted(lists["val"])
    assert dm.dataset("test")[0]["image"].shape == (3, 160, 160)
    assert snapshot(root) == before and not (root / MARKER).exists()


def test_voc_demo_refuses_to_replace_a_real_folder(tmp_path):
    (tmp_path / "VOC" / "VOCdevkit").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a generated demo folder"):
        ensure_demo_voc(tmp_path / "VOC", **VOC_TINY)


TCGA_TINY = {"n_patients": 3, "size": 48, "n_slices": [6, 8], "tumour_depth": 0.7}


def test_tcga_demo_is_generated_once_rebuilt_on_change_and_read_by_the_reader(tmp_path):
    root = tmp_path / "tcga"
    dm = DemoTCGADataModule(root, demo={**TCGA_TINY, "compress": True}, batch_size=2)
    assert not root.exists()  # building the DataModule generates nothing
    dm.prepare_data()
    marker = json.loads((root / MARKER).read_text())
    masks = sorted(root.glob("kaggle_3m/TCGA_*/*_mask.tif"))
    assert len(marker["files"]) == 2 * len(masks) + 1  # images, masks, data.csv
    first = _mtimes(root)
    ensure_demo_tcga(root, **TCGA_TINY, compress=True)
    assert _mtimes(root) == first  # cached: nothing rewritten

    (root / marker["files"][-1]).unlink()  # incomplete: rebuilt
    ensure_demo_tcga(root, **TCGA_TINY, compress=True)
    assert (root / marker["files"][-1]).is_file()

    # The real reader: labels and masks are the mask files'; every patient has a tumour on
    # some of its slices and none on the others.
    dm.setup()
    patients = sorted(p.name for p in (root / "kaggle_3m").glob("TCGA_*"))
    assert sorted(sum(dm.split.values(), [])) == patients
    for split in ("train", "val", "test"):
        data = dm.dataset(split)
        for patient in dm.split[split]:
            rows = [i for i, item_id in enumerate(data.ids) if item_id.startswith(patient)]
            labels = [data[i]["label"].item() for i in rows]
            assert 0 < sum(labels) < len(labels)
            for i in rows:
                n = int(data.ids[i].split("/s")[1])
                mask = read_binary_mask(root / "kaggle_3m" / patient / f"{patient}_{n}_mask.tif")
                assert data[i]["label"].item() == float(mask.any())
                assert torch.equal(data[i]["mask"], torch.from_numpy(mask).long())

    ensure_demo_tcga(root, **{**TCGA_TINY, "n_patients": 4, "compress": True})
    assert len(list((root / "kaggle_3m").glob("TCGA_*"))) == 4


def test_tcga_demo_refuses_to_replace_a_real_folder(tmp_path):
    generate_tcga_lgg(tmp_path / "kaggle", n_patients=1, size=32, n_slices=(3, 3))
    before = snapshot(tmp_path / "kaggle")
    with pytest.raises(FileExistsError, match="not a generated demo folder"):
        DemoTCGADataModule(tmp_path / "kaggle", demo=TCGA_TINY).prepare_data()
    assert snapshot(tmp_path / "kaggle") == before


def test_tcga_demo_recipe_reads_a_folder_as_it_is_with_demo_null(tmp_path):
    """`data=demo_tcga data.root=<folder> data.demo=null`: the demo's recipe on a kaggle_3m
    folder made by other code, which is read and never written."""
    root = tmp_path / "lgg-mri-segmentation"
    patients = generate_tcga_lgg(root, n_patients=3, seed=1, size=40, n_slices=(4, 6))
    before = snapshot(root)
    cfg = _compose(tmp_path, "demo_tcga", f"data.root={root}", "data.demo=null")
    dm = instantiate(cfg.data)
    assert isinstance(dm, DemoTCGADataModule) and dm.demo is None
    dm.prepare_data()
    dm.setup()
    assert sorted(sum(dm.split.values(), [])) == patients
    assert dm.dataset("train")[0]["image"].shape == (3, 112, 112)
    assert snapshot(root) == before and not (root / MARKER).exists()


def _compose(tmp_path: Path, data: str, *overrides: str):
    """Compose the real ``conf/data`` group under a minimal primary config with Hydra."""
    from hydra import compose, initialize_config_dir

    primary = tmp_path / "conf"
    (primary / "data").mkdir(parents=True, exist_ok=True)
    for f in CONF.glob("*.yaml"):
        (primary / "data" / f.name).write_text(f.read_text())
    (primary / "config.yaml").write_text(
        "defaults:\n  - data: brats\n  - _self_\n"
        f"modality: t2\npaths:\n  cache_dir: {tmp_path / 'cache'}\n"
    )
    with initialize_config_dir(str(primary), version_base="1.3"):
        return compose("config", overrides=[f"data={data}", *overrides])


def test_demo_config_instantiates_brats_module(tmp_path):
    cfg = _compose(tmp_path, "demo")
    data = datamodule_arguments(cfg.data)
    assert {"n_cases", "seed"} <= set(data["demo"])
    assert data["root"] == str(tmp_path / "cache" / "demo" / "brats2021")
    assert data["cache_dir"] == str(tmp_path / "cache" / "slices")
    dm = instantiate(cfg.data)
    assert isinstance(dm, DemoBraTSDataModule) and isinstance(dm, BraTSDataModule)
    assert {"n_cases", "seed"} <= set(dm.demo)
    assert dm.modalities == ["t2"] and dm.image_size == (112, 112) and dm.slice_range == (40, 120)
    assert dm.crop_foreground and dm.slice_step == 2


def test_demo_tcga_config_instantiates_the_tcga_module(tmp_path):
    cfg = _compose(tmp_path, "demo_tcga")
    assert cfg.data.root == str(tmp_path / "cache" / "demo" / "tcga_lgg")
    dm = instantiate(cfg.data)
    assert isinstance(dm, DemoTCGADataModule) and isinstance(dm, TCGALGGDataModule)
    assert dm.demo["normal_patients"] == 0 and dm.demo["n_patients"] > 0
    assert dm.image_size == (112, 112) and dm.crop_foreground and dm.weighted_sampling
    assert dm.channels == "flair"


def test_demo_datamodule_generates_its_data_in_prepare_data(tmp_path):
    cfg = _compose(
        tmp_path,
        "demo",
        "data.demo.n_cases=2",
        "data.demo.normal_cases=1",
        "+data.demo.shape=[24,24,10]",
    )
    dm = instantiate(cfg.data)
    assert not dm.root.exists()  # building the DataModule generates nothing
    dm.prepare_data()
    assert json.loads((dm.root / MARKER).read_text())["params"]["n_cases"] == 2
    first = _mtimes(dm.root)
    instantiate(cfg.data).prepare_data()
    assert _mtimes(dm.root) == first  # once per parameter set


@pytest.mark.parametrize("name", ["brats", "tcga_lgg", "ksdd2", "voc"])
def test_dataset_configs_instantiate(name, tmp_path):
    cfg = _compose(tmp_path, name, f"data.root={tmp_path}")
    dm = instantiate(cfg.data)  # the node alone, nothing popped
    assert dm.root == tmp_path and dm.num_classes in (1, 20) and dm.batch_size > 0
    if name == "brats":
        assert dm.modalities == ["t2"] and dm.tumour_area_fraction == 0.01
