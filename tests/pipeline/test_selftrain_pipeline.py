"""`method=selftrain` through the real pipeline on tiny generated BraTS-format data: the
classifier's CAMs of training slices become pseudo-masks (the CAM path's own masks on the
slices labelled positive, empty on the others), the U-Net learns from them and no pixel
label, and maps, pseudo-masks and U-Net are stored and reused."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from src.data.brats import BraTSDataModule
from src.evaluation.items import item_index, truncated_uint8_rgb
from src.evaluation.map_store import MAPS_FILE, read_maps
from src.evaluation.masks import MaskMaker
from src.evaluation.settings import Method
from src.pipeline.config import ConfigError
from src.pipeline.selftrain import MASKS_FILE, closing_note, plan, with_pseudo_masks
from src.pipeline.stages import build_datamodule, run_pipeline, start_up_checks
from src.pipeline.store import ModelStore, training_key
from src.segmentation.pseudo_masks import read_masks

pytestmark = pytest.mark.slow

EVAL_IMAGES = 4
TRAINING_SLICES = 6  # 3 labelled positive (CAMs), 3 negative
CAM = ("cam=gradcam", "cam.mask=densecrf")


@pytest.fixture(scope="module")
def workspace(module_tmp_path, brats_e2e) -> dict[str, Path]:
    """This module's runs on the session's BraTS data and store (whose classifier the
    end-to-end tests train with the same settings)."""
    return {
        "root": module_tmp_path,
        **{k: brats_e2e[k] for k in ("data", "slices", "store")},
    }


def _overrides(workspace: dict[str, Path], store: Path, *extra: str) -> list[str]:
    return [
        "method=selftrain",
        "data=brats",
        f"data.root={workspace['data']}",
        f"data.cache_dir={workspace['slices']}",
        f"paths.model_store={store}",
        "data.image_size=null",
        # The classifier of tests/pipeline/test_end_to_end.py (same training key).
        "pretrain.epochs=1",
        "pretrain.batch_size=16",
        "finetune.epochs=1",
        "finetune.batch_size=16",
        *CAM,
        f"selftrain.limit={TRAINING_SLICES}",
        "segmenter.epochs=1",
        "segmenter.batch_size=16",
        "segmenter.net.filters=[8,16,32,64,128]",
        f"eval.limit={EVAL_IMAGES}",
        "eval.batch_size=4",
        "eval.mask_workers=0",
        "eval.figure_images=2",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        *extra,
    ]


@pytest.fixture(scope="module")
def config(workspace, composer) -> Callable[..., DictConfig]:
    """``config(out, *extra, store=<the session's>)``: a tiny self-training run."""

    def make(out: Path, *extra: str, store: Path | None = None) -> DictConfig:
        return composer(_overrides(workspace, store or workspace["store"], *extra), out)

    return make


def _entry(store: Path, stage: str) -> Path:
    (entry,) = store.glob(f"{stage}-*")
    return entry


@pytest.fixture(scope="module")
def first_run(workspace, config, single_thread) -> dict[str, object]:
    """The first run in a store of its own that holds only the session's classifier."""
    store = workspace["root"] / "store"
    cfg = config(workspace["root"] / "classifier", "method=cam", "stage=finetune")
    run_pipeline(cfg)  # the session's classifier, trained once for all modules
    store.mkdir()
    classifier = ModelStore(workspace["store"]).entry(cfg, "finetune")
    shutil.copytree(classifier, store / classifier.name)
    out = workspace["root"] / "run1"
    summary = run_pipeline(config(out, store=store))
    entries = {stage: _entry(store, stage) for stage in ("trainmaps", "pseudomasks", "selftrain")}
    return {"out": out, "summary": summary, "store": store, "entries": entries}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_results_are_a_unet_row(first_run):
    out = first_run["out"]
    for name in ("per_image.csv", "summary.json", "cam_maps.npz", "overview.png", "config.yaml"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["method"], summary["mask"], summary["network"]) == (
        "selftrain",
        "threshold 0.5",
        "DynUNet",
    )
    assert summary["pseudo_mask_slices"] == TRAINING_SLICES
    assert summary["pseudo_mask_positives"] == TRAINING_SLICES // 2
    assert summary["training_maps_cpu_seconds"] >= 0
    note = closing_note(summary, Method("gradcam", "densecrf"))
    assert f"{TRAINING_SLICES} training slices: {TRAINING_SLICES // 2} labelled positive" in note
    assert len(_rows(out / "per_image.csv")) == EVAL_IMAGES
    # The weights stored are the last epoch's: no best checkpoint, no validation score.
    assert not list((out / "checkpoints" / "selftrain").glob("best*.ckpt"))
    assert not (first_run["entries"]["selftrain"] / "info.json").exists()


def test_pseudo_masks_are_the_cam_paths_masks(first_run, config, workspace):
    """On the slices labelled positive: the maps and masks a CAM evaluation of the same
    slices makes (`eval.split=train`); on those labelled negative: empty."""
    store = first_run["store"]
    positives = TRAINING_SLICES // 2
    out = workspace["root"] / "cam-on-train"
    cam = config(
        out,
        "method=cam",
        "eval.split=train",
        f"eval.limit={positives}",
        "eval.positive_fraction=1.0",
        store=store,
    )
    run_pipeline(cam)
    maps = dict(read_maps(first_run["entries"]["trainmaps"] / MAPS_FILE))
    evaluated = dict(read_maps(out / MAPS_FILE))
    assert sorted(maps) == sorted(evaluated) and len(maps) == positives
    for image_id, cam_map in maps.items():
        assert np.array_equal(cam_map, evaluated[image_id])
    masks = read_masks(first_run["entries"]["pseudomasks"] / MASKS_FILE)
    assert len(masks) == TRAINING_SLICES
    datamodule = build_datamodule(cam)
    train = datamodule.dataset("train")
    index = item_index(train)
    areas = {row["id"]: int(row["pred_area"]) for row in _rows(out / "per_image.csv")}
    with MaskMaker("densecrf") as rule:
        for image_id, mask in masks.items():
            item = train[index[image_id]]
            if image_id not in maps:
                assert float(item["label"].max()) < 0.5 and not mask.any()
                continue
            assert float(item["label"].max()) > 0.5
            own = rule(truncated_uint8_rgb(item["image"][None]), evaluated[image_id][None])[0]
            assert np.array_equal(mask, own)
            assert int(mask.sum()) == areas[image_id]


def test_a_second_run_recomputes_nothing(first_run, config, workspace):
    store = first_run["store"]
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    out = workspace["root"] / "run2"
    summary = run_pipeline(config(out, store=store))
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    assert before == after
    assert not (out / "checkpoints").exists()
    assert summary["headline"] == first_run["summary"]["headline"]


def test_other_unet_settings_reuse_the_maps_and_masks(first_run, config, workspace):
    """Another U-Net (epochs) trains anew on the same pseudo-masks; another mask rule makes
    new pseudo-masks of the same maps."""
    store = first_run["store"]
    kept = [first_run["entries"]["trainmaps"], first_run["entries"]["pseudomasks"]]
    before = {p: p.stat().st_mtime_ns for entry in kept for p in entry.rglob("*")}
    run_pipeline(config(workspace["root"] / "run3", "segmenter.epochs=2", store=store))
    assert len(list(store.glob("selftrain-*"))) == 2
    run_pipeline(config(workspace["root"] / "run4", "cam.mask=otsu", store=store))
    assert len(list(store.glob("pseudomasks-*"))) == 2
    assert len(list(store.glob("trainmaps-*"))) == 1
    after = {p: p.stat().st_mtime_ns for entry in kept for p in entry.rglob("*")}
    assert before == after


CONFIDENT = ("selftrain.confident_foreground=0.5", "selftrain.confident_background=0.2")


def _store_with_classifier(first_run, folder: Path) -> Path:
    folder.mkdir()
    classifier = _entry(first_run["store"], "finetune")
    shutil.copytree(classifier, folder / classifier.name)
    return folder


@pytest.mark.parametrize("extra", [(), CONFIDENT], ids=["masks", "confident-regions"])
def test_no_pixel_label_reaches_the_training(first_run, config, workspace, monkeypatch, extra):
    """With the training and validation splits' masks replaced by noise, the maps, the
    pseudo-masks and the U-Net's weights are the same, bit for bit (with confident regions
    too: their DenseCRF reads the image, never the pixel labels)."""
    name = "confident" if extra else "plain"
    if extra:  # the clean run of this setting, in a store of its own
        clean_store = _store_with_classifier(first_run, workspace["root"] / f"clean-{name}")
        clean = run_pipeline(
            config(workspace["root"] / f"clean-{name}-run", *extra, store=clean_store)
        )
    else:
        clean_store, clean = first_run["store"], first_run["summary"]
    make_dataset = BraTSDataModule._make_dataset

    def noisy(self, split, groups):
        dataset = make_dataset(self, split, groups)
        if split != "test":
            generator = torch.Generator().manual_seed(1)
            dataset.masks = torch.randint(
                0, 2, dataset.masks.shape, generator=generator, dtype=dataset.masks.dtype
            )
        return dataset

    monkeypatch.setattr(BraTSDataModule, "_make_dataset", noisy)
    store = _store_with_classifier(first_run, workspace["root"] / f"noise-store-{name}")
    summary = run_pipeline(config(workspace["root"] / f"noise-{name}", *extra, store=store))
    noise_train = build_datamodule(config(workspace["root"] / f"n2-{name}")).dataset("train")
    assert noise_train.masks.sum() > 0.4 * noise_train.masks.numel()  # the noise was read
    # Each entry of the noisy run has the name (key) of one of the clean run's, and the
    # same content.
    for stage, file in (("trainmaps", MAPS_FILE), ("pseudomasks", MASKS_FILE)):
        noise = _entry(store, stage)
        clean_maps = dict(read_maps(clean_store / noise.name / file))
        noisy_maps = dict(read_maps(noise / file))
        assert clean_maps.keys() == noisy_maps.keys()
        assert all(np.array_equal(clean_maps[k], noisy_maps[k]) for k in clean_maps), stage
    if extra:  # the confident masks did leave pixels out
        masks = read_masks(_entry(store, "pseudomasks") / MASKS_FILE)
        assert any((m == 255).any() for m in masks.values())
    unet = _entry(store, "selftrain")
    weights = [
        torch.load(folder / unet.name / "weights.pt", weights_only=True)
        for folder in (clean_store, store)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert summary["headline"] == clean["headline"]


def test_keys_follow_what_determines_them(first_run, config, workspace):
    """The maps' key names the classifier, CAM and slices; the pseudo-masks' key adds the
    mask rule; the U-Net's names the pseudo-masks."""
    classifier = _entry(first_run["store"], "finetune") / "weights.pt"
    entries = first_run["entries"]

    def keys(*extra: str):
        cfg = config(workspace["root"] / "keys", *extra)
        pseudo = plan(cfg, build_datamodule(cfg), classifier)
        return json.dumps(pseudo.maps_key, sort_keys=True), pseudo.masks_hash

    base = keys()
    otsu = keys("cam.mask=otsu")
    assert otsu[0] == base[0] and otsu[1] != base[1]
    for change in ("cam=layercam", "selftrain.limit=8", "cam.layers=2"):
        other = keys(change)
        assert other[0] != base[0] and other[1] != base[1], change
    assert keys("segmenter.epochs=3") == base
    # Confident regions (an option the pseudo-masks gained later) make other masks of the
    # same maps; unset, they leave the key as it was, so the masks stored before are found.
    confident = ("selftrain.confident_foreground=0.5", "selftrain.confident_background=0.1")
    ignoring = keys(*confident)
    assert ignoring[0] == base[0] and ignoring[1] != base[1]
    assert keys(*confident[:1], "selftrain.confident_background=0.2")[1] != ignoring[1]
    by_otsu = keys("selftrain.confident_foreground=otsu", *confident[1:])
    assert by_otsu[0] == base[0] and by_otsu[1] not in (base[1], ignoring[1])
    cfg = config(workspace["root"] / "keys")
    former = plan(cfg, build_datamodule(cfg), classifier).masks_key
    assert set(former) == {"scheme", "source", "maps", "mask", "slices", "count"}

    def unet_key(*extra: str) -> dict:
        cfg = config(workspace["root"] / "keys", *extra)
        return training_key(with_pseudo_masks(cfg, base[1]), "selftrain")

    assert unet_key("segmenter.epochs=3") != unet_key()
    stored = json.loads((entries["selftrain"] / "key.json").read_text())
    assert stored["pseudo_masks"] == entries["pseudomasks"].name.removeprefix("pseudomasks-")
    assert base[1] == stored["pseudo_masks"]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("selftrain.source=ground_truth", "selftrain.source"),
        ("selftrain.limit=0", "selftrain.limit"),
        ("selftrain.positive_fraction=0", "selftrain.positive_fraction"),
        ("stage=masks", "stage"),
        ("trainer=ddp", "trainer"),
        ("selftrain.confident_foreground=0.5", "selftrain.confident_background"),
        ("selftrain.confident_background=0.5", "selftrain.confident_foreground"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(make_config, override, field):
    cfg = make_config("method=selftrain", "maps_from=/tmp", override)
    with pytest.raises(ConfigError, match=f"'{field}'") as error:
        start_up_checks(cfg)
    assert error.value.field == field


def test_a_confident_threshold_outside_zero_one_is_refused(make_config):
    cfg = make_config(
        "method=selftrain",
        "selftrain.confident_foreground=0.2",
        "selftrain.confident_background=1.5",
    )
    with pytest.raises(ConfigError, match=r"\[0, 1\]") as error:
        start_up_checks(cfg)
    assert error.value.field == "selftrain.confident_background"
