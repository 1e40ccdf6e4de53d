"""Benchmark helpers: the trained-like model, the table arithmetic, memory and the plan."""

from __future__ import annotations

import mmap

import pytest
import torch

from benchmarks import run
from benchmarks.measure import PeakMemory, timed_runs
from benchmarks.models import kill_layer4_channels
from benchmarks.report import Row, document, figure, limit_ratio, speed_up, table
from src.cams import build_cam
from src.models.seeded import cfd_resnet18

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models (tests/conftest.py)


def layer4(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    store = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: store.update(a=o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return store["a"]


def test_killed_channels_are_zero_for_every_input_and_only_those():
    model = cfd_resnet18()
    dead = kill_layer4_channels(model, 0.25)
    assert len(dead) == 128 and len(set(dead)) == 128
    features = layer4(model, torch.rand(3, 3, 64, 64))
    zero = (features == 0).flatten(2).all(-1)  # (B, C)
    assert zero[:, dead].all()
    alive = [c for c in range(512) if c not in set(dead)]
    assert not zero[:, alive].any()


def test_skipping_dead_channels_is_exact_and_saves_their_forwards():
    model = cfd_resnet18()
    kill_layer4_channels(model, 0.5)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    maps = {}
    for skip in (True, False):
        with build_cam("cfdcam", model, ["layer4"], scales=[1], skip_blank=skip) as cam:
            maps[skip] = cam(x)
            maps[f"n{skip}"] = cam.method.forwarded
    assert (maps["nTrue"], maps["nFalse"]) == (256, 512)
    assert (maps[True] - maps[False]).abs().max() <= 1e-6


def row(key, seconds, items=2, limit=None, baseline=None, **result):
    times = [seconds * 2, seconds, seconds * 0.5 + seconds * 0.5]  # median = seconds
    result = {"items": items, "times": times, "peak_mb": 12.0, **result}
    return Row(
        key, "g", key, "forward_limit", {"images": items, "size": 64}, limit, baseline, result
    )


def test_table_uses_medians_for_rates_ratios_and_speedups():
    rows = [
        row("limit", 1.0),
        row("ours", 1.1, limit="limit", baseline="theirs", max_abs_diff=3e-6),
        row("theirs", 2.2, limit="limit"),
        Row("skipped", "g", "skipped", "forward_limit", {"images": 1, "size": 64}),
    ]
    rows[-1].result = {"error": "skipped on CPU"}
    lines = table(rows).splitlines()
    ours = [c.strip() for c in lines[3].split("|")]
    assert ours[4] == "1.82"  # items/s = 2 / 1.1
    assert ours[5] == "1.10 (3)"
    assert ours[6] == "1.10 (limit)"
    assert ours[7] == "2.00x (theirs)"  # 2/1.1 over 2/2.2
    assert ours[9] == "3.0e-06"
    assert "skipped on CPU" in lines[5]
    text = document(rows, {"CPU": "test cpu"}, {"size": 64})
    assert "- CPU: test cpu" in text and "median" in text


def test_ratios_and_figure_skip_rows_without_a_reference(tmp_path):
    rows = [
        row("limit", 1.0),
        row("grad-cam x", 2.0, limit="limit"),
        row("ours", 0.8, limit="limit", baseline="grad-cam x"),
        row("bf16", 0.4, baseline="ours"),
    ]
    by_key = {r.key: r for r in rows}
    assert limit_ratio(by_key["ours"], by_key) == pytest.approx(0.8)
    assert speed_up(by_key["ours"], by_key) == pytest.approx(2.5)
    assert limit_ratio(by_key["bf16"], by_key) is None  # no limit row
    assert speed_up(by_key["limit"], by_key) is None
    out = tmp_path / "results.png"
    figure(rows, out)
    assert out.read_bytes()[:4] == b"\x89PNG" and [f.name for f in tmp_path.iterdir()] == [out.name]


def test_peak_memory_sees_new_resident_pages_even_if_freed():
    """100 MB of fresh pages, touched and released inside the window. (Fresh pages: in a
    long-lived process an allocator may reuse resident memory, which is why each benchmark
    row runs in its own process.)"""
    size = 100 * 2**20
    with PeakMemory(torch.device("cpu")) as peak:
        block = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1
        block.close()
    assert 90 <= peak.mb <= 400


def test_timed_runs_counts_and_returns_the_last_result():
    calls = iter(range(10))
    times, result = timed_runs(lambda: next(calls), 3, torch.device("cpu"))
    assert len(times) == 3 and all(t >= 0 for t in times) and result == 2


def test_plan_references_existing_rows_and_full_means_240():
    args = run.parse_args(["--full"])
    assert args.size == 240
    brats = {"brats_root": "r", "brats_cache": "c", "cases": 4, "volume": "v"}
    rows = [
        *run.cfd_rows(args, torch.device("cpu")),
        *run.scorecam_rows(args),
        *run.gradient_rows(args),
        *run.mask_rows(),
        *run.brats_rows(brats),
        *run.thread_rows(args),
    ]
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys))
    for r in rows:
        assert r.limit in (None, *keys) and r.baseline in (None, *keys), r.key
    assert all(r.params.get("size", 240) == 240 for r in rows)


def test_step_rows_share_one_run_per_stage_size_and_batch():
    rows = run.step_rows(run.parse_args([]))
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys))
    for r in rows:
        assert r.limit in (None, *keys) and r.baseline in (None, *keys), r.key
    first = rows[0]
    parts = {
        part: {"items": 32, "times": [i + 1.0], "peak_mb": 0.0, "max_abs_diff": None}
        for i, part in enumerate(run.STEP_PARTS)
    }
    first.result = {"parts": parts}
    run.share_step_parts(first, rows)
    trio = [r for r in rows if r.params.get("step") == first.params["step"]]
    assert len(trio) == 3 and [r.seconds for r in trio] == [1.0, 2.0, 3.0]
    assert all(not r.result for r in rows if r not in trio)
    ops = next(r for r in rows if r.workload == "training_step_ops")
    ops.result = {"note": "aten ops per step at 112 px: B = 32: 5, B = 128: 5 (the same)"}
    text = table(rows)
    assert "B = 32: 5, B = 128: 5" in text and "32 / 128 img x 112 px" in text
    assert "2.00 (limit: forward+backward, no augmentation)" in text
