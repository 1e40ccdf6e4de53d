"""The benchmark workloads: one function per kind of row, run in a fresh process each.

Every workload builds its inputs, then measures ``repeats`` timed runs inside a peak-memory
window, and afterwards (outside the timed window) optionally compares its output with a
reference (grad-cam, float32, or the computation without skipping). It returns a dict:
``items`` (processed per run), ``times`` (seconds per run), ``peak_mb``, ``max_abs_diff``
(or None) and ``note``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.measure import PeakMemory, median, timed_runs
from benchmarks.models import kill_layer4_channels
from src.cams import build_cam
from src.models.seeded import bn_resnet18, cfd_resnet18

Params = dict[str, Any]
BRATS_CASES = 4
BRATS_SHAPE = (240, 240, 155)

GRADCAM_CLASSES = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "layercam": "LayerCAM",
    "xgradcam": "XGradCAM",
    "fullgrad": "FullGrad",
    "scorecam": "ScoreCAM",
}
STAGES = ["layer1", "layer2", "layer3", "layer4"]


def _images(batch: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=gen).to(device)


def _model(p: Params) -> torch.nn.Module:
    model = cfd_resnet18() if p.get("model", "cfd") == "cfd" else bn_resnet18()
    if p.get("dead_fraction"):
        kill_layer4_channels(model, p["dead_fraction"])
    return model.to(p["device"])


def _measure(p: Params, work: Callable[[], object], items: int) -> tuple[Params, object]:
    device = p["device"]
    with PeakMemory(device) as peak:
        times, result = timed_runs(work, p["repeats"], device)
    return {"items": items, "times": times, "peak_mb": peak.mb, "max_abs_diff": None}, result


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return (maps - low) / span.clamp(min=1e-12)


def _diff(a: torch.Tensor, b: torch.Tensor, per_image_minmax: bool = False) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    if per_image_minmax:
        a, b = _minmax(a), _minmax(b)
    return float((a - b).abs().max())


# ------------------------------------------------------------------------ perturbation


def forward_limit(p: Params) -> Params:
    """The limit of a perturbation CAM: the forwards it runs, as plain batched forwards of
    random inputs with no CAM logic: per scale, B images (the capture forward), 1 (the blank
    image) and B x C masked images in chunks of ``batch_size``."""
    model, device = _model(p), p["device"]
    batch, channels, chunk = p["images"], p["channels"], p["batch_size"]
    sizes = [round(p["size"] * s) for s in p["scales"]]
    inputs = {s: _images(max(chunk, batch), s, device, seed=1) for s in sizes}
    counts = [batch, 1] + [
        min(chunk, batch * channels - i) for i in range(0, batch * channels, chunk)
    ]
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if p.get("autocast_dtype")
        else contextlib.nullcontext()
    )

    def work() -> None:
        with torch.no_grad(), autocast:
            for size in sizes:
                for n in counts:
                    model(inputs[size][:n])

    with torch.no_grad():
        model(inputs[sizes[0]][:2])  # warm-up (allocator, oneDNN primitives)
    result, _ = _measure(p, work, batch)
    result["note"] = f"{len(sizes) * sum(counts)} forwards"
    return result


def perturbation_cam(p: Params) -> Params:
    """Our Score-CAM / Cfd-CAM; ``compare``: ``float32`` (the same without the speed
    options) or ``full`` (the same without exact skipping)."""
    model, device = _model(p), p["device"]
    x = _images(p["images"], p["size"], device)
    options = dict(p["options"])
    with torch.no_grad():
        model(x[:1])  # warm-up

    def compute(opts: Params) -> tuple[torch.Tensor, int]:
        with build_cam(p["method"], model, ["layer4"], **opts) as cam:
            maps = cam(x, None)
            return maps, cam.method.forwarded

    started = time.perf_counter()
    if options.get("compile"):
        compute(options)  # compilation outside the timed runs
    compile_s = time.perf_counter() - started
    result, (maps, forwarded) = _measure(p, lambda: compute(options), p["images"])
    result["note"] = f"{forwarded} masked forwards"
    if options.get("compile"):
        result["note"] += f"; first call (compilation) {compile_s:.0f} s"
    reference = {
        "float32": {
            k: v
            for k, v in options.items()
            if k not in ("autocast_dtype", "channels_last", "compile")
        },
        "full": {**options, "skip_blank": False},
    }.get(p.get("compare", ""))
    if reference is not None:
        result["max_abs_diff"] = _diff(maps, compute(reference)[0])
    return result


def gradcam_scorecam(p: Params) -> Params:
    """grad-cam 1.5.7's ScoreCAM (its default chunk of 16 masked images per forward)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, device = _model(p), p["device"]
    x = _images(p["images"], p["size"], device)
    targets = [ClassifierOutputTarget(0)] * p["images"]
    with torch.no_grad():
        model(x[:1])
    with pytorch_grad_cam.ScoreCAM(model=model, target_layers=[model.layer4]) as cam:
        result, maps = _measure(p, lambda: cam(input_tensor=x, targets=targets), p["images"])
    with build_cam("scorecam", model, ["layer4"], preset="pgc") as ours:
        result["max_abs_diff"] = _diff(ours(x, None), torch.from_numpy(maps), True)
    result["note"] = "grad-cam: all B x C masked images built at once, 16 per forward"
    return result


