"""Train/val/test splits by group (case, patient or image): seeded, from a file, written out.

docs/data.md: BraTS and TCGA-LGG split by case/patient 8:1:1 with a seed (or a split
file); VOC and KSDD2 keep their official test set and carve val from train by a seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.data.atomic import atomic_write_text
from src.data.errors import DataFormatError

SPLITS = ("train", "val", "test")
Split = dict[str, list[str]]


def _split_sizes(n: int, ratios: Sequence[float]) -> list[int]:
    """Group counts per split: rounded ratios, every split with a positive ratio gets >= 1
    group when there are enough groups, and train (listed first) keeps at least one."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split_ratios must be 3 non-negative numbers, got {list(ratios)}")
    total = float(sum(ratios))
    sizes = [0, 0, 0]
    for i in (1, 2):
        if ratios[i] > 0:
            sizes[i] = max(1, math.floor(n * ratios[i] / total + 0.5))
    # Shrink val/test (larger first, test on ties) until train keeps at least one group.
    floor_train = 1 if ratios[0] > 0 else 0
    while n - sizes[1] - sizes[2] < floor_train and sizes[1] + sizes[2] > 0:
        sizes[1 if sizes[1] > sizes[2] else 2] -= 1
    sizes[0] = n - sizes[1] - sizes[2]
    return sizes


def seeded_split(groups: Sequence[str], ratios: Sequence[float], seed: int) -> Split:
    """Shuffle ``groups`` with ``seed`` and cut them by ``ratios`` (train, val, test).

    The result depends only on the sorted set of groups, the ratios and the seed.
    """
    ordered = sorted(groups)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in perm]
    n_train, n_val, _ = _split_sizes(len(ordered), ratios)
    cut = {
        "train": shuffled[:n_train],
        "val": shuffled[n_train : n_train + n_val],
        "test": shuffled[n_train + n_val :],
    }
    return {k: sorted(v) for k, v in cut.items()}


def carve_val(train: Sequence[str], test: Sequence[str], val_fraction: float, seed: int) -> Split:
    """Official train/test lists; val = a seeded ``val_fraction`` of train (VOC, KSDD2)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cut = seeded_split(train, (1 - val_fraction, val_fraction, 0), seed)
    return {"train": cut["train"], "val": cut["val"], "test": sorted(test)}


def read_split_file(path: str | Path, known: Sequence[str]) -> Split:
    """Read a JSON/YAML ``{train: [...], val: [...], test: [...]}`` of group ids.

    Errors name the file and the problem: unknown keys, ids not in ``known``, ids listed in
    two splits. Missing keys mean an empty split.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "split file not found")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            content = yaml.safe_load(text)
        else:
            content = json.loads(text)
    except Exception as exc:  # any parser error becomes a message naming the file
        raise DataFormatError(path, f"cannot parse split file ({exc})") from exc
    if not isinstance(content, dict):
        raise DataFormatError(path, "split file must map train/val/test to lists of ids")
    extra = set(content) - set(SPLITS)
    if extra:
        raise DataFormatError(path, f"unknown split names {sorted(extra)} (allowed: {SPLITS})")
    split: Split = {}
    for name in SPLITS:
        ids = content.get(name) or []
        if not isinstance(ids, list):
            raise DataFormatError(path, f"'{name}' must be a list of ids")
        split[name] = [str(i) for i in ids]
    known_set = set(known)
    unknown = sorted({i for ids in split.values() for i in ids} - known_set)
    if unknown:
        raise DataFormatError(path, f"unknown ids not found in the dataset: {unknown}")
    seen: dict[str, str] = {}
    for name, ids in split.items():
        for i in ids:
            if i in seen:
                raise DataFormatError(path, f"id {i!r} is listed in both {seen[i]} and {name}")
            seen[i] = name
    return split


def write_split_file(path: str | Path, split: Split) -> None:
    """Write the split atomically as JSON, readable back by :func:`read_split_file`."""
    text = json.dumps({name: list(split.get(name, [])) for name in SPLITS}, indent=1)
    atomic_write_text(path, text + "\n")
