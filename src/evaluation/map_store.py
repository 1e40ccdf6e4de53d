"""The CAM maps of a whole split in one compressed `.npz`, written while the test loop runs.

`np.savez_compressed` needs every array in memory at once; a BraTS test split does not fit.
An `.npz` is a zip of `.npy` members, so maps are streamed into it one image at a time, and
the file only appears under its final name once complete.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from src.data.atomic import atomic_path
from src.evaluation.image_result import class_map_id

#: The maps file of a run folder (read again by `stage=masks`).
MAPS_FILE = "cam_maps.npz"


def _member(image_id: str) -> str:
    # Ids such as "BraTS2021_00002/s077" contain '/', which a zip would treat as a folder.
    return image_id.replace("/", "__") + ".npy"


class MapWriter:
    """Context manager: `add(id, map)` per image; the `.npz` is renamed into place on exit."""

    def __init__(self, path: str | os.PathLike) -> None:
        """Nothing is written before the with block starts."""
        self.path = Path(path)
        self._target: contextlib.ExitStack | None = None
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> MapWriter:
        """Open the zip under a temporary name beside `path` (`src.data.atomic.atomic_path`)."""
        self._target = contextlib.ExitStack()
        tmp = self._target.enter_context(atomic_path(self.path))
        self._zip = zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED)
        return self

    def add(self, image_id: str, cam_map: np.ndarray) -> None:
        """Append one map, stored as float16."""
        assert self._zip is not None, "MapWriter used outside its with block"
        with self._zip.open(_member(image_id), "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.asarray(cam_map, dtype=np.float16))

    def __exit__(self, exc_type, exc, tb) -> None:
        """Close the zip; rename it into place, or discard it when the block failed."""
        assert self._zip is not None and self._target is not None
        self._zip.close()
        self._zip = None
        target, self._target = self._target, None
        target.__exit__(exc_type, exc, tb)


class MapArchive:
    """Random access to a file written by MapWriter: the zip stays open and each lookup
    decompresses one map, so a caller that needs the maps in another order than the file's
    (e.g. all class maps of one image) never holds the whole split in memory."""

    def __init__(self, path: str | os.PathLike) -> None:
        """Open the file; its keys are the image ids (or `class_map_id`s) it holds."""
        self.path = Path(path)
        self._archive = np.load(path)
        self._ids = {name.replace("__", "/"): name for name in self._archive.files}

    def ids(self) -> list[str]:
        """The keys of the maps, in file order."""
        return list(self._ids)

    def __contains__(self, image_id: str) -> bool:
        """Whether the file holds a map under this key."""
        return image_id in self._ids

    def __getitem__(self, image_id: str) -> np.ndarray:
        """The map of one key, as float32."""
        return self._archive[self._ids[image_id]].astype(np.float32)

    def close(self) -> None:
        """Close the file."""
        self._archive.close()

    def __enter__(self) -> MapArchive:
        """The archive itself, closed when the block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the file."""
        self.close()


def label_class_maps(
    maps: MapArchive, image_id: str, classes: list[int], shape: tuple[int, ...]
) -> np.ndarray:
    """The stored maps of an image's label classes, stacked in the listed order (the VOC
    rule breaks ties towards the first); KeyError naming the missing ones."""
    keys = [class_map_id(image_id, c) for c in classes]
    missing = [key for key in keys if key not in maps]
    if missing:
        raise KeyError(f"{maps.path}: no map for {missing[:5]} (classes in per_image.csv)")
    own = np.zeros((len(keys), *shape), np.float32)
    for k, key in enumerate(keys):
        own[k] = maps[key]
    return own


def read_maps(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (id, map as float32) from a file written by MapWriter, in file order."""
    with MapArchive(path) as maps:
        for image_id in maps.ids():
            yield image_id, maps[image_id]


def load_map(path: str | os.PathLike, image_id: str) -> np.ndarray:
    """The map of one image, as float32."""
    with MapArchive(path) as maps:
        return maps[image_id]


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
