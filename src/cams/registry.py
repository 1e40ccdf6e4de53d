"""Method names, their options and defaults, and ``build_cam`` (docs/README.md: the method pages).

Each name maps to one engine (gradient, FullGrad, perturbation) plus defaults; the LT names
are the gradient engines with truncation on (``delta=0``: positive gradients only, the
paper's basic setting) and ``sum`` fusion, so they differ from the plain names by defaults
only. Options not listed for a method are rejected with a ValueError naming them.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from src.cams.acceleration import AUTOCAST_DTYPES, MaskedForward
from src.cams.base import CamMethod, OptionError
from src.cams.capture import LayerSpec, resolve_layers
from src.cams.extractor import CamExtractor
from src.cams.fullgrad import FullGradMethod
from src.cams.gradient import WEIGHT_RULES, GradientMethod
from src.cams.layerization import FUSIONS
from src.cams.multiscale import RESIZE_MODES
from src.cams.perturbation import PerturbationMethod
from src.cams.truncation import Truncation
from src.validation import check_choice

CAM_METHODS = (
    "cam",
    "gradcam",
    "gradcampp",
    "xgradcam",
    "layercam",
    "fullgrad",
    "scorecam",
    "cfdcam",
    "ltgradcam",
    "ltlayercam",
    "ltfullgrad",
)

_COMMON = {"fusion": "sum", "scales": [1], "downsample_mode": "nearest"}
_GRADIENT = {**_COMMON, "delta": None, "truncation_scope": "channel"}
_FOLDING = {**_GRADIENT, "fold_batchnorm": True}
_LT = {**_FOLDING, "delta": 0}
_PERTURBATION = {
    **_COMMON,
    "batch_size": 64,
    "skip_blank": True,
    "confidence_scaling": None,
    "autocast_dtype": None,
    "channels_last": False,
    "compile": False,
}

# Preset names accepted per perturbation method -> engine preset (perturbation.PRESETS).
_PRESET_NAMES = {
    "scorecam": {"pgc": "pgc", "official": "official", "cfd": "faithful"},
    "cfdcam": {"faithful": "faithful", "wosigmoid": "wosigmoid"},
}


@dataclass(frozen=True)
class MethodSpec:
    """What a method name builds: the engine kind, its option defaults, its weight rule."""

    kind: str  # "gradient" | "fullgrad" | "perturbation"
    defaults: dict[str, Any] = field(default_factory=dict)
    rule: str | None = None  # gradient weight rule name


_SPECS: dict[str, MethodSpec] = {
    "cam": MethodSpec("gradient", _FOLDING, "cam"),
    "gradcam": MethodSpec("gradient", _FOLDING, "gradcam"),
    "gradcampp": MethodSpec("gradient", _FOLDING, "gradcampp"),
    "xgradcam": MethodSpec("gradient", _FOLDING, "xgradcam"),
    "layercam": MethodSpec("gradient", _FOLDING, "layercam"),
    "fullgrad": MethodSpec("fullgrad", _GRADIENT),
    "scorecam": MethodSpec("perturbation", {**_PERTURBATION, "preset": "pgc"}),
    "cfdcam": MethodSpec("perturbation", {**_PERTURBATION, "preset": "faithful", "scales": [1, 2]}),
    "ltgradcam": MethodSpec("gradient", _LT, "gradcam"),
    "ltlayercam": MethodSpec("gradient", _LT, "layercam"),
    "ltfullgrad": MethodSpec("fullgrad", {**_GRADIENT, "delta": 0}),
}
assert set(_SPECS) == set(CAM_METHODS)


def _flag(option: str, value: Any, allow_none: bool = False) -> Any:
    if not (isinstance(value, bool) or (allow_none and value is None)):
        raise OptionError(option, f"option {option!r} must be true or false, got {value!r}")
    return value


def _scales(value: Any) -> list[float]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) == 0:
        raise OptionError(
            "scales", f"option 'scales' must be a non-empty list of numbers, got {value!r}"
        )
    for scale in value:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not scale > 0:
            raise OptionError(
                "scales", f"option 'scales' entries must be positive numbers, got {value!r}"
            )
    return [float(s) if not float(s).is_integer() else int(s) for s in value]


def _batch_size(value: Any) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise OptionError(
            "batch_size", f"option 'batch_size' must be a positive integer or 'auto', got {value!r}"
        )
    return int(value)


def _options(name: str, spec: MethodSpec, given: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(spec.defaults))
    if unknown:
        raise OptionError(
            unknown[0],
            f"unknown option(s) {unknown} for CAM method {name!r}; "
            f"valid options: {sorted(spec.defaults)}",
        )
    opts = {**spec.defaults, **given}
    check_choice("fusion", opts["fusion"], FUSIONS, OptionError)
    check_choice("downsample_mode", opts["downsample_mode"], RESIZE_MODES, OptionError)
    opts["scales"] = _scales(opts["scales"])
    if spec.kind == "perturbation":
        check_choice("preset", opts["preset"], tuple(_PRESET_NAMES[name]), OptionError)
        opts["batch_size"] = _batch_size(opts["batch_size"])
        _flag("skip_blank", opts["skip_blank"])
        _flag("confidence_scaling", opts["confidence_scaling"], allow_none=True)
        check_choice(
            "autocast_dtype", opts["autocast_dtype"], (None, *AUTOCAST_DTYPES), OptionError
        )
        _flag("channels_last", opts["channels_last"])
        _flag("compile", opts["compile"])
    else:
        Truncation(opts["delta"], opts["truncation_scope"])  # checks delta and scope
        if "fold_batchnorm" in opts:
            _flag("fold_batchnorm", opts["fold_batchnorm"])
    return opts


def _build_method(
    name: str, spec: MethodSpec, model: nn.Module, layers: Any, opts: dict[str, Any]
) -> CamMethod:
    if spec.kind == "fullgrad":  # target_layers is ignored (docs/gradient-cams.md)
        return FullGradMethod(model, Truncation(opts["delta"], opts["truncation_scope"]))
    if layers is None:
        raise ValueError(f"CAM method {name!r} needs target_layers (module names or modules)")
    modules, names = resolve_layers(model, layers)
    if spec.kind == "gradient":
        assert spec.rule is not None
        truncation = Truncation(opts["delta"], opts["truncation_scope"])
        rule = WEIGHT_RULES[spec.rule]
        return GradientMethod(rule, model, modules, names, truncation, opts["fold_batchnorm"])
    return PerturbationMethod(
        modules,
        names,
        preset=_PRESET_NAMES[name][opts["preset"]],
        batch_size=opts["batch_size"],
        skip_blank=opts["skip_blank"],
        confidence_scaling=opts["confidence_scaling"],
        forward=MaskedForward(opts["autocast_dtype"], opts["channels_last"], opts["compile"]),
    )


def check_options(name: str, **options: Any) -> dict[str, Any]:
    """Validate method ``name`` and its ``options`` without a model; returns every option
    with the method's defaults filled in.

    The run's start-up checks call this, so a bad CAM option stops a run before any
    training, with the same message ``build_cam`` would give at evaluation time.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown CAM method {name!r}; valid names: {', '.join(CAM_METHODS)}")
    return _options(name, _SPECS[name], options)