# ---------------------------------------------------------------------------- gradient


def _layers(p: Params) -> list[str]:
    return STAGES[-p["layers"] :]


def forward_backward_limit(p: Params) -> Params:
    """One forward with autograd plus one full backward to the input (no parameter grads)."""
    model, device = _model(p), p["device"]
    x = _images(p["images"], p["size"], device)

    def work() -> None:
        inputs = x.detach().requires_grad_(True)
        torch.autograd.grad(model(inputs)[:, 0].sum(), inputs)

    work()
    result, _ = _measure(p, work, p["images"])
    result["note"] = "forward + autograd.grad to the input"
    return result


def gradient_cam(p: Params) -> Params:
    model, device = _model(p), p["device"]
    x = _images(p["images"], p["size"], device)
    method = p["method"]
    with build_cam(method, model, _layers(p), **p.get("options", {})) as cam:
        cam(x[:2], None)  # warm-up
        result, _ = _measure(p, lambda: cam(x, None), p["images"])
    result["note"] = f"layers {', '.join(_layers(p)) if 'fullgrad' not in method else 'all'}"
    return result


def gradcam_gradient(p: Params) -> Params:
    """grad-cam 1.5.7's class for the same method and layers (full ``backward()``)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, device = _model(p), p["device"]
    x = _images(p["images"], p["size"], device)
    base = p["method"].removeprefix("lt")
    layers = [] if base == "fullgrad" else [model.get_submodule(n) for n in _layers(p)]
    targets = [ClassifierOutputTarget(0)] * p["images"]
    reference = getattr(pytorch_grad_cam, GRADCAM_CLASSES[base])
    with reference(model=model, target_layers=layers) as cam:
        cam(input_tensor=x[:2], targets=targets[:2])  # warm-up
        result, maps = _measure(p, lambda: cam(input_tensor=x, targets=targets), p["images"])
    if not p["method"].startswith("lt"):  # same output: compare with ours (grad-cam's fusion)
        fusion = {} if base == "fullgrad" else {"fusion": "mean_minmax"}
        with build_cam(p["method"], model, _layers(p), **fusion) as ours:
            result["max_abs_diff"] = _diff(ours(x, None), torch.from_numpy(maps), True)
        result["note"] = ""
    else:
        result["note"] = f"grad-cam {GRADCAM_CLASSES[base]} on the same layers (no truncation)"
    model.zero_grad(set_to_none=True)
    return result


# ------------------------------------------------------------------------ faithfulness


class FixedMaps:
    """torchcam's CAM-extractor interface around maps given in advance, so its metrics
    score exactly the maps ours do (also used by tests/evaluation/test_faithfulness.py)."""

    def __init__(self, model: torch.nn.Module, maps: torch.Tensor) -> None:
        self.model = model
        self.maps = maps

    def __call__(self, class_idx: Any, scores: Any = None, **kwargs: Any) -> list[torch.Tensor]:
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self) -> Iterator[None]:
        yield


def _faithfulness_inputs(p: Params) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model, device = _model(p), p["device"]
    x = _images(p["images"], p["size"], device)
    coarse = _images(p["images"], p["size"] // 8, device, seed=1)[:, 0]
    maps = torch.nn.functional.interpolate(coarse[:, None], size=x.shape[2:], mode="bilinear")
    return model, x, maps[:, 0]


def _faithfulness_forwards(p: Params) -> list[int]:
    """The batch sizes of our forwards: the images, the dimmed images, then the baseline and
    the curves' inner points of every image in chunks."""
    from src.evaluation.faithfulness import step_counts

    batch, chunk = p["images"], p["chunk"]
    inner = len(step_counts(p["size"] ** 2, p["steps"])) - 2
    jobs = batch * (1 + 2 * inner)
    images = [min(chunk, batch - i) for i in range(0, batch, chunk)]
    return 2 * images + [min(chunk, jobs - i) for i in range(0, jobs, chunk)]


