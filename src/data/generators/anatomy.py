"""Brain anatomy for the synthetic MRI generators (BraTS and TCGA-LGG formats).

Real anatomy, not circles: nilearn ships the MNI152 2009 T1 template with its grey/white
matter probability maps inside the package (no download), and every synthetic case is that
brain, warped by a random affine plus a smooth random displacement, resampled onto the
requested grid. Tumours are irregular nested level sets (necrosis / enhancing rim / oedema,
the BraTS label layout of docs/data.md) and each modality maps tissues to its own contrast.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Fraction of each output axis that the brain's bounding box fills. These values put the MNI
#: brain at ~1 mm per voxel on the BraTS 240x240x155 grid, as in the real data.
BRAIN_FILL = (0.6, 0.75, 0.97)

#: Tissue intensities per modality (arbitrary units, WM/GM/CSF then tumour parts), chosen from
#: textbook contrasts: T1 WM > GM > CSF; T2 CSF bright; FLAIR CSF dark and oedema bright;
#: T1ce like T1 with a bright enhancing rim.
CONTRASTS: dict[str, dict[str, float]] = {
    "t1": {
        "csf": 0.22,
        "gm": 0.55,
        "wm": 0.80,
        "necrosis": 0.18,
        "enhancing": 0.50,
        "oedema": 0.52,
    },
    "t1ce": {
        "csf": 0.22,
        "gm": 0.55,
        "wm": 0.80,
        "necrosis": 0.18,
        "enhancing": 1.15,
        "oedema": 0.52,
    },
    "t2": {
        "csf": 1.00,
        "gm": 0.60,
        "wm": 0.40,
        "necrosis": 1.00,
        "enhancing": 0.72,
        "oedema": 0.88,
    },
    "flair": {
        "csf": 0.12,
        "gm": 0.55,
        "wm": 0.45,
        "necrosis": 0.55,
        "enhancing": 0.85,
        "oedema": 1.00,
    },
}
MODALITIES = tuple(CONTRASTS)
TUMOUR_PARTS = ("necrosis", "enhancing", "oedema")
#: BraTS label of each tumour part (docs/data.md: labels {0, 1, 2, 4}).
BRATS_LABELS = {"necrosis": 1, "oedema": 2, "enhancing": 4}


@dataclass
class Brain:
    """Tissue probability maps of one synthetic brain on the output grid (float32, [0, 1])."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray  # bool
    texture: np.ndarray  # real MNI T1 minus its tissue-model prediction: fine anatomy detail


@dataclass
class Tumour:
    """Soft memberships of the tumour parts (float32, [0, 1], zero outside the brain).

    ``parts`` cover only the tumour's bounding ``box`` of a volume of ``shape`` (speed).
    """

    parts: dict[str, np.ndarray]
    box: tuple[slice, ...]
    shape: tuple[int, ...]
    texture: np.ndarray  # multiplicative heterogeneity of the tumour intensities in the box

    local_labels: np.ndarray  # hard BraTS labels in the box

    def labels(self) -> np.ndarray:
        """Hard BraTS labels (uint8, values in {0, 1, 2, 4}) on the whole volume."""
        seg = np.zeros(self.shape, np.uint8)
        seg[self.box] = self.local_labels
        return seg


@functools.lru_cache(maxsize=1)
def _template() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """MNI152 maps stacked as (1, 4, X, Y, Z) [t1, gm, wm, mask], with the brain bbox lo/hi."""
    from nilearn import datasets  # heavy import, only when a generator runs

    maps = [
        datasets.load_mni152_template(resolution=1),
        datasets.load_mni152_gm_template(resolution=1),
        datasets.load_mni152_wm_template(resolution=1),
        datasets.load_mni152_brain_mask(resolution=1),
    ]
    stack = np.stack([np.asarray(m.dataobj, dtype=np.float32) for m in maps])
    nz = np.nonzero(stack[3] > 0)
    lo = np.array([a.min() for a in nz], np.float64)
    hi = np.array([a.max() for a in nz], np.float64)
    return torch.from_numpy(stack)[None], lo, hi


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 5, channels: int = 1
) -> np.ndarray:
    """Smooth random field in about [-1, 1]: coarse Gaussian noise upsampled (trilinear/bilinear).

    Returns (channels, *shape) float32. Used for deformations, bias fields and tumour borders.
    """
    dims = len(shape)
    grid = rng.standard_normal((1, channels) + (coarse,) * dims).astype(np.float32)
    mode = "trilinear" if dims == 3 else "bilinear"
    up = F.interpolate(torch.from_numpy(grid), size=shape, mode=mode, align_corners=True)
    return up[0].numpy()