def build_cam(
    name: str,
    model: nn.Module,
    target_layers: LayerSpec | Sequence[LayerSpec] | None = None,
    **options: Any,
) -> CamExtractor:
    """Build CAM method ``name`` on ``model``; use it as ``with build_cam(...) as cam``.

    Options (all methods): ``fusion`` (sum | mean_minmax | max), ``scales`` (e.g. [1, 2]),
    ``downsample_mode`` (how a scale's map returns to the input size, default nearest).
    Gradient methods and FullGrad: ``delta`` (truncation percentile in [0, 100) or None),
    ``truncation_scope`` (channel | layer); gradient methods but FullGrad also
    ``fold_batchnorm`` (default true: run on a copy with eval-mode BatchNorm folded into the
    conv before it; maps equal to float rounding, see ``folding.py``). ``scorecam`` / ``cfdcam``: ``preset``
    (pgc | official | cfd / faithful | wosigmoid), ``batch_size`` (masked images per
    forward, or ``"auto"``: from free memory), ``skip_blank`` (skip forwards of all-zero
    maps, exact), ``confidence_scaling`` (multiply the map by s(x); None = the preset's
    default, on for Cfd-CAM); speed options of the masked forwards, maps within 1e-2 of
    float32: ``autocast_dtype`` (None | bfloat16 | float16), ``channels_last``, ``compile``
    (``torch.compile``; see ``acceleration.py``).
    """
    opts = check_options(name, **options)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model)}")
    method = _build_method(name, _SPECS[name], model, target_layers, opts)
    return CamExtractor(
        model,
        method,
        fusion=opts["fusion"],
        scales=opts["scales"],
        downsample_mode=opts["downsample_mode"],
    )