def faithfulness_limit(p: Params) -> Params:
    """The limit of the faithfulness metrics: their forwards as plain batched forwards."""
    model, x, _ = _faithfulness_inputs(p)
    counts = _faithfulness_forwards(p)
    inputs = _images(max(counts), p["size"], p["device"], seed=2)

    def work() -> None:
        with torch.no_grad():
            for n in counts:
                model(inputs[:n])

    work()  # warm-up
    result, _ = _measure(p, work, p["images"])
    result["note"] = f"{sum(counts)} forwards"
    return result


def faithfulness(p: Params) -> Params:
    """Ours (src/evaluation/faithfulness.py) on a batch; max abs diff against torchcam's two
    metrics on the same maps, over the four columns."""
    from src.evaluation.faithfulness import FAITHFULNESS, Faithfulness, faithfulness_metrics

    model, x, maps = _faithfulness_inputs(p)
    settings = Faithfulness(p["steps"], p["baseline"], p["chunk"])

    def score(images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(images)[:, 0])

    faithfulness_metrics(score, x[:1], maps[:1], settings)  # warm-up
    result, ours = _measure(p, lambda: faithfulness_metrics(score, x, maps, settings), len(x))
    theirs = _torchcam_faithfulness(p, model, x, maps)
    result["max_abs_diff"] = max(
        float((ours[name].cpu() - theirs[name]).abs().max()) for name in FAITHFULNESS
    )
    result["note"] = (
        f"{sum(_faithfulness_forwards(p))} forwards; {p['steps']} steps, baseline "
        f"{p['baseline']}, chunk {p['chunk']}; {1000 * median(result['times']) / len(x):.0f} "
        "ms/image; diff against torchcam"
    )
    return result


def _torchcam_faithfulness(
    p: Params, model: torch.nn.Module, x: torch.Tensor, maps: torch.Tensor
) -> dict[str, torch.Tensor]:
    """torchcam's average drop, increase, deletion and insertion AUC per image (its metrics
    keep only sums: one update per image)."""
    from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

    values: dict[str, list[float]] = {}
    for i in range(len(x)):
        extractor = FixedMaps(model, maps[i : i + 1])
        confidence = ClassificationMetric(extractor, torch.sigmoid)
        curves = DeletionInsertionMetric(
            extractor, torch.sigmoid, steps=p["steps"], batch_size=p["chunk"]
        )
        for metric in (confidence, curves):
            metric.update(x[i : i + 1])
            for name, value in metric.summary().items():
                values.setdefault(name, []).append(value)
    return {name: torch.tensor(found) for name, found in values.items()}


def torchcam_faithfulness(p: Params) -> Params:
    """torchcam 0.5's two metrics on the same maps, one image per update."""
    model, x, maps = _faithfulness_inputs(p)
    _torchcam_faithfulness(p, model, x[:1], maps[:1])  # warm-up
    result, _ = _measure(p, lambda: _torchcam_faithfulness(p, model, x, maps), len(x))
    result["note"] = (
        f"ClassificationMetric + DeletionInsertionMetric (batch_size {p['chunk']}), per image; "
        f"{1000 * median(result['times']) / len(x):.0f} ms/image"
    )
    return result


