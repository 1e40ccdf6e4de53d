"""Probe a trained classifier's scores on a run's test split: is it timid, and on what?

    python -m experiments.probe_scores RUN_DIR [RUN_DIR ...] [--json OUT.json]

RUN_DIR is a finished run folder (its ``config.yaml`` and ``checkpoints/finetune/best-*.ckpt``,
or the stored weights its ``summary.json`` names; or a model-store folder with ``weights.pt``; a run of stage ``finetune`` is enough). For each run this prints, without any CAM:

- the mean scores of the training and validation slices (tumour, other) and their AUC,
  without augmentation: does the classifier fit its own training data confidently?
- the scores of every test slice, by group: tumour slices (label 1), slices of tumour cases
  without a tumour (label 0), slices of tumour-free cases; the test AUC; the tumour slices'
  mean score by tumour area (terciles);
- on the slices the evaluation scores (``eval.limit``, ``eval.positive_fraction``: the same
  15 the Cfd-CAM run evaluates): the mean score at 1x and 2x (Cfd-CAM's two scales), with
  the tumour painted over with the slice's median brain colour ("painted": does the score
  need the tumour?), and of a black image (``s0``, the blank threshold);
- Platt scaling fitted on the validation split's logits and image labels (no pixel label):
  where it would move the evaluated tumour slices' scores, which Cfd-CAM's confidence
  scaling and the DenseCRF's 0.5 decision read (a probe: no evaluation uses it);
- the image statistics the classifier sees, per group: the tumour's median grey level over the
  brain's, and the brain's 99th percentile over its median (how bright the brightest
  non-tumour tissue is), on the same 112 px slices.

Read-only: it builds the data module into a temporary folder and writes nothing to the run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from src.evaluation.sampling import eval_indices
from src.pipeline.stages import build_datamodule, build_net
from src.pipeline.store import load_weights


def _checkpoint(run: Path) -> Path:
    """The run's best fine-tuning checkpoint, else the stored weights its evaluation used."""
    found = sorted((run / "checkpoints" / "finetune").glob("best-*.ckpt"))
    if found:
        return found[-1]
    if (run / "weights.pt").exists():  # a folder of the model store
        return run / "weights.pt"
    summary = run / "summary.json"
    if summary.exists():
        return Path(json.loads(summary.read_text())["checkpoint"])
    raise FileNotFoundError(f"no checkpoints/finetune/best-*.ckpt nor summary.json in {run}")


def _network_input(dataset) -> torch.Tensor:
    """A split's slices as the network reads them: [0, 1], three channels."""
    images = dataset.images.float() / 255
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@torch.no_grad()
def _logits(net: torch.nn.Module, images: torch.Tensor, scale: int = 1) -> torch.Tensor:
    out = []
    for start in range(0, len(images), 32):
        x = images[start : start + 32]
        if scale != 1:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        out.append(net(x)[:, 0])
    return torch.cat(out)


def _scores(net: torch.nn.Module, images: torch.Tensor, scale: int = 1) -> np.ndarray:
    return torch.sigmoid(_logits(net, images, scale)).numpy()


