"""The CAM maps of a whole split in one compressed `.npz`, written while the test loop runs.

`np.savez_compressed` needs every array in memory at once; a BraTS test split does not fit.
An `.npz` is a zip of `.npy` members, so maps are streamed into it one image at a time, and
the file only appears under its final name once complete.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _member(image_id: str) -> str:
    # Ids such as "BraTS2021_00002/s077" contain '/', which a zip would treat as a folder.
    return image_id.replace("/", "__") + ".npy"


class MapWriter:
    """Context manager: `add(id, map)` per image; the `.npz` is renamed into place on exit."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> MapWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_DEFLATED)
        return self

    def add(self, image_id: str, cam_map: np.ndarray) -> None:
        assert self._zip is not None, "MapWriter used outside its with block"
        with self._zip.open(_member(image_id), "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.asarray(cam_map, dtype=np.float16))

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._zip is not None
        self._zip.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def read_maps(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (id, map as float32) from a file written by MapWriter."""
    with np.load(path) as archive:
        for name in archive.files:
            yield name.replace("__", "/"), archive[name].astype(np.float32)


def load_map(path: str | os.PathLike, image_id: str) -> np.ndarray:
    """The map of one image, as float32."""
    with np.load(path) as archive:
        return archive[_member(image_id)[: -len(".npy")]].astype(np.float32)


def shard_path(path: str | os.PathLike, rank: int) -> Path:
    """The maps file of one process in a distributed evaluation."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def merge_shards(path: str | os.PathLike, world_size: int) -> None:
    """Join the per-process maps files into `path`, dropping the duplicates a distributed
    sampler adds to even out the shards, and remove the shards."""
    shards = [shard_path(path, rank) for rank in range(world_size)]
    seen: set[str] = set()
    with MapWriter(path) as writer:
        for shard in shards:
            for image_id, cam_map in read_maps(shard):
                if image_id not in seen:
                    seen.add(image_id)
                    writer.add(image_id, cam_map)
    for shard in shards:
        shard.unlink()
