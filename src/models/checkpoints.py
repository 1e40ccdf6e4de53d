"""The one reader of weight files, and the one error it (and every loader of weights) raises.

Weight files come from users (``backbone.net.weights``, ``ckpt=...``) and from the model store:
plain ``torch.save`` state_dicts or Lightning checkpoints. Every problem with one (missing,
not a PyTorch file, corrupt, no state_dict, keys or shapes that do not fit the network) is a
:class:`CheckpointError` whose message starts with the file, so the pipeline can report it as
a one-line user error (``src.pipeline.user_errors``). Pure torch: imported by the models and
the pipeline layers alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A weights file cannot be used; the message starts with the file, ``path`` holds it."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)


def _looks_like_torch_file(path: Path) -> bool:
    """`torch.save` writes a zip archive (legacy files: a pickle, first byte 0x80)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_state_dict(path: str | os.PathLike, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state_dict from a plain ``torch.save`` file or a Lightning checkpoint.

    Never downloads, and loads with ``weights_only=True``. A Lightning checkpoint holds the
    LightningModule's state, whose network keys carry a ``prefix`` (``"net."``, ``"encoder."``):
    when at least one key carries it, only those keys are kept, without it; otherwise the
    state is returned as stored. Raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "weights file not found")
    if not _looks_like_torch_file(path):
        raise CheckpointError(
            path, "not a PyTorch checkpoint (expected a Lightning .ckpt or a torch.save file)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle garbage, foreign objects, ...
        reason = " ".join(str(err).split())  # torch's messages span lines; a user error does not
        raise CheckpointError(path, f"corrupt checkpoint, cannot be loaded ({reason})") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(path, "holds no state_dict (a dict of tensors)")
    if prefix and any(k.startswith(prefix) for k in obj):
        return {k[len(prefix) :]: v for k, v in obj.items() if k.startswith(prefix)}
    return dict(obj)


def load_by_name(
    net: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | os.PathLike,
    skip: Iterable[str] = (),
) -> None:
    """Copy ``state`` into ``net`` by parameter name; every key outside ``skip`` must match.

    Raises :class:`CheckpointError` naming ``source`` and the first missing, unexpected or
    mis-shaped keys, so a checkpoint of another architecture or normalisation is refused
    rather than half-loaded.
    """
    skip = set(skip)
    own = {k: v for k, v in net.state_dict().items() if k not in skip}
    given = {k: v for k, v in state.items() if k not in skip}
    # BatchNorm fills a missing step counter itself (older torchvision files lack it).
    missing = sorted(k for k in own.keys() - given.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(given.keys() - own.keys())
    mis_shaped = sorted(
        f"{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}"
        for k in own.keys() & given.keys()
        if given[k].shape != own[k].shape
    )
    problems = [
        f"{what} ({len(keys)}): {keys[:5]}{' ...' if len(keys) > 5 else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", mis_shaped))
        if keys
    ]
    if problems:
        raise CheckpointError(source, "weights do not match the network: " + "; ".join(problems))
    net.load_state_dict(given, strict=False)