def _painted(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each tumour replaced by the median grey level of the rest of its slice's brain."""
    painted = images.clone()
    for i in range(len(images)):
        tumour = masks[i] > 0
        brain = (images[i, 0] > 0.02) & ~tumour
        if tumour.any() and brain.any():
            painted[i][:, tumour] = images[i, 0][brain].median()
    return painted


def _image_stats(images: torch.Tensor, masks: torch.Tensor) -> tuple[list, list]:
    """Per slice: tumour median / brain median (tumour slices only), brain p99 / median."""
    contrast, bright = [], []
    for i in range(len(images)):
        grey, tumour = images[i, 0], masks[i] > 0
        brain = (grey > 0.02) & ~tumour
        if brain.sum() < 50:
            continue
        median = grey[brain].median().item()
        bright.append(torch.quantile(grey[brain], 0.99).item() / median)
        if tumour.sum() >= 20:
            contrast.append(grey[tumour].median().item() / median)
    return contrast, bright


def platt_scaling(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """`(a, b)` of the calibrated score `sigmoid(a * logit + b)`: a logistic regression of the
    image labels on the logits, unregularised (Platt 1999)."""
    fit = LogisticRegression(C=1e6).fit(logits[:, None], labels)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def _split_summary(logits: torch.Tensor, labels: np.ndarray) -> dict:
    """Mean score of the tumour and the other slices of a split, and its AUC (unaugmented)."""
    scores = torch.sigmoid(logits).numpy()
    return {
        "tumour_mean": float(scores[labels].mean()),
        "other_mean": float(scores[~labels].mean()),
        "auc": float(roc_auc_score(labels, scores)),
    }


def probe(run: Path) -> dict:
    cfg = OmegaConf.load(run / "config.yaml")
    with tempfile.TemporaryDirectory() as scratch:
        with open_dict(cfg):
            cfg.paths.output_dir = scratch
        datamodule = build_datamodule(cfg)
        datamodule.setup("fit")
        datamodule.setup("test")
        dataset = datamodule.dataset("test")
    net = build_net(cfg, datamodule.num_classes)
    load_weights(net, _checkpoint(run))
    net.eval()
    torch.set_num_threads(1)
    fitted = {}  # split: (logits, image labels), unaugmented
    for split in ("train", "val"):
        split_data = datamodule.dataset(split)
        fitted[split] = (
            _logits(net, _network_input(split_data)),
            split_data.labels[:, 0].numpy() > 0.5,
        )
    fit = {split: _split_summary(*fitted[split]) for split in fitted}
    images = _network_input(dataset)
    masks, labels = dataset.masks, dataset.labels[:, 0].numpy()
    cases = np.array([i.split("/")[0] for i in dataset.ids])
    tumour_cases = set(cases[labels > 0.5])
    in_tumour_case = np.array([c in tumour_cases for c in cases])
    test_logits = _logits(net, images)
    s1 = torch.sigmoid(test_logits).numpy()
    groups = {
        "tumour slices": labels > 0.5,
        "tumour cases, no tumour": (labels < 0.5) & in_tumour_case,
        "tumour-free cases": ~in_tumour_case,
    }
    result: dict = {"run": str(run), "checkpoint": str(_checkpoint(run)), "test": {}}
    for name, where in groups.items():
        v = s1[where]
        result["test"][name] = {
            "n": int(where.sum()),
            "mean": float(v.mean()) if len(v) else None,
            "median": float(np.median(v)) if len(v) else None,
            "share_over_0.5": float((v > 0.5).mean()) if len(v) else None,
        }
    result["test_auc"] = float(roc_auc_score(labels > 0.5, s1))
    result["fit_splits"] = fit
    area = (masks.flatten(1) > 0).sum(1).numpy()
    tumour = labels > 0.5
    edges = np.quantile(area[tumour], [0, 1 / 3, 2 / 3, 1])
    result["tumour_score_by_area"] = [
        {
            "area_px": [int(lo), int(hi)],
            "mean": float(s1[tumour & (area >= lo) & (area <= hi)].mean()),
        }
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
    ]
    picked = eval_indices(
        dataset, cfg.eval.limit, cfg.eval.get("positive_fraction"), cfg.eval.get("normal_area_max")
    )
    pos = [i for i in picked if labels[i] > 0.5]
    neg = [i for i in picked if labels[i] <= 0.5]
    sub, submask = images[pos], masks[pos]
    painted = _painted(sub, submask)
    result["eval_slices"] = {
        "tumour_1x": _scores(net, sub).round(3).tolist(),
        "tumour_2x": _scores(net, sub, 2).round(3).tolist(),
        "tumour_painted_1x": _scores(net, painted).round(3).tolist(),
        "normal_1x": _scores(net, images[neg]).round(3).tolist(),
        "blank": float(_scores(net, torch.zeros_like(images[:1]))[0]),
    }
    val_logits, val_labels = fitted["val"]
    a, b = platt_scaling(val_logits.numpy(), val_labels)
    calibrated = torch.sigmoid(a * test_logits + b).numpy()
    result["platt"] = {
        "a": a,
        "b": b,
        "tumour_1x": calibrated[pos].round(3).tolist(),
        "normal_1x": calibrated[neg].round(3).tolist(),
        "test_other_over_0.5": float((calibrated[~tumour] > 0.5).mean()),
    }
    contrast, bright = _image_stats(images[tumour], masks[tumour])
    _, bright_free = _image_stats(images[~in_tumour_case], masks[~in_tumour_case])
    result["image_stats"] = {
        "tumour_over_brain_median": float(np.median(contrast)),
        "brain_p99_over_median_tumour_slices": float(np.median(bright)),
        "brain_p99_over_median_tumour_free": float(np.median(bright_free)),
    }
    return result


def _print(result: dict) -> None:
    print(f"== {result['run']} ({result['checkpoint']})")
    for name, g in result["test"].items():
        if g["n"]:
            print(
                f"  {name:25s} n={g['n']:3d} mean {g['mean']:.3f} median {g['median']:.3f} "
                f"> 0.5: {g['share_over_0.5']:.2f}"
            )
    print(f"  test AUC {result['test_auc']:.3f}")
    for split, f in result["fit_splits"].items():
        print(
            f"  {split}: tumour mean {f['tumour_mean']:.3f}, other {f['other_mean']:.3f}, "
            f"AUC {f['auc']:.3f}"
        )
    by_area = ", ".join(
        f"{t['area_px'][0]}-{t['area_px'][1]} px: {t['mean']:.2f}"
        for t in result["tumour_score_by_area"]
    )
    print(f"  tumour score by area: {by_area}")
    e = result["eval_slices"]
    print(
        f"  eval slices: tumour 1x {np.mean(e['tumour_1x']):.3f} 2x {np.mean(e['tumour_2x']):.3f}"
        f" painted {np.mean(e['tumour_painted_1x']):.3f}; normal {e['normal_1x']}; "
        f"blank {e['blank']:.3f}"
    )
    print(f"  tumour 1x per slice: {e['tumour_1x']}")
    c = result["platt"]
    print(
        f"  Platt on val: a {c['a']:.2f} b {c['b']:.2f}; tumour 1x {c['tumour_1x']}; "
        f"normal {c['normal_1x']}; other test slices over 0.5: {c['test_other_over_0.5']:.2f}"
    )
    s = result["image_stats"]
    print(
        f"  image: tumour/brain median {s['tumour_over_brain_median']:.2f}, brain p99/median "
        f"{s['brain_p99_over_median_tumour_slices']:.2f} (tumour slices), "
        f"{s['brain_p99_over_median_tumour_free']:.2f} (tumour-free cases)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = [probe(run) for run in args.runs]
    for result in results:
        _print(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
