"""`make bench`: run every benchmark row side by side and write benchmarks/results.md.

Rows (one fresh process each, same random-weight models and inputs within a group):
Cfd-CAM single/multi-scale against its forward-pass limit (random and trained-like network,
speed options), Score-CAM ``pgc`` and the gradient CAMs against grad-cam 1.5.7, the
faithfulness metrics against their forward-pass limit and torchcam, DenseCRF
masks serial vs worker pool, the BraTS loader from NIfTI vs the slice cache, and the effect
of the intra-op thread count, the training augmentation of both stages (per-image loop
against batched) and their training step split into augmentation, forward+backward and
data loading, and Adam's step (torch's default against fused). Defaults keep the whole run under
10 minutes on a 2-core CPU; ``--full`` uses the real 240 px input size (much longer on CPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.measure import machine
from benchmarks.report import Row, document, figure
from benchmarks.rows import prepare_brats
from benchmarks.worker import execute, in_child
from src.data.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results.md"
ROW_TIMEOUT_S = 900


def cfd_rows(args: argparse.Namespace, device: torch.device) -> list[Row]:
    group = "Cfd-CAM (ResNet-18 IN, layer4, chunk 64)"
    base = {"images": 1, "size": args.size, "batch_size": 64, "channels": 512}
    single, multi = {**base, "scales": [1]}, {**base, "scales": [1, 2]}
    dead = {"dead_fraction": args.dead_fraction}
    bf16 = {"autocast_dtype": "bfloat16"}

    def cam(params: dict, options: dict, **extra: Any) -> dict:
        opts = {"scales": params["scales"], **options}
        return {**params, "method": "cfdcam", "options": opts, **extra}

    rows = [
        Row("limit-1", group, "limit, single-scale", "forward_limit", single),
        Row("cfd-1", group, "Cfd-CAM single-scale", "perturbation_cam", cam(single, {}), "limit-1"),
        Row("limit-ms", group, "limit, multi-scale", "forward_limit", multi),
        Row("cfd-ms", group, "Cfd-CAM multi-scale", "perturbation_cam", cam(multi, {}), "limit-ms"),
        Row(
            "cfd-ms-dead",
            group,
            f"Cfd-CAM ms, trained-like ({args.dead_fraction:.0%} dead), skip_blank",
            "perturbation_cam",
            cam(multi, {}, compare="full", **dead),
            "limit-ms",
            "cfd-ms",
        ),
        Row(
            "cfd-ms-bf16",
            group,
            "Cfd-CAM ms, autocast bf16",
            "perturbation_cam",
            cam(multi, bf16, compare="float32"),
            "limit-ms",
            "cfd-ms",
        ),
        Row(
            "cfd-1-cl",
            group,
            "Cfd-CAM single-scale, channels_last",
            "perturbation_cam",
            cam(single, {"channels_last": True}, compare="float32"),
            "limit-1",
            "cfd-1",
        ),
        Row(
            "cfd-ms-dead-bf16",
            group,
            "Cfd-CAM ms, trained-like, skip_blank + bf16",
            "perturbation_cam",
            cam(multi, bf16, compare="float32", **dead),
            "limit-ms",
            "cfd-ms",
        ),
    ]
    compile_row = Row(
        "cfd-ms-compile",
        group,
        "Cfd-CAM ms, torch.compile + bf16",
        "perturbation_cam",
        cam(multi, {"compile": True, **bf16}, compare="float32"),
        "limit-ms",
        "cfd-ms",
    )
    if not (args.compile or device.type == "cuda"):
        compile_row.result = {
            "error": "skipped on CPU by default: compiles 4 input shapes, ~2 min; --compile"
        }
    return [*rows, compile_row]


def scorecam_rows(args: argparse.Namespace) -> list[Row]:
    group = "Score-CAM pgc (ResNet-18 IN, layer4)"
    params = {"images": 1, "size": args.size, "batch_size": 64, "channels": 512, "scales": [1]}
    dead = {"dead_fraction": args.dead_fraction}

    def ours(options: dict, **extra: Any) -> dict:
        return {**params, "method": "scorecam", "options": {"preset": "pgc", **options}, **extra}

    return [
        Row("limit-score", group, "limit", "forward_limit", params),
        Row("gc-score", group, "grad-cam ScoreCAM", "gradcam_scorecam", params, "limit-score"),
        Row("score", group, "ours", "perturbation_cam", ours({}), "limit-score", "gc-score"),
        Row(
            "gc-score-dead",
            group,
            f"grad-cam ScoreCAM, trained-like ({args.dead_fraction:.0%} dead)",
            "gradcam_scorecam",
            {**params, **dead},
            "limit-score",
        ),
        Row(
            "score-dead",
            group,
            "ours, trained-like, skip_blank",
            "perturbation_cam",
            ours({}, compare="full", **dead),
            "limit-score",
            "gc-score-dead",
        ),
        Row(
            "score-bf16",
            group,
            "ours, autocast bf16",
            "perturbation_cam",
            ours({"autocast_dtype": "bfloat16"}, compare="float32"),
            "limit-score",
            "gc-score",
        ),
        Row(
            "score-compile",
            group,
            "ours, torch.compile + bf16",
            "perturbation_cam",
            ours({"autocast_dtype": "bfloat16", "compile": True}, compare="float32"),
            "limit-score",
            "gc-score",
        ),
    ]


def gradient_rows(args: argparse.Namespace) -> list[Row]:
    group = "Gradient CAMs (ResNet-18 BN, 1 logit)"
    # ~0.1-0.2 s per run: more runs per row (at least 11) steady the medians on a shared CPU.
    params = {"images": 16, "size": args.size, "model": "bn", "repeats": max(args.repeats, 11)}
    rows = [Row("fb-limit", group, "limit: 1 fwd + 1 bwd", "forward_backward_limit", params)]
    for method in ("gradcam", "gradcampp", "layercam", "xgradcam", "fullgrad"):
        p = {**params, "method": method, "layers": 1}
        rows += [
            Row(f"gc-{method}", group, f"grad-cam {method}", "gradcam_gradient", p, "fb-limit"),
            Row(method, group, method, "gradient_cam", p, "fb-limit", f"gc-{method}"),
        ]
    # 4 stages: our gradcam with grad-cam's fusion gives grad-cam's output (max abs diff);
    # the LT variants (truncation, sum fusion) are timed against grad-cam on the same layers.
    plain = {**params, "method": "gradcam", "layers": 4, "options": {"fusion": "mean_minmax"}}
    rows += [
        Row("gc-gradcam-4", group, "grad-cam gradcam, 4 stages", "gradcam_gradient", plain),
        Row(
            "gradcam-4",
            group,
            "gradcam, 4 stages, grad-cam's fusion",
            "gradient_cam",
            plain,
            "fb-limit",
            "gc-gradcam-4",
        ),
    ]
    for method in ("ltgradcam", "ltlayercam", "ltfullgrad"):
        p = {**params, "method": method, "layers": 4}
        baseline = "gc-gradcam-4" if method == "ltgradcam" else f"gc-{method}"
        if method != "ltgradcam":
            label = f"grad-cam {method[2:]}, 4 stages"
            rows.append(Row(baseline, group, label, "gradcam_gradient", p))
        label = f"{method}, 4 stages"
        rows.append(Row(method, group, label, "gradient_cam", p, "fb-limit", baseline))
    return rows


def faithfulness_rows(args: argparse.Namespace) -> list[Row]:
    group = "Faithfulness metrics (ResNet-18 IN, 1 logit, sigmoid)"
    params = {"images": 8, "size": args.size, "steps": 20, "baseline": "zero", "chunk": 64}
    return [
        Row("faith-limit", group, "limit: the same forwards", "faithfulness_limit", params),
        Row("faith-torchcam", group, "torchcam 0.5", "torchcam_faithfulness", params),
        Row(
            "faith",
            group,
            "ours (drop, increase, deletion, insertion)",
            "faithfulness",
            params,
            "faith-limit",
            "faith-torchcam",
        ),
    ]


BRATS_MODES = {
    "nifti": "from NIfTI",
    "cache": "from slice cache",
    "epoch": "epoch only",
    "per_item": "NIfTI decoded per item",
}


def mask_rows() -> list[Row]:
    crf = {"masks": 8, "mask_size": 240}
    return [
        Row("crf-serial", "DenseCRF masks", "serial", "densecrf_masks", {**crf, "workers": 0}),
        Row(
            "crf-pool",
            "DenseCRF masks",
            "worker pool",
            "densecrf_masks",
            {**crf, "workers": 2},
            baseline="crf-serial",
        ),
    ]


def brats_rows(brats: dict[str, Any]) -> list[Row]:
    return [
        Row(
            f"brats-{mode}",
            "BraTS train loader",
            label,
            "brats_loader",
            {**brats, "mode": mode},
            baseline=None if mode == "nifti" else "brats-nifti",
        )  # fmt: skip
        for mode, label in BRATS_MODES.items()
    ]


def thread_rows(args: argparse.Namespace) -> list[Row]:
    params = {"images": 1, "size": args.size, "batch_size": 64, "channels": 64, "scales": [1]}
    return [
        Row(
            f"threads-{n}",
            "torch threads",
            f"{n} intra-op thread(s)",
            "forward_limit",
            {**params, "threads": n},
            baseline="threads-1" if n > 1 else None,
        )  # fmt: skip
        for n in (1, 2)
    ]


def augmentation_rows(args: argparse.Namespace) -> list[Row]:
    """Training augmentation per call, before (torchvision per image) and after (batched)."""
    rows = []
    for stage in ("supcon", "finetune"):
        group = f"Training augmentation, {stage} (grey images)"
        for size in (16, 112):
            for batch in (32, 128, 256):
                params = {
                    "stage": stage,
                    "size": size,
                    "images": batch,
                    "repeats": max(args.repeats, 5),
                }
                before = f"aug-{stage}-{size}-{batch}-loop"
                rows += [
                    Row(
                        before,
                        group,
                        "before: per-image loop",
                        "augmentation",
                        {**params, "impl": "per_image"},
                    ),
                    Row(
                        f"aug-{stage}-{size}-{batch}",
                        group,
                        "after: batched",
                        "augmentation",
                        {**params, "impl": "batched"},
                        baseline=before,
                    ),
                ]
    return rows


STEP_PARTS = {
    "limit": "limit: forward+backward, no augmentation",
    "per_image": "before: per-image loop",
    "batched": "after: batched",
}


def step_rows(args: argparse.Namespace) -> list[Row]:
    """Training step time of both stages (augmentation, forward+backward, data loading) at
    the demo size and the real one, per-image loop against batched against the limit (no
    augmentation), and the aten operations per step at two batch sizes. One process per
    stage, size and batch measures all three rows (``training_step``)."""
    rows = []
    for stage in ("supcon", "finetune"):
        group = f"Training step, {stage} (ResNet-18 IN, grey images)"
        for size in (112, 240):
            for batch in (32, 128):
                key = f"step-{stage}-{size}-{batch}"
                params = {
                    "stage": stage,
                    "size": size,
                    "images": batch,
                    # at 240 px a SupCon step of 128 images takes minutes on one core
                    "repeats": args.step_repeats if size <= 112 else 1,
                    "step": key,
                }
                rows += [
                    Row(
                        f"{key}-{part}" if part != "batched" else key,
                        group,
                        label,
                        "training_step",
                        {**params, "part": part},
                        limit=None if part == "limit" else f"{key}-limit",
                        baseline=f"{key}-per_image" if part == "batched" else None,
                    )
                    for part, label in STEP_PARTS.items()
                ]
        rows.append(
            Row(
                f"step-{stage}-ops",
                group,
                "aten ops per step (augmentation + forward + backward)",
                "training_step_ops",
                {"stage": stage, "size": 112, "batches": [32, 128]},
            )
        )
    return rows


def optimizer_rows(args: argparse.Namespace) -> list[Row]:
    """Adam's step alone, torch's default kernel against the fused one fine-tuning uses: on
    a CPU the default's per-parameter temporaries dominate a VGG16 step (its fully connected
    head)."""
    rows = []
    for arch in ("vgg16", "resnet18"):
        group = f"Adam step, {arch}"
        params = {"arch": arch, "repeats": max(args.repeats, 5)}
        rows += [
            Row(f"adam-{arch}-default", group, "torch's default", "adam_step",
                {**params, "kernel": "default"}),
            Row(f"adam-{arch}", group, "fused (fine-tuning's)", "adam_step",
                {**params, "kernel": "fused"}, baseline=f"adam-{arch}-default"),
        ]  # fmt: skip
    return rows


def run_row(row: Row, common: dict[str, Any]) -> None:
    params = {**common, **row.params, "workload": row.workload}
    started = time.perf_counter()
    try:
        row.result = in_child(execute, params, ROW_TIMEOUT_S)
    except RuntimeError as error:
        row.result = {"error": f"failed: {str(error)[:200]}"}
    print(f"  {row.key:<18} {time.perf_counter() - started:6.1f} s", flush=True)


def share_step_parts(row: Row, rows: list[Row]) -> None:
    """A training-step run measured all three rows of its stage, size and batch: each gets
    its part (the run's error, if it failed)."""
    if row.workload != "training_step":
        return
    parts = row.result.get("parts")
    for other in rows:
        if other.workload == "training_step" and other.params["step"] == row.params["step"]:
            other.result = parts[other.params["part"]] if parts else dict(row.result)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="CAM input size in px (64)")
    parser.add_argument("--full", action="store_true", help="real input size: --size 240")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per row (3; the fast gradient rows at least 11)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--compile", action="store_true", help="also time Cfd-CAM with torch.compile on CPU"
    )
    parser.add_argument("--dead-fraction", type=float, default=0.5)
    parser.add_argument(
        "--step-repeats",
        type=int,
        default=2,
        help="timed training steps per 112 px step row (2; 1 at 240 px)",
    )
    parser.add_argument("--only", default="", help="run only rows whose key contains this")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.full:
        args.size = 240
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    info = machine(device, args.threads)
    common = {"device": args.device, "repeats": args.repeats, "threads": args.threads}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        needs_brats = any(args.only in f"brats-{mode}" for mode in BRATS_MODES)
        brats = in_child(prepare_brats, Path(folder), ROW_TIMEOUT_S) if needs_brats else {}
        rows = [
            *cfd_rows(args, device),
            *scorecam_rows(args),
            *gradient_rows(args),
            *faithfulness_rows(args),
            *mask_rows(),
            *(brats_rows(brats) if needs_brats else []),
            *thread_rows(args),
            *augmentation_rows(args),
            *step_rows(args),
            *optimizer_rows(args),
        ]
        rows = [row for row in rows if args.only in row.key]
        print(f"{len(rows)} benchmark rows on {device}, {args.threads} thread(s):", flush=True)
        for row in rows:
            if not row.result:
                run_row(row, common)
                share_step_parts(row, rows)
    info["total wall time"] = f"{time.perf_counter() - started:.0f} s"
    settings = {"size": args.size, "repeats": args.repeats, "threads": args.threads}
    settings["dead_fraction"] = args.dead_fraction
    atomic_write_text(args.out, document(rows, info, settings))
    figure(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
