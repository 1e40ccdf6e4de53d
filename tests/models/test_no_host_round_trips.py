"""The training steps of both stages make no host round trip (.cpu, .item, .numpy): on a
GPU each would stall the step until the device catches up."""

from __future__ import annotations

import pytest
import torch

from src.models.backbones import build_backbone
from src.models.classifier import ClassifierModule
from src.models.supcon import SupConModule


def _forbid_round_trips(monkeypatch) -> None:
    def refuse(self, *args, **kwargs):
        raise AssertionError("host round trip in a training step")

    for name in ("cpu", "item", "numpy", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize("stage", ["supcon", "finetune"])
def test_training_step_has_no_host_round_trip(monkeypatch, stage):
    net = build_backbone("resnet18", 0 if stage == "supcon" else 1, norm="instance")
    if stage == "supcon":
        module = SupConModule(net)
    else:
        augment = {
            "hflip_p": 0.5, "crop_scale": [0.5, 1.0], "brightness": [0.8, 1.2],
            "contrast": [0.8, 1.2], "bias_field": [-0.3, 0.3], "shade_negatives_p": 0.5,
        }  # fmt: skip
        module = ClassifierModule(net, augment=augment)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    batch = {"image": torch.rand(4, 3, 64, 64), "label": torch.tensor([[0.0], [1.0]] * 2)}
    _forbid_round_trips(monkeypatch)
    loss = module.training_step(batch, 0)
    assert loss.dim() == 0
