"""Learning-rate schedule shared by SupCon pre-training and fine-tuning (docs/training.md).

One rule serves both: constant for ``warm_epochs`` epochs, then cosine annealing from the base
rate to ``min_lr`` reached at ``max_epochs``. Fine-tuning (Adam, cosine to 5e-6) is the case
``warm_epochs = 0``, which equals ``torch.optim.lr_scheduler.CosineAnnealingLR`` with
``T_max = max_epochs``; SupCon is "cosine after epoch 10".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class ConstantThenCosine:
    """Multiplier of the base learning rate at a given epoch (0-based), for ``LambdaLR``.

    A callable object rather than a lambda so that ``LambdaLR.state_dict`` stores it and a
    resumed run keeps the same schedule.
    """

    warm_epochs: int
    max_epochs: int
    min_ratio: float = 0.0

    def __call__(self, epoch: int) -> float:
        """1 during the warm epochs, then a cosine from 1 down to ``min_ratio``."""
        if epoch < self.warm_epochs:
            return 1.0
        span = max(self.max_epochs - self.warm_epochs, 1)
        progress = min((epoch - self.warm_epochs) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant_then_cosine(
    optimizer: torch.optim.Optimizer, warm_epochs: int, max_epochs: int, min_lr: float
) -> dict:
    """Lightning ``lr_scheduler`` config stepping once per epoch."""
    base_lr = optimizer.param_groups[0]["lr"]
    if warm_epochs < 0 or max_epochs < 1:
        raise ValueError(
            f"need warm_epochs >= 0 and max_epochs >= 1, got {warm_epochs}, {max_epochs}"
        )
    if not 0.0 <= min_lr <= base_lr:
        raise ValueError(f"min_lr={min_lr} must lie in [0, lr={base_lr}]")
    rule = ConstantThenCosine(warm_epochs, max_epochs, min_lr / base_lr if base_lr > 0 else 0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rule)
    return {"scheduler": scheduler, "interval": "epoch", "frequency": 1}


FUSED_ADAM_DEVICES = ("cpu", "cuda")


def fused_adam_supported(parameters: list[torch.Tensor]) -> bool:
    """Whether Adam's fused kernel can update `parameters`: floating point, on a CPU or CUDA.

    The fused kernel reads each parameter once per step; torch's default on a CPU (a loop of
    separate operations per parameter) writes a parameter-sized temporary at each of them,
    which can cost more than the forward and backward passes: one step over VGG16's 134 M
    parameters (mostly its fully connected head) takes 6.7 s that way against 0.11 s fused on
    one thread, ResNet-18's 0.11 s against 0.01 s (benchmarks/results.md, "Adam step"). The
    update is Adam's either way, equal up to float rounding. Other devices keep torch's
    default kernel."""
    return bool(parameters) and all(
        p.device.type in FUSED_ADAM_DEVICES and torch.is_floating_point(p) for p in parameters
    )


def adam_with_cosine(
    parameters, lr: float, weight_decay: float, max_epochs: int, min_lr: float
) -> dict:
    """`configure_optimizers` of the fine-tuning recipe (Adam, cosine from `lr` to `min_lr`
    over `max_epochs`), shared by the classifier and the supervised U-Net."""
    parameters = list(parameters)
    optimizer = torch.optim.Adam(
        parameters, lr=lr, weight_decay=weight_decay, fused=fused_adam_supported(parameters)
    )
    schedule = constant_then_cosine(optimizer, 0, max_epochs, min_lr)
    return {"optimizer": optimizer, "lr_scheduler": schedule}
