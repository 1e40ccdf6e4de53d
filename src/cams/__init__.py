"""CAM engine: pure torch, no Lightning or Hydra (docs/README.md: the method pages).

Usage::

    from src.cams import build_cam, CAM_METHODS
    with build_cam("gradcam", model, target_layers=["layer3"], delta=20) as cam:
        maps = cam(images, targets)

``images`` (B, 3, H, W) in [0, 1]; ``targets`` (B,) class ids or None (the positive class of
a one-logit model, else the predicted class). ``maps`` float32 (B, H, W) in [0, 1] on the
images' device, at input resolution. Hooks exist only inside the ``with`` block; the model's
train/eval flags and parameter ``.grad`` are left as they were. Gradients are enabled inside
the call (works under ``torch.no_grad()``; ``torch.inference_mode()`` raises).

Methods (``CAM_METHODS``): cam, gradcam, gradcampp, xgradcam, layercam, fullgrad (gradient
family, weight rules in ``gradient.py`` / ``fullgrad.py``), scorecam and cfdcam (the
perturbation engine with presets, ``perturbation.py``), and ltgradcam, ltlayercam,
ltfullgrad (gradient methods with truncation and sum fusion on by default).

Plug-ins shared by all methods: layerization (several ``target_layers`` + ``fusion``),
truncation (``delta``, ``truncation_scope``; gradient methods), multi-scale (``scales``,
``downsample_mode``). See ``build_cam`` for every option. ``cfd_weights`` is Cfd-CAM's pure
weight rule.
"""

from src.cams.extractor import CamExtractor
from src.cams.perturbation import cfd_weights
from src.cams.registry import CAM_METHODS, build_cam, check_options

__all__ = ["CAM_METHODS", "CamExtractor", "build_cam", "cfd_weights", "check_options"]
