"""Every option of every config group composes, and every node with a `_target_` is a plain
constructor call: `hydra.utils.instantiate(node)` builds it on its own, given only the runtime
objects the pipeline passes (a network, the DataModule's task, a stage's folder)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import get_class, get_object, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import src.pipeline.store as store
from src.models.backbones import build_backbone
from src.pipeline.config import ConfigError, validate_config
from src.pipeline.stages import build_datamodule
from src.pipeline.trainer import trainer_node

CONF = Path(__file__).resolve().parents[2] / "conf"
# Hydra's own group (run folders, the submitit launchers) is not part of the job's config.
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONF / group).glob("*.yaml"))]


def _target_nodes(node: Any, path: str = "") -> list[str]:
    """Dotted paths of the outermost nodes with a `_target_` (instantiate builds the inner)."""
    if isinstance(node, dict):
        if "_target_" in node:
            return [path]
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return []
    return [p for key, value in items for p in _target_nodes(value, f"{path}.{key}".strip("."))]


@functools.cache
def _net(num_classes: int) -> torch.nn.Module:
    return build_backbone("resnet18", num_classes)


def _runtime_arguments(cfg: DictConfig, path: str) -> dict[str, Any]:
    """What the pipeline passes when it instantiates the node at `path` (nothing for most)."""
    datamodule = get_class(cfg.data._target_)
    if path == "backbone.net":
        return {"num_classes": datamodule.num_classes}
    if path == "pretrain.module":
        return {"encoder": _net(0)}
    if path == "finetune.module":
        return {
            "net": _net(datamodule.num_classes),
            "task": datamodule.task,
            "num_classes": datamodule.num_classes,
        }
    if path == "segmenter.module":
        return {"net": torch.nn.Conv2d(3, 1, 1)}
    if path == "trainer":  # the pipeline's per-stage arguments (src/pipeline/trainer.py)
        return {"logger": False, "default_root_dir": "/tmp/trainer", "max_epochs": 1}
    if path.startswith("callbacks."):
        return {"dirpath": "/tmp/checkpoints"}
    return {}


_BUILT: set[tuple[str, str]] = set()


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_target_node_instantiates_on_its_own(make_config, tmp_path, group, option):
    overrides = [f"{group}={option}", f"data.root={tmp_path}", "trainer.accelerator=cpu"]
    if group == "data" and option == "demo":
        overrides.remove(f"data.root={tmp_path}")  # the demo's own folder, not generated here
    cfg = make_config(*overrides)
    plain = OmegaConf.to_container(cfg, resolve=True)
    paths = _target_nodes(plain)
    expected = {"data", "backbone.net", "finetune.module", "trainer"}
    assert expected <= set(paths), paths
    for path in paths:
        node = trainer_node(cfg) if path == "trainer" else OmegaConf.select(cfg, path)
        identity = (path, OmegaConf.to_yaml(node, resolve=True))
        if identity in _BUILT:  # the same node under another option: built once
            continue
        built = instantiate(node, **_runtime_arguments(cfg, path))
        if OmegaConf.select(cfg, f"{path}._partial_"):
            built = built(patch_size=(32, 32))  # segmenter.net: the size comes from the data
        target = get_object(node._target_)
        assert isinstance(built, target if isinstance(target, type) else torch.nn.Module), path
        _BUILT.add(identity)


def test_the_default_run_applies_the_demo_budgets_and_other_data_none(make_config):
    demo = make_config()
    assert demo.data._target_ == "src.data.demo.DemoBraTSDataModule"
    assert not demo.pretrain.enabled and demo.eval.limit == 15
    assert (demo.finetune.epochs, demo.finetune.patience) == (10, 2)  # a cap and an early stop
    assert demo.finetune.module.augment.hflip_p == 0.5 and demo.segmenter.epochs == 10
    brats = make_config("data=brats", "data.root=/some/where")
    assert brats.pretrain.enabled and brats.finetune.epochs == 10 and brats.eval.limit is None
    assert brats.finetune.patience is None  # the paper's recipe trains every epoch
    # An explicit experiment replaces the demo's; both together: the recipe's values win.
    recipe = make_config("experiment=cfdcam_table1")
    assert recipe.pretrain.enabled and recipe.finetune.epochs == 10
    both = make_config("experiment=[demo,cfdcam_table1]")
    assert not both.pretrain.enabled and both.finetune.module.lr == 1e-4
    assert both.finetune.module.augment.hflip_p == 0.5 and both.finetune.epochs == 10


def test_the_tcga_demo_applies_its_budgets_on_any_kaggle_3m_folder(make_config):
    """`data=demo_tcga` brings conf/experiment/demo_tcga.yaml; with `data.root=... data.demo=null`
    the same recipe runs on a folder made elsewhere."""
    demo = make_config("data=demo_tcga")
    real = make_config("data=demo_tcga", "data.root=/data/kaggle_3m", "data.demo=null")
    assert demo.data._target_ == "src.data.demo.DemoTCGADataModule" and demo.data.demo
    assert real.data.demo is None and real.data.root == "/data/kaggle_3m"
    for cfg in (demo, real):
        assert not cfg.pretrain.enabled and cfg.backbone.net.weights is None  # from scratch
        assert (cfg.backbone.net.arch, cfg.backbone.net.norm, cfg.backbone.net.head) == (
            "resnet18",
            "batch",
            "gmp",
        )
        assert cfg.finetune.epochs == 6 and cfg.eval.limit == 15 and cfg.cam.name == "cfdcam"
        assert cfg.callbacks.classifier_checkpoint.monitor == "val/loss"
        assert cfg.data.image_size == 112 and cfg.data.crop_foreground
        assert cfg.data.channels == "flair"


# The model-store keys of networks trained before the config groups moved (task and
# num_classes in finetune.module, monitor in finetune/segmenter, data.evaluation, the demo as
# BraTSDataModule with `demo`), computed by that code with the data root's fingerprint
# replaced by its path. Those stored networks must still be found.
FORMER_KEYS = {
    ("default", "pretrain"): "99739b9431c510d0",
    ("default", "finetune"): "ee7b50bd4b52ac04",
    ("default", "segmenter"): "c4368b4a3162b495",
    ("voc", "finetune"): "770449af803b9525",
    ("ksdd2", "finetune"): "d65bbad042d36fc1",
    ("tcga_lgg", "finetune"): "2f64b01df2a538d9",
    ("ltgrad_fig4", "finetune"): "41ee8198ab895b97",
}


@pytest.mark.parametrize(("config", "stage"), list(FORMER_KEYS))
def test_networks_stored_before_the_move_are_still_found(make_config, monkeypatch, config, stage):
    monkeypatch.setattr(store, "content_fingerprint", lambda path, memo: str(path))
    overrides = ["paths.root_dir=/tmp/proj"]
    if config in ("voc", "ksdd2", "tcga_lgg"):
        overrides += [f"data={config}", "data.root=/tmp/x"]
    elif config != "default":
        overrides += [f"experiment={config}", "data.root=/tmp/x"]
    else:  # the demo's budget as it was then (3 epochs; the early stop came later)
        overrides += ["finetune.epochs=3", "finetune.patience=null"]
    cfg = make_config(*overrides)
    assert store.fingerprint(store.training_key(cfg, stage)) == FORMER_KEYS[config, stage]


@pytest.mark.parametrize(
    "old",
    [
        {"evaluation": {"metrics": "confusion", "miou": "all"}},
        {"_target_": "src.data.brats.BraTSDataModule", "demo": {"n_cases": 24}},
    ],
)
def test_a_data_config_of_an_older_run_is_reported(make_config, old):
    """`stage=masks` rebuilds the data of the run it re-masks, from its config.yaml."""
    cfg = make_config()
    with open_dict(cfg):
        cfg.data = OmegaConf.merge(cfg.data, old)
    with pytest.raises(ConfigError, match="data config of an older run"):
        build_datamodule(cfg)


def test_cam_layers_are_checked_against_the_networks_own_stages(make_config):
    """`cam_stages` lives on the network only; `cam.layers` counts them or names them."""
    ok = make_config(
        "backbone=vgg16", "backbone.net.norm=batch", "cam=gradcam", "cam.layers=[features.6]"
    )
    validate_config(ok)  # VGG16-BN's first max-pool, whichever backbone file built it
    for layers, message in (
        ("[features.4]", "does not have"),
        ("[]", "names no stage"),
        ("6", "integer in"),
    ):
        cfg = make_config("backbone=vgg16_bn", "cam=gradcam", f"cam.layers={layers}")
        with pytest.raises(ConfigError, match=message):
            validate_config(cfg)


@pytest.mark.parametrize("data", ["demo", "brats", "tcga_lgg", "voc", "ksdd2"])
def test_no_data_config_sets_a_batch_size_the_stages_ignore(make_config, data):
    """Every stage trains and evaluates with its own batch size; `data.batch_size` did
    nothing but enter the store key (where its former value stays, FORMER_KEYS)."""
    cfg = make_config(f"data={data}", "data.root=/tmp/x")
    assert "batch_size" not in cfg.data
