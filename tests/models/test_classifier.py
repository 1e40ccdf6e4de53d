"""Fine-tuning module and loading a SupCon encoder into the classifier by parameter name."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.models.backbones import build_backbone, stage_names
from src.models.checkpoints import CheckpointError
from src.models.classifier import ClassifierModule, load_encoder_weights
from src.models.schedules import adam_with_cosine, fused_adam_supported
from src.models.supcon import SupConModule

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(scope="module")
def supcon_checkpoint(tmp_path_factory, make_loader, make_trainer):
    """A real SupConModule Lightning checkpoint after one step, and its encoder weights."""
    pl.seed_everything(0)
    module = SupConModule(build_backbone("resnet18", 0), lr=0.1, max_epochs=1)
    trainer = make_trainer(max_steps=1)
    trainer.fit(module, make_loader(n=4, batch_size=4))
    path = tmp_path_factory.mktemp("supcon") / "supcon.ckpt"
    trainer.save_checkpoint(path)
    return path, {k: v.clone() for k, v in module.encoder.state_dict().items()}


def test_supcon_checkpoint_loads_into_classifier_by_name(supcon_checkpoint):
    path, encoder_state = supcon_checkpoint
    net = build_backbone("resnet18", 1)
    head_before = net.fc.weight.detach().clone()
    assert not torch.equal(net.conv1.weight, encoder_state["conv1.weight"])
    load_encoder_weights(net, path)
    loaded = net.state_dict()
    assert encoder_state.keys() == loaded.keys() - {"fc.weight", "fc.bias"}
    for key, value in encoder_state.items():
        assert torch.equal(loaded[key], value), key
    assert torch.equal(net.fc.weight, head_before)  # the head keeps its own initialisation


def test_plain_encoder_state_dict_loads(tmp_path):
    encoder = build_backbone("resnet18", 0, norm="batch")
    path = tmp_path / "encoder.pt"
    torch.save(encoder.state_dict(), path)
    net = build_backbone("resnet18", 1, norm="batch")
    load_encoder_weights(net, path)
    for key, value in encoder.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_key_mismatch_lists_missing_and_unexpected_keys(tmp_path, supcon_checkpoint):
    _, encoder_state = supcon_checkpoint
    state = {f"encoder.{k}": v for k, v in encoder_state.items() if k != "layer1.0.conv1.weight"}
    state["encoder.extra.weight"] = torch.zeros(3)
    path = tmp_path / "edited.ckpt"
    torch.save({"state_dict": state}, path)
    net = build_backbone("resnet18", 1)
    with pytest.raises(CheckpointError) as err:
        load_encoder_weights(net, path)
    message = str(err.value)
    assert "edited.ckpt" in message
    assert "missing (1): ['layer1.0.conv1.weight']" in message
    assert "unexpected (1): ['extra.weight']" in message


def test_vgg_checkpoint_into_resnet_is_refused(tmp_path):
    vgg = build_backbone("vgg16", 0, norm="none")
    # The convolutional part is enough to be a VGG file (and keeps the file small).
    state = {f"encoder.{k}": v for k, v in vgg.features.state_dict(prefix="features.").items()}
    path = tmp_path / "vgg_supcon.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(
        CheckpointError, match=r"vgg_supcon\.ckpt.*missing.*conv1\.weight.*unexpected.*features\.0"
    ):
        load_encoder_weights(build_backbone("resnet18", 1), path)


def test_instance_norm_encoder_into_batch_norm_classifier_is_refused(supcon_checkpoint):
    path, _ = supcon_checkpoint
    with pytest.raises(CheckpointError, match=r"missing .*bn1\.running_mean"):
        load_encoder_weights(build_backbone("resnet18", 1, norm="batch"), path)


def test_missing_and_corrupt_checkpoint_files(tmp_path):
    net = build_backbone("resnet18", 1)
    with pytest.raises(CheckpointError, match=r"absent\.ckpt: weights file not found"):
        load_encoder_weights(net, tmp_path / "absent.ckpt")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match=r"broken\.ckpt: corrupt"):
        load_encoder_weights(net, broken)
    odd = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {"conv1.weight": "not a tensor"}}, odd)
    with pytest.raises(CheckpointError, match=r"odd\.ckpt: holds no state_dict"):
        load_encoder_weights(net, odd)


def pairwise_auc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """AUC as the probability that a positive outscores a negative (ties count half)."""
    pos, neg = scores[targets == 1], scores[targets == 0]
    wins = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    return wins.mean().item()


@pytest.mark.parametrize(("task", "num_classes"), [("binary", 1), ("multilabel", 20)])
def test_short_fit_logs_metrics_that_match_the_predictions(
    task, num_classes, make_loader, make_trainer
):
    pl.seed_everything(0)
    module = ClassifierModule(build_backbone("resnet18", num_classes), task, num_classes)
    before = module.net.conv1.weight.detach().clone()
    trainer = make_trainer(max_steps=2)
    val = make_loader(n=8, num_classes=num_classes, batch_size=4, seed=1)
    trainer.fit(module, make_loader(n=8, num_classes=num_classes, batch_size=4), val)
    metrics = trainer.callback_metrics
    assert trainer.global_step == 2 and not torch.equal(before, module.net.conv1.weight)
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["weight_decay"] == 1e-5
    # The logged values are those of the trained model on the validation data.
    module.eval()
    with torch.no_grad():
        batches = list(val)
        probs = torch.cat([torch.sigmoid(module(b["image"])) for b in batches])
    labels = torch.cat([b["label"] for b in batches])
    auc = sum(pairwise_auc(probs[:, k], labels[:, k]) for k in range(num_classes)) / num_classes
    accuracy = ((probs >= 0.5).float() == labels).float().mean(0).mean().item()
    bce = torch.nn.functional.binary_cross_entropy(probs, labels).item()
    assert metrics["val/auc"].item() == pytest.approx(auc, abs=1e-6)
    assert metrics["val/acc"].item() == pytest.approx(accuracy, abs=1e-6)
    assert metrics["val/loss"].item() == pytest.approx(bce, rel=1e-4)


def test_lr_follows_cosine_to_min_lr(make_loader, make_trainer):
    pl.seed_everything(0)
    seen = []

    class Record(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    module = ClassifierModule(build_backbone("resnet18", 1), max_epochs=4)
    trainer = make_trainer(max_epochs=4, callbacks=[Record()], limit_val_batches=0)
    trainer.fit(module, make_loader(n=4, batch_size=4))
    expected = [5e-6 + (1e-4 - 5e-6) * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert seen == pytest.approx(expected)


def test_adam_is_fused_on_cpu_and_updates_as_the_default_kernel():
    """The fused kernel (one pass per parameter) takes the same Adam steps as torch's default
    one, up to float rounding, with weight decay."""
    torch.manual_seed(0)
    start = build_backbone("resnet18", 1)
    nets = [build_backbone("resnet18", 1) for _ in range(2)]
    for net in nets:
        net.load_state_dict(start.state_dict())
    fused = adam_with_cosine(nets[0].parameters(), 3e-4, 1e-5, max_epochs=2, min_lr=5e-6)
    assert fused["optimizer"].param_groups[0]["fused"] is True
    reference = torch.optim.Adam(nets[1].parameters(), lr=3e-4, weight_decay=1e-5)
    grads = torch.Generator().manual_seed(1)
    for _ in range(3):
        for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
            a.grad = torch.randn(a.shape, generator=grads) * 1e-3
            b.grad = a.grad.clone()
        fused["optimizer"].step()
        reference.step()
    moved = max(
        (a - s).abs().max().item()
        for a, s in zip(nets[0].parameters(), start.parameters(), strict=True)
    )
    assert moved > 5e-4  # three steps of ~lr each: the comparison below is not vacuous
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_adam_keeps_the_default_kernel_where_fused_cannot_run():
    assert fused_adam_supported([torch.zeros(2), torch.zeros(3, dtype=torch.float64)])
    assert not fused_adam_supported([])
    assert not fused_adam_supported([torch.zeros(2, device="meta")])
    assert not fused_adam_supported([torch.zeros(2), torch.zeros(2, dtype=torch.int64)])


def test_bad_task_and_shapes_are_refused():
    net = build_backbone("resnet18", 1)
    with pytest.raises(ValueError, match="task='multiclass' is not one of"):
        ClassifierModule(net, task="multiclass")
    with pytest.raises(ValueError, match="binary needs num_classes=1"):
        ClassifierModule(net, task="binary", num_classes=2)
    with pytest.raises(ValueError, match="multilabel needs num_classes >= 2"):
        ClassifierModule(net, task="multilabel", num_classes=1)
    module = ClassifierModule(net)
    batch = {"image": torch.rand(2, 3, 64, 64), "label": torch.zeros(2, 20)}
    with pytest.raises(ValueError, match=r"logits \(2, 1\) and labels \(2, 20\)"):
        module.training_step(batch, 0)


def test_finetune_config_instantiates():
    cfg = OmegaConf.load(CONF / "finetune" / "default.yaml")
    module = instantiate(cfg.module, net=build_backbone("resnet18", 1))
    assert isinstance(module, ClassifierModule)
    assert (cfg.epochs, cfg.batch_size) == (10, 64)
    best = OmegaConf.load(CONF / "callbacks" / "default.yaml").classifier_checkpoint
    assert (best.monitor, best.mode) == ("val/auc", "max")
    hp = module.hparams
    assert (hp.lr, hp.weight_decay, hp.min_lr, hp.max_epochs) == (1e-4, 1e-5, 5e-6, 10)


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "vgg16_bn"])
def test_stage_names_are_those_of_the_net_the_config_builds(name):
    cfg = OmegaConf.load(CONF / "backbone" / f"{name}.yaml")
    net = instantiate(cfg.net, num_classes=1)
    assert stage_names(cfg.net.arch, cfg.net.norm) == net.cam_stages
    assert "cam_stages" not in cfg  # one place: the network
