"""SupCon: loss against a loop-based reading of the formula, views, head, optimiser, schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from src.models.backbones import build_backbone
from src.models.checkpoints import read_state_dict
from src.models.supcon import SupConLoss, SupConModule
from tests.helpers.processes import run_python

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SIZE = 64  # InstanceNorm needs layer4 larger than 1x1


def loop_supcon(features, labels, temperature, base_temperature, normalize):
    """Khosla et al. Eq. 2 term by term: for every anchor view i, the mean over its positives p
    of log(exp(z_i.z_p/T) / sum_{a != i} exp(z_i.z_a/T)), times -T/T_base; mean over anchors."""
    f = features.double()
    if normalize:
        f = f / f.norm(dim=-1, keepdim=True)
    batch, views, _ = f.shape
    anchors = [(b, v) for b in range(batch) for v in range(views)]

    def same_class(b1, b2):
        if labels is None:
            return b1 == b2
        return bool(torch.equal(labels[b1], labels[b2]))

    total = 0.0
    for i in anchors:
        others = [a for a in anchors if a != i]
        sim = {a: float(f[i] @ f[a]) / temperature for a in others}
        log_denominator = math.log(math.fsum(math.exp(s) for s in sim.values()))
        positives = [a for a in others if same_class(a[0], i[0])]
        mean_log_prob = sum(sim[p] - log_denominator for p in positives) / len(positives)
        total += -(temperature / base_temperature) * mean_log_prob
    return total / len(anchors)


@pytest.mark.parametrize(
    ("labels", "views", "temperature", "normalize"),
    [
        (torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0], [0.0]]), 2, 0.07, False),
        (torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0], [0.0]]), 2, 0.07, True),
        (
            torch.tensor(
                [[1, 0, 1], [1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 1, 1]]
            ).float(),
            2,
            0.5,
            False,
        ),
        (None, 3, 0.2, True),
        (torch.tensor([2, 0, 2, 1, 0, 1]), 3, 0.07, False),
    ],
)
def test_loss_matches_loop_formula(labels, views, temperature, normalize):
    torch.manual_seed(1)
    features = 0.3 * torch.randn(6, views, 4)
    loss = SupConLoss(temperature, 0.07, normalize)(features, labels)
    expected = loop_supcon(features, labels, temperature, 0.07, normalize)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_loss_without_labels_equals_unique_labels_and_is_stable():
    features = torch.randn(5, 2, 8)
    criterion = SupConLoss()
    torch.testing.assert_close(criterion(features, None), criterion(features, torch.arange(5)))
    # Unnormalised projections at T = 0.07 give logits in the thousands: still finite.
    assert torch.isfinite(criterion(100 * features, torch.arange(5) % 2))


def test_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="batch, views, dim"):
        SupConLoss()(torch.randn(4, 8))
    with pytest.raises(ValueError, match="3 labels for 4 samples"):
        SupConLoss()(torch.randn(4, 2, 8), torch.zeros(3))


def test_module_strips_the_classifier_head_and_builds_the_projection():
    module = SupConModule(build_backbone("resnet18", 1))
    assert isinstance(module.encoder.fc, nn.Identity)
    first, relu, last = module.head
    assert (first.in_features, first.out_features, first.bias) == (512, 512, None)
    assert isinstance(relu, nn.ReLU) and (last.in_features, last.out_features) == (512, 256)
    assert module(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 256)
    keys = module.state_dict().keys()
    assert "encoder.conv1.weight" in keys and "encoder.layer4.1.conv2.weight" in keys
    assert not any(k.startswith("encoder.fc") for k in keys)


def test_views_draw_parameters_per_sample_and_are_reproducible():
    module = SupConModule(build_backbone("resnet18", 0), image_size=48)
    image = torch.rand(3, SIZE, SIZE)
    batch = image.expand(4, -1, -1, -1)
    torch.manual_seed(3)
    views = module.make_view(batch)
    assert views.shape == (4, 3, 48, 48)
    assert views.min() >= 0 and views.max() <= 1
    # Same input image, different crops/flips/jitter per sample.
    assert not any(torch.allclose(views[0], views[i]) for i in range(1, 4))
    torch.manual_seed(3)
    torch.testing.assert_close(module.make_view(batch), views)
    # Without image_size the crop keeps the input size.
    assert SupConModule(build_backbone("resnet18", 0)).make_view(batch).shape == batch.shape


class _LearningRates(pl.Callback):
    def __init__(self) -> None:
        self.per_epoch: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.per_epoch.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_short_fit_trains_the_encoder_with_sgd(make_loader, make_trainer):
    pl.seed_everything(0)
    module = SupConModule(build_backbone("resnet18", 0), lr=0.05, max_epochs=1)
    before = module.encoder.conv1.weight.detach().clone()
    trainer = make_trainer(max_steps=2)
    trainer.fit(module, make_loader(n=8, batch_size=4))
    assert trainer.global_step == 2
    loss = trainer.callback_metrics["pretrain/loss"]
    assert torch.isfinite(loss) and loss > 0
    assert not torch.equal(before, module.encoder.conv1.weight)
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0 and optimizer.defaults["weight_decay"] == 1e-5


def test_lr_is_constant_for_warm_epochs_then_cosine(make_loader, make_trainer):
    pl.seed_everything(0)
    lrs = _LearningRates()
    module = SupConModule(build_backbone("resnet18", 0), lr=0.01, warm_epochs=2, max_epochs=5)
    trainer = make_trainer(max_epochs=5, callbacks=[lrs])
    trainer.fit(module, make_loader(n=4, batch_size=4))  # one step per epoch
    cosine = [0.5 * (1 + math.cos(math.pi * t / 3)) for t in range(3)]
    assert lrs.per_epoch == pytest.approx([0.01, 0.01] + [0.01 * c for c in cosine])


def test_config_instantiates_and_checkpoint_is_safe_to_load(tmp_path, make_loader, make_trainer):
    """Hydra hands lists as ListConfig; the checkpoint must still load with weights_only."""
    cfg = OmegaConf.load(CONF / "pretrain" / "supcon.yaml")
    assert cfg.enabled and cfg.epochs == 100 and cfg.batch_size == 512
    module = instantiate(cfg.module, encoder=build_backbone("resnet18", 0))
    assert isinstance(module, SupConModule)
    assert module.hparams.max_epochs == 100 and module.hparams.lr == 1e-3
    assert module.hparams.crop_scale == (0.08, 1.0) and not module.hparams.normalize
    trainer = make_trainer(max_steps=1)
    trainer.fit(module, make_loader(n=4, batch_size=4))
    path = tmp_path / "supcon.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["color_jitter"] == (0.8, 0.8, 0.8, 0.2)
    assert "encoder.conv1.weight" in read_state_dict(path)
    assert OmegaConf.load(CONF / "pretrain" / "none.yaml").enabled is False


def test_grey_images_skip_only_jitter_that_cannot_change_them():
    """The shortcut for grey images (MRI) rests on saturation and hue jitter being no-ops there."""
    from torchvision.transforms import v2

    torch.manual_seed(4)
    grey = torch.rand(1, SIZE, SIZE).expand(3, -1, -1)
    for _ in range(5):
        torch.testing.assert_close(v2.ColorJitter(0, 0, 0.8, 0.2)(grey), grey, atol=1e-3, rtol=0)
    module = SupConModule(build_backbone("resnet18", 0), color_jitter_p=1.0, grayscale_p=0.0)
    views = module.make_view(grey.expand(4, -1, -1, -1))
    assert torch.equal(views[:, :1].expand_as(views), views)  # still grey
    assert not torch.allclose(views[0], views[1])  # but brightness/contrast/crop vary
    colour = module.make_view(torch.rand(4, 3, SIZE, SIZE))
    assert not torch.allclose(colour[:, 0], colour[:, 1])


def test_module_loss_is_plain_supcon_in_one_process():
    """Without a process group the gather is the identity: the criterion on the batch itself."""
    module = SupConModule(build_backbone("resnet18", 0))
    features, labels = torch.randn(5, 2, 8), torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0]])
    loss, covered = module.contrastive_loss(features, labels)
    assert covered == 5
    torch.testing.assert_close(loss, module.criterion(features, labels), rtol=0, atol=0)


def test_two_process_loss_and_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    """Runs tests/models/ddp_supcon_script.py: 2 gloo processes with shards of 4 and 3 samples."""
    run_python(str(Path(__file__).with_name("ddp_supcon_script.py")), str(tmp_path))
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["covered"] == 7
        assert result["loss"] == pytest.approx(result["reference_loss"], rel=1e-5)
        # A per-process loss (the negatives of the own shard only) would not match.
        assert abs(result["local_only_loss"] - result["reference_loss"]) > 1e-2
        # The local rows get world_size x dL/dx (the gather's backward sums over processes) ...
        assert result["feature_grad_difference"] <= 1e-5 * result["feature_grad_scale"]
        # ... which DDP's averaging turns into the one-process gradient of the head.
        assert result["head_grad_difference"] <= 1e-5 * result["head_grad_scale"]
