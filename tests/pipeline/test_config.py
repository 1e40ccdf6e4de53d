"""Every dataset x backbone x CAM combination composes; bad values fail at start-up, naming the field."""

from __future__ import annotations

import itertools

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from src.cams import CAM_METHODS
from src.models.backbones import build_backbone, min_image_size, stage_names
from src.pipeline.config import ConfigError, cam_options, check_paths, validate_config

DATASETS = ("demo", "brats", "tcga_lgg", "voc", "ksdd2")
BACKBONES = ("resnet18", "vgg16")
CAMS = CAM_METHODS  # every method has a config
OTHER_NORMS = [("vgg16", "none"), ("vgg16", "batch"), ("resnet18", "batch")]


@pytest.mark.parametrize(("data", "backbone"), list(itertools.product(DATASETS, BACKBONES)))
def test_every_combination_composes_and_validates(make_config, data, backbone):
    for cam in CAMS:
        cfg = make_config(
            f"data={data}", f"backbone={backbone}", f"cam={cam}", "data.root=/some/where"
        )
        OmegaConf.resolve(cfg)  # every interpolation resolves
        if "fullgrad" in cam and backbone == "resnet18":  # InstanceNorm: no biases
            with pytest.raises(ConfigError, match="needs a backbone with biases"):
                validate_config(cfg)
            continue
        validate_config(cfg)
        assert cfg.cam.name == cam
        assert cfg.cam.layers <= len(stage_names(cfg.backbone.net.arch, cfg.backbone.net.norm))
        assert {"name", "layers", "mask"}.isdisjoint(cam_options(cfg.cam))


def test_readme_command_composes(make_config):
    cfg = make_config("cam=cfdcam", "data=brats", "modality=flair", "data.root=/data/brats")
    assert cfg.data.modality == "flair"
    cfg = make_config("cam=cfdcam", "data=brats", "modality=t1ce", "data.root=/data/brats")
    assert cfg.data.modality == "t1ce"
    assert cfg.cam.options.scales == [1, 2] and cfg.cam.mask == "densecrf"


def test_defaults_are_demo_cfdcam(make_config):
    cfg = make_config()
    assert cfg.cam.name == "cfdcam"
    assert cfg.stage == "all"
    assert "demo" in cfg.data
    validate_config(cfg)


def test_unknown_group_option_names_the_group(make_config):
    with pytest.raises(MissingConfigException, match="cam"):
        make_config("cam=gradcamm")


def test_misspelt_key_names_the_key(make_config):
    with pytest.raises(ConfigCompositionException, match="detla"):
        make_config("cam=ltgradcam", "cam.detla=20")


@pytest.mark.parametrize("delta", [100, -1, 150.5])
def test_delta_out_of_range_names_the_field(make_config, delta):
    cfg = make_config("cam=ltgradcam", f"cam.options.delta={delta}")
    with pytest.raises(ConfigError, match=r"'cam\.options\.delta'"):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("stage=train", "stage"),
        ("modality=t3", "data.modality"),
        ("eval.split=dev", "eval.split"),
        ("cam.mask=crf", "cam.mask"),
        ("cam.layers=9", "cam.layers"),
        ("eval.limit=0", "eval.limit"),
        ("cam.options.scales=[0]", "cam.options.scales"),
        ("cam.options.batch_size=0", "cam.options.batch_size"),
        ("cam.options.preset=pgc", "cam.options.preset"),
        ("data.image_size=-5", "data.image_size"),
        ("data.image_size=[96,0]", "data.image_size"),
        ("data.image_size=[96,96,96]", "data.image_size"),
        ("data.image_size=7", "data.image_size"),
        ("data.image_size=[64,31]", "data.image_size"),
        ("threads=0", "threads"),
        ("threads=-1", "threads"),
        ("finetune.patience=0", "finetune.patience"),
        ("finetune.patience=1.5", "finetune.patience"),
        ("++segmenter.patience=true", "segmenter.patience"),
        ("backbone.net.padding_mode=circular", "backbone.net.padding_mode"),
        ("eval.faithfulness=1", "eval.faithfulness"),
        ("eval.faithfulness_steps=0", "eval.faithfulness_steps"),
        ("eval.faithfulness_chunk=2.5", "eval.faithfulness_chunk"),
        ("eval.faithfulness_baseline=noise", "eval.faithfulness_baseline"),
    ],
)
def test_bad_values_name_their_field(make_config, override, field):
    cfg = make_config(override)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert info.value.field == field
    assert field in str(info.value)