# ---------------------------------------------------------------------- masks and data


def densecrf_masks(p: Params) -> Params:
    from src.evaluation.masks import MaskMaker

    size, count = p["mask_size"], p["masks"]
    gen = np.random.default_rng(0)
    images = gen.random((count, size, size, 3), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size] / size
    blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.05).astype(np.float32)
    maps = np.stack([np.roll(blob, 7 * i, axis=1) for i in range(count)])
    with MaskMaker(method="densecrf", workers=p["workers"]) as maker:

        def work() -> list[np.ndarray]:
            maker.submit(images, maps)
            return list(maker.results())

        work()  # warm-up: starts the worker processes
        result, masks = _measure(p, work, count)
    assert masks[0].any(), "DenseCRF produced empty masks: the benchmark maps are too faint"
    result["note"] = f"{size}x{size}, {p['workers']} worker processes"
    return result


def brats_loader(p: Params) -> Params:
    """Items/s of one training epoch of ``BraTSDataModule``; ``mode``: ``nifti`` (a fresh
    cache: setup decodes every NIfTI volume, then the epoch), ``cache`` (setup reads the
    slice cache ``brats_cache`` filled beforehand, then the epoch), ``epoch`` (the epoch
    alone, slices in memory), or ``per_item`` (decoding the case's volumes for every item,
    what the cache avoids; one item per case)."""
    from src.data.brats import BraTSDataModule, decode_case

    root, cache, mode = Path(p["brats_root"]), Path(p["brats_cache"]), p["mode"]
    work_dir = Path(tempfile.mkdtemp(prefix="bench-brats-"))
    runs = iter(range(1_000_000))

    def module(cache_dir: Path) -> BraTSDataModule:
        return BraTSDataModule(
            root, cache_dir=cache_dir, batch_size=32, split_ratios=(0.5, 0.25, 0.25)
        )

    def epoch(data: BraTSDataModule) -> int:
        return sum(len(batch["image"]) for batch in data.train_dataloader())

    if mode == "per_item":
        reader = module(cache)
        cases = sorted(d.name for d in root.iterdir() if d.is_dir())

        def work() -> int:
            for case in cases:
                images, seg = reader.case_files(case)
                decode_case(images[0], seg)
            return len(cases)

    elif mode == "epoch":
        data = module(cache)
        data.setup()

        def work() -> int:
            return epoch(data)

    else:

        def work() -> int:
            return epoch(module(work_dir / f"cold{next(runs)}" if mode == "nifti" else cache))

    try:
        result, items = _measure(p, work, 0)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    result["items"] = items
    result["note"] = {
        "nifti": "setup decodes NIfTI + writes the cache, then one epoch",
        "cache": "setup from the slice cache, then one epoch",
        "epoch": "one epoch, slices in memory",
        "per_item": "decoding the case's NIfTI volumes for each item",
    }[mode]
    return result


def prepare_brats(folder: Path) -> Params:
    """A small synthetic BraTS dataset and its filled slice cache (for the loader rows)."""
    from src.data.brats import BraTSDataModule
    from src.data.generators.brats import generate_brats

    root, cache = folder / "brats", folder / "cache"
    generate_brats(root, n_cases=BRATS_CASES, seed=0, shape=BRATS_SHAPE)
    BraTSDataModule(root, cache_dir=cache).setup()
    volume = "x".join(str(s) for s in BRATS_SHAPE)
    return {
        "brats_root": str(root),
        "brats_cache": str(cache),
        "cases": BRATS_CASES,
        "volume": volume,
    }


# ------------------------------------------------------------------------ augmentation

FINETUNE_AUGMENT = {
    "hflip_p": 0.5,
    "crop_scale": [0.6, 1.0],
    "brightness": [0.8, 1.2],
    "contrast": [0.8, 1.2],
    "bias_field": [-0.3, 0.3],
    "bias_field_p": 0.5,
    "shade_negatives_p": 0.5,
}


