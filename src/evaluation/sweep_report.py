"""Aggregate a sweep folder (Hydra multirun) into a table and metric-versus-delta plots.

Every job folder holding a `summary.json` and `config.yaml` becomes one row: the CAM method,
its truncation percentile delta, the other options that differ between jobs, and the headline
metrics (mean ± std). The plots are the second paper's Fig. 4/5: one line per method. Jobs
of one method and delta that differ in `seed` are seeds of one point: the plot shows their
mean and a ± std band over the seeds, and the table gets a seed column.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from src.data.atomic import atomic_write_text  # noqa: E402
from src.evaluation.figures import save_figure  # noqa: E402

log = logging.getLogger(__name__)


def run_delta(cam: dict[str, Any]) -> Any:
    """The truncation `delta` of a run's saved `cam` node: `cam.options.delta`, or the flat
    `cam.delta` of a run folder written before the build_cam options moved under
    `cam.options`; None when neither is there."""
    options = cam.get("options") or {}
    return options["delta"] if "delta" in options else cam.get("delta")


class NotARun(ValueError):
    """A folder holding a summary.json and config.yaml that src.run did not write."""


def _load_job(summary_path: Path, config_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's saved config and summary; NotARun (saying why) for files of another kind."""
    try:
        # The run's saved (resolved) config: plain YAML, read as data, not as a Hydra config.
        cfg = yaml.safe_load(config_path.read_text())
        summary = json.loads(summary_path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NotARun(f"unreadable: {reason}") from err
    if not isinstance(cfg, dict) or not isinstance((cfg.get("cam") or {}).get("name"), str):
        raise NotARun(f"{config_path.name} has no cam.name")
    if not isinstance(summary, dict) or not isinstance(summary.get("headline"), dict):
        raise NotARun(f"{summary_path.name} has no headline metrics")
    return cfg, summary


def collect(
    sweep_dir: str | os.PathLike, job_dirs: Sequence[Path] | None = None
) -> list[dict[str, Any]]:
    """One dict per finished job below `sweep_dir` (or, given `job_dirs`, of just those run
    folders below it: a caller that knows its jobs leaves out stale ones), sorted by method,
    delta, then job. A folder whose summary.json and config.yaml are not a run's (any folder
    can be given, /tmp included) is named on stderr and skipped."""
    rows = []
    if job_dirs is None:
        summaries = sorted(Path(sweep_dir).rglob("summary.json"))
    else:
        summaries = sorted(Path(job) / "summary.json" for job in job_dirs)
    for summary_path in summaries:
        job = summary_path.parent
        config_path = job / "config.yaml"
        if not config_path.is_file():
            continue
        try:
            cfg, summary = _load_job(summary_path, config_path)
        except NotARun as err:
            log.warning("Skipped %s: not a run folder (%s)", job, err)
            continue
        cam, data = cfg["cam"], cfg.get("data") or {}
        group = HEADLINE_GROUP.get(summary.get("headline_metrics"))
        row: dict[str, Any] = {
            "job": str(job.relative_to(sweep_dir)),
            "method": cam["name"],
            "stage": cfg.get("stage"),
            "mask": cam.get("mask"),
            "delta": run_delta(cam),
            "seed": cfg.get("seed"),
            "data": Path(str(data.get("root", ""))).name,
            "modality": data.get("modality"),
            "split": summary.get("split"),
            "group": group,
            "images": summary.get("groups", {}).get(group, {}).get("n"),
        }
        for metric, stats in summary["headline"].items():
            row[f"{metric}_mean"] = stats["mean"]
            row[f"{metric}_std"] = stats["std"]
        rows.append(row)
    if not rows:
        raise NoRuns(f"no finished runs (summary.json + config.yaml of src.run) under {sweep_dir}")

    def order(row: dict[str, Any]) -> tuple:
        delta = row["delta"]
        return (row["method"], -1.0 if delta is None else float(delta), row["job"])

    return sorted(rows, key=order)


class NoRuns(FileNotFoundError):
    """The folder given to the report holds no finished run."""


#: The images a headline is taken over (summary.json "headline_metrics" -> "groups" entry).
HEADLINE_GROUP = {"per_image": "abnormal", "confusion": "all"}
#: Headline metrics without an upper bound; every other one is a share in [0, 1].
UNBOUNDED = ("hd95",)


def metric_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The headline metrics of the rows (those with a `<metric>_mean` column)."""
    return [k[: -len("_mean")] for k in rows[0] if k.endswith("_mean")]


def _cell(mean: Any, std: Any) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if std is None:  # split-level (confusion-matrix) metrics have no spread
        return f"{mean:.4f}"
    return f"{mean:.3f} ± {std:.3f}"


def method_label(row: dict[str, Any]) -> str:
    """The method cell of a row: a `stage=masks` run names the mask rule it re-masked with,
    which is all that sets it apart from the run whose maps it read."""
    if row.get("stage") == "masks":
        return f"{row['method']} (re-masked: {row['mask']})"
    return row["method"]


def several_seeds(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether the jobs ran with more than one seed (else the tables leave the column out)."""
    return len({row.get("seed") for row in rows}) > 1


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The sweep table in Markdown, one row per job, headline metrics as mean ± std."""
    metrics = metric_names(rows)
    seeds = several_seeds(rows)
    header = ["method", "delta", *(["seed"] if seeds else []), *metrics, "job"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        delta = "off" if row["delta"] is None else f"{row['delta']:g}"
        cells = [
            method_label(row),
            delta,
            *([str(row["seed"])] if seeds else []),
            *(_cell(row[f"{m}_mean"], row[f"{m}_std"]) for m in metrics),
            row["job"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The sweep table as CSV, one column per field of the rows (`seed` only if it varies)."""
    fields = [k for k in rows[0] if k != "seed" or several_seeds(rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def seed_points(items: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]] | None:
    """One method's jobs as points over the seeds: per delta the mean of the jobs'
    `metric` and, as its std, the population std over them, with `seeds` their number;
    None if the jobs are one per delta (nothing to aggregate) or a delta repeats a seed
    (jobs that differ in something else, which averaging would hide)."""
    by_delta: dict[float, list[dict[str, Any]]] = {}
    for row in items:
        by_delta.setdefault(row["delta"], []).append(row)
    if all(len(jobs) == 1 for jobs in by_delta.values()):
        return None
    if any(len({r.get("seed") for r in jobs}) < len(jobs) for jobs in by_delta.values()):
        return None
    points = []
    for delta, jobs in by_delta.items():
        values = [r[f"{metric}_mean"] for r in jobs]
        points.append(
            {
                **jobs[0],
                "delta": delta,
                f"{metric}_mean": statistics.fmean(values),
                f"{metric}_std": statistics.pstdev(values),
                "seeds": len(values),
            }
        )
    return points


def delta_figure(rows: Sequence[dict[str, Any]], metric: str) -> Any | None:
    """Mean (± std band) of `metric` against delta, one line per method, titled with the
    images the numbers are over; None if no job has a delta. A method run with several
    seeds is drawn as the mean over its seeds with a ± std-over-seeds band (`seed_points`),
    else the band is each job's own std (e.g. over the images)."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["delta"] is not None and row.get(f"{metric}_mean") is not None:
            by_method.setdefault(row["method"], []).append(row)
    if not by_method:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    plotted, seeds = [], []
    for method, jobs in sorted(by_method.items()):
        points = seed_points(jobs, metric)
        seeds += [] if points is None else [p["seeds"] for p in points]
        items = sorted(jobs if points is None else points, key=lambda r: r["delta"])
        plotted += items
        x = [r["delta"] for r in items]
        mean = [r[f"{metric}_mean"] for r in items]
        std = [r[f"{metric}_std"] or 0.0 for r in items]
        ax.plot(x, mean, marker="o", label=method)
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(x, low, high, alpha=0.15)
    ax.set_xlabel("truncation percentile delta")
    ax.set_ylabel(metric)
    _set_limits(ax, metric, plotted)
    title = _plot_title(metric, plotted)
    if seeds:
        n = str(min(seeds)) if min(seeds) == max(seeds) else f"{min(seeds)}-{max(seeds)}"
        title += f"\nmean ± std over {n} seeds per point"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_against_delta(rows: Sequence[dict[str, Any]], metric: str, path: Path) -> bool:
    """`delta_figure` written to `path`; False (nothing written) if no job has a delta."""
    fig = delta_figure(rows, metric)
    if fig is None:
        return False
    save_figure(fig, path)
    return True


def _set_limits(ax: Any, metric: str, rows: Sequence[dict[str, Any]]) -> None:
    """[0, 1] for a share (a constant 1.0 would otherwise get a 0.96-1.04 axis that makes
    noise of nothing); from 0 up for HD95 and for any values outside [0, 1]."""
    means = [r[f"{metric}_mean"] for r in rows]
    if metric not in UNBOUNDED and all(0 <= m <= 1 for m in means):
        ax.set_ylim(-0.02, 1.02)
        return
    tops = [m + (r[f"{metric}_std"] or 0.0) for m, r in zip(means, rows, strict=True)]
    ax.set_ylim(min(0.0, *means), max(*tops, 0.0) * 1.05 or 1.0)


def _plot_title(metric: str, rows: Sequence[dict[str, Any]]) -> str:
    """Which images the plotted numbers are over, e.g. "dice over the abnormal images (n=12
    per job), test split"; just the metric for summaries that do not say."""
    groups = sorted({str(r["group"]) for r in rows if r.get("group")})
    counts = sorted({int(r["images"]) for r in rows if r.get("images") is not None})
    if not groups or not counts:
        return metric
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    title = f"{metric} over the {'/'.join(groups)} images (n={n} per job)"
    splits = sorted({str(r["split"]) for r in rows if r.get("split")})
    return f"{title}, {'/'.join(splits)} split" if splits else title


def write_report(
    sweep_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    job_dirs: Sequence[Path] | None = None,
) -> list[Path]:
    """Write sweep_report.md / .csv and one plot per metric of the runs below `sweep_dir`
    (only `job_dirs`, if given); returns the files written."""
    rows = collect(sweep_dir, job_dirs)
    out = Path(out_dir or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "sweep_report.md", out / "sweep_report.csv"]
    atomic_write_text(written[0], to_markdown(rows))
    atomic_write_text(written[1], to_csv(rows))
    for metric in metric_names(rows):
        path = out / f"sweep_{metric}_vs_delta.png"
        if plot_against_delta(rows, metric, path):
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m src.report <sweep dir> [--out DIR]`: write the table and the plots, print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a multirun folder (or any folder of finished runs)")
    parser.add_argument("--out", help="where to write the report (default: sweep_dir)")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.sweep_dir, args.out)
    except NoRuns as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    for path in written:
        print(path)
    print(written[0].read_text())


if __name__ == "__main__":
    main()
