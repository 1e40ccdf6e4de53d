"""The results table (``benchmarks/results.md``): one line per row, medians of the runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.measure import median

MEASURED = """\
Each row runs in a fresh Python process (so that its peak memory is its own): set-up,
warm-up, then the timed runs; the table shows the **median** of the runs. *items/s* = items
per run / median seconds. *time / limit* = the row's median time over its limit row's:
for perturbation CAMs the limit is the same number of plain batched forward passes of the
backbone, at the same input sizes and chunk size, with no CAM logic (per scale: the B
images, the blank image, B x C masked images); for gradient CAMs it is one forward plus
one full backward to the input; for the faithfulness metrics it is their forwards as plain
batched forwards. *speed-up* = this row's items/s over its baseline
row's (grad-cam 1.5.7 for the CAMs, torchcam 0.5 for the faithfulness metrics, float32 for
the speed options, serial for the worker pool, setup-from-NIfTI for the loader). *max abs diff* = largest difference between this
row's maps and the reference named in the notes (after a per-image min-max when compared
with grad-cam). *peak MB* = on CPU, the process's peak resident set during the
timed runs (Linux `VmHWM`, reset at their start via `/proc/self/clear_refs`) minus its
resident set before them; on CUDA, `torch.cuda.max_memory_allocated` over the runs.
*Training step* rows: one process per stage, size and batch times, in every run, data
loading, the batched augmentation and forward+backward on its views, the per-image loop's
augmentation, and forward+backward on the plain batch (the limit, and the loop's
forward+backward, whose views are plain contiguous tensors too); a row's step time per run
is the sum of its parts (notes: their medians), its peak MB that process's over all parts.
"""


@dataclass
class Row:
    key: str
    group: str
    label: str
    workload: str
    params: dict[str, Any]
    limit: str | None = None  # key of the row whose time is this row's limit
    baseline: str | None = None  # key of the row this row's speed-up is measured against
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        times = self.result.get("times")
        return median(times) if times else None

    @property
    def rate(self) -> float | None:
        """Items per second (median run)."""
        seconds = self.seconds
        return self.result["items"] / seconds if seconds else None

    def workload_text(self) -> str:
        p = self.params
        if self.workload == "densecrf_masks":
            return f"{p['masks']} maps"
        if self.workload == "brats_loader":
            return f"{p['cases']} cases, {p['volume']}"
        if self.workload == "adam_step":
            return f"1 step, {p['arch']}"
        if "batches" in p:
            return f"{' / '.join(str(b) for b in p['batches'])} img x {p['size']} px"
        text = f"{p['images']} img x {p['size']} px"
        if len(p.get("scales", [1])) > 1:
            text += f", scales {p['scales']}"
        return text


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}" if value >= 0.01 else f"{value:.1e}"


def limit_ratio(row: Row, by_key: dict[str, Row]) -> float | None:
    """The row's median time over its limit row's (None without a limit or a result)."""
    limit = by_key.get(row.limit or "")
    seconds = row.seconds
    return seconds / limit.seconds if seconds and limit and limit.seconds else None


def speed_up(row: Row, by_key: dict[str, Row]) -> float | None:
    """The row's items/s over its baseline row's (None without a baseline or a result)."""
    base = by_key.get(row.baseline or "")
    rate = row.rate
    return rate / base.rate if rate and base and base.rate else None


def table(rows: list[Row]) -> str:
    by_key = {row.key: row for row in rows}
    lines = [
        "| group | row | workload | items/s | median s (runs) | time / limit | speed-up | "
        "peak MB | max abs diff | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        seconds = row.seconds
        if seconds is None:
            text = row.result.get("error") or row.result.get("note") or "not run"
            cells = ["—"] * 6 + [text]
        else:
            ratio, speed = limit_ratio(row, by_key), speed_up(row, by_key)
            diff = row.result.get("max_abs_diff")
            cells = [
                _fmt(row.result["items"] / seconds),
                f"{seconds:.2f} ({len(row.result['times'])})",
                f"{ratio:.2f} ({by_key[row.limit or ''].label})" if ratio else "—",
                f"{speed:.2f}x ({by_key[row.baseline or ''].label})" if speed else "—",
                f"{max(row.result['peak_mb'], 0.0):.0f}",
                "—" if diff is None else f"{diff:.1e}",
                row.result.get("note", ""),
            ]
        lines.append(
            f"| {row.group} | {row.label} | {row.workload_text()} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def document(rows: list[Row], machine: dict[str, str], settings: dict[str, Any]) -> str:
    info = "\n".join(f"- {key}: {value}" for key, value in machine.items())
    config = ", ".join(f"{key}={value}" for key, value in settings.items())
    return (
        "# Benchmark results\n\n"
        f"Written by `make bench` (`python -m benchmarks.run`; settings: {config}).\n\n"
        f"## Machine\n\n{info}\n\n## How measured\n\n{MEASURED}\n## Results\n\n"
        f"{table(rows)}\n"
    )


def figure(rows: list[Row], path: Path) -> None:
    """Two bar charts of the table: each CAM row's time over its limit (dashed: the limit
    and Cfd-CAM's 1.1 target) and its speed-up over grad-cam (dashed: the 2x target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from src.evaluation.figures import save_figure

    by_key = {row.key: row for row in rows}
    over_grad_cam = [
        row for row in rows if by_key.get(row.baseline or "", row).label.startswith("grad-cam")
    ]
    panels = [
        ("time / limit (lower is faster)", [(r, limit_ratio(r, by_key)) for r in rows], [1, 1.1]),
        ("speed-up over grad-cam 1.5.7", [(r, speed_up(r, by_key)) for r in over_grad_cam], [2]),
    ]
    panels = [(title, [(r, v) for r, v in bars if v], lines) for title, bars, lines in panels]
    height = 0.28 * max(len(bars) for _, bars, _ in panels) + 1.2
    fig, axes = plt.subplots(1, 2, figsize=(15, height))
    for ax, (title, bars, lines) in zip(axes, panels, strict=True):
        names = [f"{row.group.split(' (')[0]}: {row.label}" for row, _ in reversed(bars)]
        ax.barh(range(len(bars)), [value for _, value in reversed(bars)], color="tab:blue")
        ax.set_yticks(range(len(bars)), names, fontsize=7)
        for x in lines:
            ax.axvline(x, color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=9)
    save_figure(fig, path)
