"""A run folder in the format evaluation wrote before the pipeline/evaluation seam (issue 12):
`per_image.csv`, `summary.json`, `cam_maps.npz` and `config.yaml` as an old `stage=eval` run
left them, so `stage=masks maps_from=<old run>` can be checked against old folders.

The text files are literal copies in `tests/pipeline/old_run/` (captured from the code of
that time); the data and the maps are regenerated from fixed seeds, the maps written with the
zip layout of that time (one float16 `.npy` member per image, '/' spelled '__')."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from scipy.ndimage import gaussian_filter

from src.data.generators.brats import generate_brats
from src.pipeline.compose import compose_config
from src.pipeline.stages import build_datamodule

LITERAL = Path(__file__).parent / "old_run"
#: Stands for the test's temporary folder in the literal files.
ROOT = "@ROOT@"


def data_overrides(root: Path) -> list[str]:
    """The tiny BraTS data every old-run test reads."""
    return [
        "data=brats",
        f"data.root={root / 'BraTS2021'}",
        f"data.cache_dir={root / 'cache'}",
        "data.image_size=null",
        f"paths.model_store={root / 'classifiers'}",
        "eval.mask_workers=0",
        "eval.figure_images=2",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "cam=gradcam",
    ]


def old_maps(dataset) -> dict[str, np.ndarray]:
    """A fixed map per test image: the blurred ground truth plus seeded noise, in [0, 1]."""
    rng = np.random.default_rng(7)
    maps = {}
    for i in range(len(dataset)):
        item = dataset[i]
        truth = item["mask"].numpy().astype(np.float64)
        noisy = gaussian_filter(truth, 2) * 0.8 + rng.uniform(0, 0.3, truth.shape)
        maps[item["id"]] = np.clip(noisy, 0, 1).astype(np.float16)
    return maps


def write_old_maps(path: Path, maps: dict[str, np.ndarray]) -> None:
    """`cam_maps.npz` as the old MapWriter laid it out."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for image_id, cam_map in maps.items():
            with archive.open(image_id.replace("/", "__") + ".npy", "w") as handle:
                np.lib.format.write_array(handle, cam_map.astype(np.float16))


def split_dataset(cfg: DictConfig):
    """The test split of the configured (tiny BraTS) data."""
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    return datamodule.dataset("test")


def build_old_run(root: Path) -> Path:
    """Generate the data and an old run folder `root/old-run` from the literal files."""
    generate_brats(root / "BraTS2021", n_cases=5, seed=4, shape=(32, 32, 8), normal_cases=1)
    folder = root / "old-run"
    folder.mkdir(parents=True)
    cfg = compose_config(data_overrides(root), folder)
    write_old_maps(folder / "cam_maps.npz", old_maps(split_dataset(cfg)))
    for name in ("per_image.csv", "summary.json", "config.yaml"):
        text = (LITERAL / name).read_text().replace(ROOT, str(root))
        (folder / name).write_text(text)
    return folder


def remask_config(root: Path, source: Path, out: Path, mask: str) -> DictConfig:
    """`stage=masks` of `source` with `cam.mask=mask` (threshold 0.4), writing into `out`."""
    extra = ["stage=masks", f"maps_from={source}", f"cam.mask={mask}", "cam.threshold=0.4"]
    return compose_config([*data_overrides(root), *extra], out)
