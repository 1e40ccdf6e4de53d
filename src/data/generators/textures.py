"""Natural images and textures shipped inside scikit-image (never the ones it downloads).

``skimage.data`` fetches some images from the internet on first use; only the files that
are in the installed package folder are used here, read directly from that folder.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

#: Grey textures and colour photographs bundled with scikit-image.
TEXTURES = ("brick", "gravel", "grass")
PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "motorcycle_left", "camera", "coins", "moon")
_FILES = {
    "brick": "brick.png",
    "gravel": "gravel.png",
    "grass": "grass.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "astronaut": "astronaut.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "camera": "camera.png",
    "coins": "coins.png",
    "moon": "moon.png",
}


@functools.cache
def bundled_image(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of a scikit-image bundled picture (grey ones replicated)."""
    import skimage.data
    from PIL import Image

    path = Path(skimage.data.__file__).parent / _FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not bundled with this scikit-image version")
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    rgb.setflags(write=False)
    return rgb


def random_crop(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``size`` (height, width), resized up first if the image is smaller."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(size[0] / h, size[1] / w, 1.0) * rng.uniform(1.0, 1.3)
    if scale > 1.0:
        image = np.asarray(
            Image.fromarray(image).resize(
                (int(np.ceil(w * scale)), int(np.ceil(h * scale))), Image.BILINEAR
            )
        )
        h, w = image.shape[:2]
    y = int(rng.integers(0, h - size[0] + 1))
    x = int(rng.integers(0, w - size[1] + 1))
    return image[y : y + size[0], x : x + size[1]]