def _per_image_supcon(images: torch.Tensor) -> torch.Tensor:
    """The "before" reference: SupCon's former view, torchvision v2 per image (kept here only)."""
    from torchvision.transforms import v2

    crop = v2.RandomResizedCrop(tuple(images.shape[-2:]), scale=(0.08, 1.0), antialias=True)
    views = {
        grey: v2.Compose(
            [
                v2.RandomHorizontalFlip(),
                v2.RandomApply([v2.ColorJitter(*jitter)], p=0.8),
                v2.RandomGrayscale(p=0.2),
            ]
        )
        for grey, jitter in ((False, (0.8, 0.8, 0.8, 0.2)), (True, (0.8, 0.8, 0.0, 0.0)))
    }
    out = []
    for image in images:
        grey = bool((image[1:] == image[:1]).all())
        out.append(views[grey](crop(image)))
    return torch.stack(out)


def _per_image_finetune() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The "before" reference: fine-tuning's former augmentation, torchvision v2 and MONAI's
    RandBiasField per image, a loop over the shaded negatives (kept here only)."""
    import torch.nn.functional as F
    from monai.transforms import RandBiasField
    from torchvision.transforms import v2

    o = FINETUNE_AUGMENT
    field = RandBiasField(coeff_range=o["bias_field"], prob=o["bias_field_p"])
    field.set_random_state(seed=0)
    steps = v2.Compose(
        [
            v2.RandomHorizontalFlip(o["hflip_p"]),
            v2.ColorJitter(brightness=o["brightness"], contrast=o["contrast"]),
            lambda image: field(image).as_tensor().to(image.dtype),
        ]
    )

    def augment(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        crop = v2.RandomResizedCrop(tuple(images.shape[-2:]), o["crop_scale"], antialias=True)
        out = torch.stack([steps(crop(image)) for image in images])
        negative = labels.reshape(len(labels), -1).amax(1) <= 0.5
        chosen = negative & (torch.rand(len(out)) < o["shade_negatives_p"])
        for i in torch.nonzero(chosen).flatten().tolist():
            k = int(torch.randint(2, 7, ()))
            grid = F.interpolate(torch.rand(1, 1, k, k), size=out.shape[-2:], mode="bilinear")
            low, high = grid.min(), grid.max()
            out[i] = out[i] * ((grid[0, 0] - low) / (high - low))
        return out.clamp_(0, 1)

    return augment


def augmentation(p: Params) -> Params:
    """One training augmentation call on a batch of grey images (MRI repeated to RGB), half
    of them negatives: ``stage`` supcon (``make_view``) or finetune (``BatchAugmentation``
    with every option on), ``impl`` batched (src.models.augment) or per_image (the former
    torchvision loop, above). Notes the time per image and, for the batched rows, the aten
    operations one call dispatches."""
    from benchmarks.measure import count_aten_ops
    from src.models.augment import BatchAugmentation
    from src.models.backbones import build_backbone
    from src.models.supcon import SupConModule

    device, batch, size = p["device"], p["images"], p["size"]
    gen = torch.Generator().manual_seed(0)
    # Contiguous, as the DataLoader's collate delivers them (a channel-expanded batch would
    # skip the grey check: src.models.augment.is_grey).
    grey = torch.rand(batch, 1, size, size, generator=gen)
    images = grey.expand(-1, 3, -1, -1).contiguous().to(device)
    labels = (torch.arange(batch) % 2).float()[:, None].to(device)
    torch.manual_seed(0)
    if p["stage"] == "supcon":
        view = SupConModule(build_backbone("resnet18", 0)).make_view
        work = (
            (lambda: view(images))
            if p["impl"] == "batched"
            else (lambda: _per_image_supcon(images))
        )
    else:
        augment = (
            BatchAugmentation(**FINETUNE_AUGMENT)
            if p["impl"] == "batched"
            else _per_image_finetune()
        )
        work = lambda: augment(images, labels)  # noqa: E731
    work()  # warm-up
    result, _ = _measure(p, work, batch)
    per_image = median(result["times"]) / batch * 1e3
    result["note"] = f"{per_image:.3f} ms/image"
    if p["impl"] == "batched":
        result["note"] += f", {count_aten_ops(work)} aten ops/call"
    return result


# ------------------------------------------------------------------------ training step


def _step_parts(stage: str, size: int, batch: int) -> dict[str, Callable[..., Any]]:
    """The pieces of one training step of ``stage`` on grey slices (demo settings: ResNet-18
    with instance norm, identity input normalisation): ``load`` (a batch from a DataLoader
    over the project's in-memory ``TensorSliceDataset``, no workers, the CPU default),
    ``augment`` per implementation (batched, per_image, none) and ``forward_backward`` (the
    loss of the augmented batch and its backward; no optimizer step)."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from src.data.datasets import TensorSliceDataset
    from src.models.backbones import build_backbone
    from src.models.classifier import ClassifierModule
    from src.models.supcon import SupConModule

    gen = torch.Generator().manual_seed(0)
    slices = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=gen)
    labels = (torch.arange(batch) % 2).to(torch.uint8)[:, None]
    masks = torch.zeros(batch, size, size, dtype=torch.uint8)
    dataset = TensorSliceDataset(slices, masks, labels, [str(i) for i in range(batch)])
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0)
    if stage == "supcon":
        module = SupConModule(build_backbone("resnet18", 0, norm="instance"))
        view = module.make_view
        augment = {
            "batched": lambda images, y: torch.cat([view(images), view(images)]),
            "per_image": lambda images, y: torch.cat(
                [_per_image_supcon(images), _per_image_supcon(images)]
            ),
            "none": lambda images, y: torch.cat([images, images]),
        }

        def loss(views: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            features = torch.stack(module(views).chunk(2), dim=1)
            return module.criterion(features, y)

    else:
        net = build_backbone("resnet18", 1, norm="instance")
        module = ClassifierModule(net, augment=FINETUNE_AUGMENT)
        loop = _per_image_finetune()
        augment = {
            "batched": module.augment,
            "per_image": loop,
            "none": lambda images, y: images,
        }

        def loss(images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(module(images), y.float())

    def forward_backward(views: torch.Tensor, y: torch.Tensor) -> None:
        module.zero_grad(set_to_none=True)
        loss(views, y).backward()

    module.train()
    return {
        "load": lambda: next(iter(loader)),
        "augment": augment,
        "forward_backward": forward_backward,
    }


def training_step(p: Params) -> Params:
    """One training step of ``stage`` at ``images`` x ``size`` px, its parts timed one after
    the other in every run: data loading, the batched augmentation and forward+backward on
    its views, the per-image loop's augmentation, and forward+backward with no augmentation
    (the limit; also the loop's forward+backward, whose views are plain contiguous tensors
    like the limit's). Returns the parts ``limit``, ``per_image`` and ``batched``, each a
    row's result: step time per run = the sum of its parts in that run."""
    parts = _step_parts(p["stage"], p["size"], p["images"])
    load, augment, forward_backward = parts["load"], parts["augment"], parts["forward_backward"]
    times: dict[str, list[float]] = {}

    def clock(name: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = work()
        times.setdefault(name, []).append(time.perf_counter() - start)
        return result

    def run() -> None:
        batch = clock("load", load)
        images, y = batch["image"], batch["label"]
        views = clock("aug_batched", lambda: augment["batched"](images, y))
        clock("fb_batched", lambda: forward_backward(views, y))
        clock("aug_loop", lambda: augment["per_image"](images, y))
        plain = augment["none"](images, y)
        clock("fb_plain", lambda: forward_backward(plain, y))

    torch.manual_seed(0)
    run()  # warm-up
    times.clear()
    with PeakMemory(p["device"]) as peak:
        for _ in range(p["repeats"]):
            run()
    ms = {name: median(values) * 1e3 for name, values in times.items()}
    steps = {
        "limit": (["fb_plain"], "forward+backward only"),
        "per_image": (["load", "aug_loop", "fb_plain"], None),
        "batched": (["load", "aug_batched", "fb_batched"], None),
    }
    out = {}
    for name, (keys, note) in steps.items():
        runs = [sum(times[k][i] for k in keys) for i in range(p["repeats"])]
        if note is None:
            aug = "aug_loop" if name == "per_image" else "aug_batched"
            fb = "fb_plain" if name == "per_image" else "fb_batched"
            note = (
                f"augmentation {ms[aug]:.0f} ms, forward+backward {ms[fb]:.0f} ms, "
                f"data loading {ms['load']:.0f} ms"
            )
        out[name] = {
            "items": p["images"],
            "times": runs,
            "peak_mb": peak.mb,
            "max_abs_diff": None,
            "note": note,
        }
    return {"parts": out}


def training_step_ops(p: Params) -> Params:
    """aten operations of one batched training step (augmentation, forward, backward; not
    the data loading, which builds each item on its own by nature) at each batch size in
    ``batches``: a loop over images would make them grow with the batch."""
    from benchmarks.measure import count_aten_ops

    counts = {}
    for batch in p["batches"]:
        parts = _step_parts(p["stage"], p["size"], batch)
        data = parts["load"]()
        images, y = data["image"], data["label"]
        augment, forward_backward = parts["augment"]["batched"], parts["forward_backward"]
        forward_backward(augment(images, y), y)  # warm-up
        torch.manual_seed(0)
        counts[batch] = count_aten_ops(
            lambda a=augment, f=forward_backward, x=images, t=y: f(a(x, t), t)
        )
    text = ", ".join(f"B = {b}: {n}" for b, n in counts.items())
    same = "the same" if len(set(counts.values())) == 1 else "NOT the same"
    return {"note": f"aten ops per step at {p['size']} px: {text} ({same})", "counts": counts}


def adam_step(p: Params) -> Params:
    """One Adam step (weight decay on) over a network's parameters with fixed random
    gradients; ``kernel``: ``default`` (torch's; on a CPU a loop over the parameters) or
    ``fused`` (what fine-tuning uses, ``src.models.schedules.adam_with_cosine``). Its
    parameters after one step are compared with the default kernel's from the same start."""
    from src.models.backbones import build_backbone
    from src.models.schedules import adam_with_cosine

    torch.manual_seed(0)
    norm = "none" if p["arch"] == "vgg16" else "instance"
    net = build_backbone(p["arch"], 1, norm=norm).to(p["device"])
    start = [t.detach().clone() for t in net.parameters()]
    for t in net.parameters():
        t.grad = torch.randn_like(t) * 1e-3
    if p["kernel"] == "fused":
        optimizer = adam_with_cosine(net.parameters(), 1e-4, 1e-5, 1, 0.0)["optimizer"]
        assert optimizer.param_groups[0]["fused"], "fine-tuning's Adam is not fused here"
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-5)
    reference = torch.optim.Adam(
        [torch.nn.Parameter(t.clone()) for t in start], lr=1e-4, weight_decay=1e-5
    )
    for ref, t in zip(reference.param_groups[0]["params"], net.parameters(), strict=True):
        ref.grad = t.grad.clone()
    reference.step()
    optimizer.step()  # the first step creates the moment buffers: a warm-up
    first = [t.detach().clone() for t in net.parameters()]
    result, _ = _measure(p, optimizer.step, 1)
    count = sum(t.numel() for t in start)
    result["max_abs_diff"] = max(
        _diff(a, b) for a, b in zip(first, reference.param_groups[0]["params"], strict=True)
    )
    result["note"] = f"{count / 1e6:.0f} M parameters; diff: first step against the default"
    return result


WORKLOADS: dict[str, Callable[[Params], Params]] = {
    fn.__name__: fn
    for fn in (
        forward_limit,
        perturbation_cam,
        gradcam_scorecam,
        forward_backward_limit,
        gradient_cam,
        gradcam_gradient,
        faithfulness_limit,
        faithfulness,
        torchcam_faithfulness,
        densecrf_masks,
        brats_loader,
        augmentation,
        training_step,
        training_step_ops,
        adam_step,
    )
}