def sample_brain(shape: tuple[int, int, int], rng: np.random.Generator) -> Brain:
    """One brain: the MNI template under a random affine and smooth warp, on ``shape``."""
    template, lo, hi = _template()
    tshape = np.array(template.shape[2:], np.float64)
    out = np.array(shape, np.float64)
    mm_per_voxel = (hi - lo + 1) / (np.array(BRAIN_FILL) * out)
    centre = (lo + hi) / 2 + rng.uniform(-3, 3, 3)

    angle = np.deg2rad(rng.uniform(-8, 8))
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    matrix = rot @ np.diag(mm_per_voxel * rng.uniform(0.94, 1.06, 3))
    # Large grids are warped at half resolution and upsampled: 3D grid_sample dominates the
    # cost and the template's 1 mm detail survives a 2x trilinear round trip well enough.
    coarse = tuple(-(-n // 2) for n in shape) if np.prod(shape) > 4e6 else shape
    axes = [
        torch.linspace(-(n - 1) / 2, (n - 1) / 2, m) for n, m in zip(shape, coarse, strict=True)
    ]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (X, Y, Z, 3)
    pos = grid @ torch.from_numpy(matrix.T.astype(np.float32)) + torch.from_numpy(
        centre.astype(np.float32)
    )
    pos += torch.from_numpy(np.moveaxis(smooth_noise(rng, coarse, 4, 3), 0, -1) * 3.0)
    norm = 2 * pos / torch.from_numpy((tshape - 1).astype(np.float32)) - 1
    # grid_sample wants (x, y, z) = (last, middle, first) input axis.
    warped = F.grid_sample(template, norm.flip(-1)[None], align_corners=True)
    if coarse != shape:
        warped = F.interpolate(warped, size=shape, mode="trilinear", align_corners=True)
    t1, gm, wm, mask = warped[0].numpy()
    brain = mask > 0.5
    gm = np.clip(gm, 0, 1) * brain
    wm = np.clip(wm, 0, 1) * brain
    csf = np.clip(1 - gm - wm, 0, 1) * brain
    texture = np.clip(t1, 0, 1) * brain - (0.65 * gm + 0.87 * wm + 0.28 * csf)
    return Brain(gm=gm, wm=wm, csf=csf, mask=brain, texture=texture)


def sample_tumour(
    brain: Brain, rng: np.random.Generator, scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> Tumour:
    """An irregular tumour centred in white matter: nested parts of a noisy ellipsoid level set.

    ``scale`` multiplies its radii along the three axes (the last: how many slices it spans)."""
    shape = brain.mask.shape
    extent = np.array([np.ptp(a) + 1 for a in np.nonzero(brain.mask)], np.float64)
    radii = extent * rng.uniform(0.13, 0.26, 3)  # whole tumour ~ 2-12 % of a central slice
    radii *= np.asarray(scale, np.float64)
    deep = np.argwhere(brain.wm > 0.6)
    if len(deep) == 0:
        deep = np.argwhere(brain.mask)
    centre = deep[rng.integers(len(deep))].astype(np.float64)

    lo = np.maximum(np.floor(centre - 1.4 * radii).astype(int), 0)
    hi = np.minimum(np.ceil(centre + 1.4 * radii).astype(int) + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    bshape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
    axes = [
        (np.arange(a, b, dtype=np.float32) - c) / r
        for a, b, c, r in zip(lo, hi, centre, radii, strict=True)
    ]
    gx, gy, gz = np.meshgrid(*axes, indexing="ij", sparse=True)
    wobble = smooth_noise(rng, bshape, 4, 2)
    r = np.sqrt(gx**2 + gy**2 + gz**2) * (1 + 0.3 * wobble[0] + 0.12 * wobble[1] ** 3)

    inner = 0.0 if rng.random() < 0.2 else rng.uniform(0.25, 0.4)
    rim = inner + rng.uniform(0.15, 0.3)
    edge = 0.06

    def ramp(t: float) -> np.ndarray:  # soft indicator of r < t
        return np.clip((t - r) / edge + 0.5, 0, 1).astype(np.float32)

    inside = brain.mask[box]
    whole, core, necro = ramp(1.0), ramp(rim), ramp(inner) if inner > 0 else None
    local = {
        "oedema": whole - core,
        "enhancing": core - (necro if necro is not None else 0),
        "necrosis": necro if necro is not None else np.zeros(bshape, np.float32),
    }
    parts = {name: np.clip(v, 0, 1) * inside for name, v in local.items()}
    # Hard labels threshold the nested level sets (the parts are their differences).
    labels = np.zeros(bshape, np.uint8)
    labels[(whole >= 0.5) & inside] = BRATS_LABELS["oedema"]
    labels[(core >= 0.5) & inside] = BRATS_LABELS["enhancing"]
    if necro is not None:
        labels[(necro >= 0.5) & inside] = BRATS_LABELS["necrosis"]
    # Infiltrative oedema: partly keeps the contrast of the tissue it replaces.
    parts["oedema"] *= np.float32(rng.uniform(0.85, 1.0))
    texture = 1 + 0.1 * smooth_noise(rng, bshape, 7)[0]
    return Tumour(parts=parts, box=box, shape=shape, texture=texture, local_labels=labels)


def render(
    brain: Brain,
    tumour: Tumour | None,
    modality: str,
    rng: np.random.Generator,
    noise: float = 0.03,
) -> np.ndarray:
    """Float32 intensities of one modality: tissue contrasts, tumour, bias field and noise."""
    c = {k: v * rng.uniform(0.92, 1.08) for k, v in CONTRASTS[modality].items()}
    # Borrow the real template's fine texture (sign flipped where the contrast is inverted).
    img = brain.texture * np.float32(0.25 if c["wm"] > c["gm"] else -0.25)
    for tissue in ("csf", "gm", "wm"):
        img += np.float32(c[tissue]) * getattr(brain, tissue)
    if tumour is not None:
        gain = rng.uniform(0.85, 1.15)
        for part in TUMOUR_PARTS:
            w, sub = tumour.parts[part], img[tumour.box]
            sub += w * (c[part] * gain * tumour.texture - sub)
    bias = smooth_noise(rng, brain.mask.shape, 3)[0]
    bias *= 0.12
    img *= np.exp(bias, out=bias)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    np.clip(img, 0, None, out=img)
    img[~brain.mask] = 0
    return img
