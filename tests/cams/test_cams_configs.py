"""conf/cam/<name>.yaml: one per method, evaluation keys + `options` that build_cam accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.cams import CAM_METHODS, build_cam, check_options
from tests.helpers.networks import images, tiny_net

CONF = Path(__file__).resolve().parents[2] / "conf" / "cam"
TOP_KEYS = {"name", "layers", "mask", "threshold", "options"}


def load(name: str) -> dict:
    config = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=True)
    assert isinstance(config, dict)
    return config


def test_one_config_per_method_and_presets_of_methods():
    """Every method has its file; any other file is a preset of one (`<method>_<setting>`,
    e.g. ltgradcam_ksdd2: a paper's setting of ltgradcam)."""
    names = sorted(path.stem for path in CONF.glob("*.yaml"))
    assert set(CAM_METHODS) <= set(names)
    for preset in set(names) - set(CAM_METHODS):
        bases = [d for d in load(preset).get("defaults", []) if d != "_self_"]
        method = bases[0] if bases else None
        assert method in CAM_METHODS and preset.startswith(f"{method}_"), preset


@pytest.mark.parametrize("name", CAM_METHODS)
def test_config_builds_its_method(name):
    config = load(name)
    assert config["name"] == name
    assert set(config) == TOP_KEYS
    assert config["mask"] in ("densecrf", "otsu", "threshold")
    assert isinstance(config["layers"], int) and config["layers"] >= 1
    options = config["options"]
    model = tiny_net()
    with build_cam(name, model, ["bn1", "act"][-config["layers"] :], **options) as cam:
        maps = cam(images(1, 16), torch.tensor([1]))
    assert maps.shape == (1, 16, 16)


def test_documented_defaults():
    cfd = load("cfdcam")
    assert (cfd["options"]["scales"], cfd["options"]["preset"], cfd["mask"]) == (
        [1, 2],
        "faithful",
        "densecrf",
    )
    assert load("scorecam")["options"]["preset"] == "pgc"
    for name in ("cfdcam", "scorecam"):  # speed options exist and are off by default
        speed = load(name)["options"]
        assert (speed["autocast_dtype"], speed["channels_last"], speed["compile"]) == (
            None,
            False,
            False,
        )
    for name in ("ltgradcam", "ltlayercam", "ltfullgrad"):
        lt = load(name)
        opts = lt["options"]
        assert (lt["layers"], opts["fusion"], opts["delta"], lt["mask"]) == (4, "sum", 0, "otsu")
    for name in ("cam", "gradcam", "gradcampp", "xgradcam", "layercam", "fullgrad"):
        plain = load(name)
        opts = plain["options"]
        assert (plain["layers"], opts["delta"], opts["fusion"]) == (1, None, "sum")


@pytest.mark.parametrize("name", CAM_METHODS)
def test_every_config_option_is_the_engines_default(name):
    """One source of truth: a config restates build_cam's defaults (to show them to the
    user) but never sets another value, so a run and a direct build_cam call compute the
    same map. (cfdcam.yaml said confidence_scaling: true where the engine's default is the
    preset's own; both presets have it on, so no map changed.)"""
    options = load(name)["options"]
    defaults = check_options(name)
    assert {k: v for k, v in options.items() if defaults[k] != v} == {}
