"""Which images a limited evaluation scores: a share of tumours, the rest from the images the
evaluation files as normal, evenly spread, and one of each kind even for a tiny limit."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from src.data.datasets import TensorSliceDataset
from src.evaluation.sampling import eval_indices, eval_subset, limited_loader, positive_share

EVALUATION = Path(__file__).parents[2] / "src" / "evaluation"


def test_eval_subset_spreads_positives_and_takes_the_rest_from_normal_images():
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 0, 0, 1], float)[:, None]
    assert eval_subset(labels, 4, None) == [0, 3, 6, 9]
    assert eval_subset(labels, 4, 0.5) == [0, 1, 8, 9]
    # Images 0 and 8 are labelled negative but hold a small tumour: not "normal".
    normal = np.array([0, 0, 0, 1, 0, 1, 0, 1, 0, 0], bool)
    chosen = eval_subset(labels, 4, 0.5, normal)
    assert chosen == [1, 3, 7, 9] and all(normal[i] for i in chosen if labels[i, 0] == 0)
    assert eval_subset(labels, 20, 0.5) == list(range(10))  # fewer images than the limit


@pytest.mark.parametrize("fraction", [0.5, 0.86, 0.9, 0.99])
def test_a_small_limit_keeps_one_image_of_each_kind(fraction):
    """eval.limit=4 with a positive share below 1 still evaluates a normal image (rounding
    0.9 x 4 would leave none), and one above 0 still a tumour."""
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 0, 0, 1], float)[:, None]
    normal = np.array([0, 0, 0, 1, 0, 1, 0, 1, 0, 0], bool)
    chosen = eval_subset(labels, 4, fraction, normal)
    assert len(chosen) == 4
    kinds = [labels[i, 0] for i in chosen]
    assert 1 <= kinds.count(0.0) <= 2 and all(normal[i] for i in chosen if labels[i, 0] == 0)
    assert [labels[i, 0] for i in eval_subset(labels, 4, 0.01, normal)].count(1.0) == 1


def test_positive_share_rounds_but_keeps_both_kinds():
    assert positive_share(15, 0.8) == 12  # the demo: 12 tumour and 3 normal slices
    assert positive_share(4, 0.86) == 3
    assert positive_share(4, 0.99) == 3
    assert positive_share(4, 0.01) == 1
    assert positive_share(4, 1.0) == 4 and positive_share(4, 0.0) == 0
    assert positive_share(1, 0.6) == 1  # one image cannot hold both


def test_a_short_pool_is_filled_from_the_other():
    labels = np.array([1, 1, 1, 1, 0, 1], float)[:, None]
    normal = np.array([0, 0, 0, 0, 1, 0], bool)
    assert eval_subset(labels, 4, 0.5, normal) == [0, 2, 4, 5]  # one normal image exists
    assert eval_subset(labels, 4, 0.5, np.zeros(6, bool)) == [0, 1, 3, 5]  # none does


def test_eval_indices_draw_normal_images_by_the_scoring_rule():
    """Normal pool = empty ground truth by default; with eval.normal_area_max, also the
    slices whose tumour covers at most that share of them (the authors' grouping)."""
    masks = torch.zeros((6, 10, 10), dtype=torch.uint8)
    masks[0, :5, :5] = 1  # 25 %: labelled tumour
    masks[1, 0, 0] = 1  # 1 %: labelled negative, a small tumour
    masks[2, :2, :1] = 1  # 2 %: labelled negative
    labels = torch.tensor([[1.0], [0], [0], [0], [0], [0]])
    dataset = TensorSliceDataset(
        torch.zeros((6, 1, 10, 10), dtype=torch.uint8), masks, labels, [f"s{i}" for i in range(6)]
    )
    assert eval_indices(dataset, 5, 0.2) == [0, 3, 4, 5]  # only 3 empty slices
    assert eval_indices(dataset, 5, 0.2, normal_area_max=0.01) == [0, 1, 3, 4, 5]
    assert eval_indices(dataset, 6, 0.2, normal_area_max=0.02) == [0, 1, 2, 3, 4, 5]


def test_a_loader_is_limited_only_when_the_limit_is_smaller():
    dataset = TensorSliceDataset(
        torch.zeros((4, 1, 8, 8), dtype=torch.uint8),
        torch.zeros((4, 8, 8), dtype=torch.uint8),
        torch.tensor([[1.0], [0], [1], [0]]),
        [f"s{i}" for i in range(4)],
    )
    loader = DataLoader(dataset, batch_size=2)
    assert limited_loader(loader, 2, None, 0.5, None) is loader
    assert limited_loader(loader, 2, 4, 0.5, None) is loader
    limited = limited_loader(loader, 3, 2, 0.5, None)
    assert limited.batch_size == 3 and list(limited.dataset.indices) == [0, 1]


def test_the_evaluation_package_reads_no_config_and_no_pipeline():
    """The pipeline passes plain values in: nothing under src/evaluation imports Hydra's config
    library or the pipeline (which would make it the pipeline's to run)."""
    for path in sorted(EVALUATION.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(("omegaconf", "hydra", "src.pipeline")), (path, name)