def test_a_patience_needs_the_monitored_score_it_stops_on(make_config):
    """`monitor=null` keeps the last epoch; an early stop would have nothing to watch."""
    last = "callbacks.classifier_checkpoint.monitor=null"
    validate_config(make_config(last, "finetune.patience=null"))
    with pytest.raises(ConfigError, match=r"finetune\.patience stops .* monitor is null") as info:
        validate_config(make_config(last, "finetune.patience=2"))
    assert info.value.field == "finetune.patience"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=voc"], "VOCDataModule is multilabel"),
        (["method=supervised"], "method=supervised has no classifier"),
    ],
)
def test_faithfulness_needs_a_binary_cam_run(make_config, overrides, message):
    validate_config(make_config("eval.faithfulness=true", "data=tcga_lgg", "data.root=/x"))
    cfg = make_config("eval.faithfulness=true", "data.root=/x", *overrides)
    with pytest.raises(ConfigError, match=rf"'eval\.faithfulness'.*{message}"):
        validate_config(cfg)


def test_an_option_the_method_lacks_names_its_valid_options(make_config):
    """`cam.options.delta=30` on the default cfdcam (the entry point makes it an upsert): the
    CAM engine's message, at start-up."""
    cfg = make_config("++cam.options.delta=30")
    with pytest.raises(ConfigError, match=r"'cam\.options\.delta'.*'cfdcam'") as info:
        validate_config(cfg)
    assert "'scales'" in str(info.value)
    validate_config(make_config("cam=ltgradcam", "cam.options.fold_batchnorm=false"))


@pytest.mark.parametrize("size", ["112", "[96,128]", "null", "33"])
def test_good_image_sizes_pass(make_config, size):
    validate_config(make_config(f"data.image_size={size}"))
    validate_config(make_config(f"data.image_size={size}", "backbone=vgg16_bn"))


@pytest.mark.parametrize(("arch", "norm"), [("resnet18", "instance"), *OTHER_NORMS])
def test_the_smallest_image_each_backbone_takes_trains(arch, norm):
    """At its minimum side a training step runs and the deepest stage keeps a pixel."""
    side = min_image_size(arch, norm)
    assert side == (33 if norm == "instance" else 32)
    net = build_backbone(arch, num_classes=2, norm=norm).train()
    last = dict(net.named_modules())[net.cam_stages[-1]]
    shapes = []
    last.register_forward_hook(lambda module, args, out: shapes.append(out.shape))
    net(torch.zeros(2, 3, side, side)).sum().backward()
    assert min(shapes[0][-2:]) >= 1


@pytest.mark.parametrize(("arch", "side"), [("resnet18", 33), ("vgg16", 32)])
def test_the_smallest_image_with_reflect_padding_trains(arch, side):
    """Reflect padding cannot mirror a one-pixel map: ResNet-18's deepest stage needs two."""
    assert min_image_size(arch, "batch", "reflect") == side
    net = build_backbone(arch, num_classes=2, norm="batch", padding_mode="reflect").train()
    net(torch.zeros(2, 3, side, side)).sum().backward()


def test_paths_the_config_names_must_exist(make_config, tmp_path):
    check_paths(make_config())  # the demo's folder is generated on first use
    check_paths(make_config("data=brats", f"data.root={tmp_path}"))
    for overrides, field in (
        (["data=brats", f"data.root={tmp_path / 'nonexistent'}"], "data.root"),
        ([f"ckpt={tmp_path / 'absent.ckpt'}"], "ckpt"),
        ([f"ckpt={tmp_path}"], "ckpt"),
    ):
        with pytest.raises(ConfigError) as info:
            check_paths(make_config(*overrides))
        assert info.value.field == field


def test_real_dataset_without_root_is_rejected(make_config):
    cfg = make_config("data=brats")
    with pytest.raises(Exception, match="root"):
        validate_config(cfg)


@pytest.mark.parametrize("value", [1, 1.5, -0.1, "true"])
def test_normal_area_max_out_of_range_names_the_field(make_config, value):
    cfg = make_config(f"eval.normal_area_max={value}")
    with pytest.raises(ConfigError, match=r"eval\.normal_area_max"):
        validate_config(cfg)


def test_cam_options_is_the_options_node_as_a_plain_dict(make_config):
    cfg = make_config("cam=ltgradcam", "cam.options.delta=20")
    options = cam_options(cfg.cam)
    assert type(options) is dict and options["delta"] == 20 and options["scales"] == [1]
    assert not {"name", "layers", "mask", "threshold"} & set(options)


def test_an_option_outside_cam_options_names_its_new_place(make_config):
    """A build_cam option at the top of `cam` (the layout before `cam.options`) would not reach
    the CAM: the start-up check stops it."""
    cfg = make_config("cam=ltgradcam", "++cam.delta=20")
    with pytest.raises(ConfigError, match=r"'cam\.delta'.*cam\.options\.delta"):
        validate_config(cfg)
