"""KolektorSDD2 layout: ``<out>/{train,test}/NNNNN.png`` with ``NNNNN_GT.png``.

Every image has a ground truth (single-channel 0/255 PNG; empty for a clean surface);
images are RGB uint8 PNGs of about 230 x 630 px (width x height, each image slightly
different). What is drawn, per image (all choices seeded per image):

- the surface: a metal strip seen by a line-scan camera. A base tone (dark to bright metal)
  with a faint colour cast or none, a brightness profile across the width (the curved part
  of a commutator catches the light in the middle or on one side), a slow drift along the
  height, and one or more textures: fine grain, brushing along a direction near the
  vertical or horizontal, vertical machining grooves, broad specular highlights (bright
  vertical bands), occasional gaps between segments (thin dark lines across the width),
  shadowed edges; per-row gain flicker of the line-scan, sensor noise, a little blur.
- distractors that are NOT defects, on clean and defective surfaces alike (the same
  probabilities): soft stains and water marks (darker or lighter, sometimes ringed), smudges
  (elongated soft blurs), oil marks, dust specks and lint fibres (soft, thin, faint).
- defects (defective images only, one to three): scratches (straight or curved, short to
  long, 1-6 px wide), cracks (jagged thin random walks, sometimes branched), pits and spots
  (small dark or bright dots, some with a rim), dents (shaded depressions: one side bright,
  the other dark), chips (broken-off material at the left or right edge), and area defects
  (rough, discoloured patches). Dark or bright, from faint (a few grey levels) to strong.
  The ground truth covers the defect's footprint, grown by 0-3 px as a hand annotation.

The label is "GT non-empty", as KSDD2's reader has it. About a third of each folder
(30-35 %, drawn per folder) is defective, in shuffled order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from experiments.heldout.common import case_seeds, run_cases, staged_output

FOLDERS = ("train", "test")
FIRST_NUMBER = {"train": 10000, "test": 20000}
DEFECT_KINDS = ("scratch", "crack", "pit", "dent", "chip", "patch")
DEFECT_WEIGHTS = (0.32, 0.14, 0.2, 0.14, 0.08, 0.12)


def _smooth_noise(rng, shape, sigma, anisotropy=(1.0, 1.0)) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise."""
    field = ndimage.gaussian_filter(
        rng.standard_normal(shape), (sigma * anisotropy[0], sigma * anisotropy[1]), mode="wrap"
    )
    return (field - field.mean()) / (field.std() + 1e-9)


def _brushed(rng, h, w, angle_deg: float, length: float, width: float) -> np.ndarray:
    """Noise streaked along ``angle_deg`` from the vertical."""
    side = int(np.ceil(np.hypot(h, w))) + 8
    field = ndimage.gaussian_filter(rng.standard_normal((side, side)), (length, width))
    field = ndimage.rotate(field, angle_deg, reshape=False, order=1, mode="reflect")
    top, left = (side - h) // 2, (side - w) // 2
    field = field[top : top + h, left : left + w]
    return (field - field.mean()) / (field.std() + 1e-9)


def _blob(rng, h, w, cy, cx, ry, rx, rough: float) -> np.ndarray:
    """A soft irregular blob in [0, 1]: an ellipse with a noisy outline."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u, v = (c * dy + s * dx) / ry, (-s * dy + c * dx) / rx
    r = np.sqrt(u * u + v * v)
    if rough > 0:
        r = r + rough * _smooth_noise(rng, (h, w), max(2.0, min(ry, rx) / 3))
    return np.clip(1.5 - r, 0, 1) ** 1.5 * (r < 1.5)


def _curve(rng, p0, p1, bend: float, n: int = 200) -> np.ndarray:
    """Points of a quadratic Bezier from p0 to p1 bowed sideways by ``bend`` px."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    normal = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
    ctrl = (p0 + p1) / 2 + bend * normal
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p1


def _stroke(h, w, points: np.ndarray, width, soft: float = 0.7) -> np.ndarray:
    """A line of ``width`` px (scalar or per point) along ``points`` (y, x), in [0, 1]."""
    dist = np.full((h, w), np.inf, np.float32)
    widths = np.broadcast_to(np.asarray(width, float), (len(points),))
    half_max = widths.max() / 2 + 3
    y0, x0 = np.floor(points.min(0) - half_max).astype(int)
    y1, x1 = np.ceil(points.max(0) + half_max).astype(int) + 1
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if y0 >= y1 or x0 >= x1:
        return np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    local = np.full(yy.shape, np.inf, np.float32)
    for (py, px), wd in zip(points, widths, strict=True):
        local = np.minimum(local, np.hypot(yy - py, xx - px) - wd / 2)
    dist[y0:y1, x0:x1] = local
    return np.clip(0.5 - dist / soft, 0, 1).astype(np.float32)


def _surface(rng, h, w) -> tuple[np.ndarray, dict]:
    """Background intensity (H, W) float in grey levels, and what it contains."""
    base = rng.uniform(55, 190)
    info: dict = {"tone": round(base, 1), "textures": []}
    x = np.linspace(-1, 1, w)[None, :]
    y = np.linspace(-1, 1, h)[:, None]
    centre = rng.uniform(-0.6, 0.6)
    across = 1 - rng.uniform(0.0, 0.35) * (x - centre) ** 2
    along = 1 + rng.uniform(-0.12, 0.12) * y + rng.uniform(-0.05, 0.05) * y**2
    img = base * across * along
    if rng.uniform() < 0.9:
        info["textures"].append("grain")
        img = img + rng.uniform(1.5, 7) * _smooth_noise(rng, (h, w), rng.uniform(0.6, 1.6))
    if rng.uniform() < 0.6:
        angle = rng.choice([rng.normal(0, 6), 90 + rng.normal(0, 6)])
        info["textures"].append(f"brushed {angle % 180:.0f} deg")
        img = img + rng.uniform(2, 9) * _brushed(
            rng, h, w, angle, rng.uniform(15, 60), rng.uniform(0.5, 1.5)
        )
    if rng.uniform() < 0.55:
        info["textures"].append("machining grooves")
        profile = _smooth_noise(rng, (1, w), rng.uniform(0.7, 2.5))
        profile += 0.6 * np.sin(2 * np.pi * np.arange(w) / rng.uniform(3, 12))[None, :]
        img = img + rng.uniform(2, 10) * profile * (1 + 0.3 * _smooth_noise(rng, (h, 1), 30))
    if rng.uniform() < 0.45:
        info["textures"].append("highlights")
        for _ in range(int(rng.integers(1, 3))):
            cx = rng.uniform(0.1, 0.9) * w
            band = np.exp(-0.5 * ((np.arange(w) - cx) / rng.uniform(4, 30)) ** 2)[None, :]
            img = img + rng.uniform(15, 70) * band * (0.8 + 0.2 * _smooth_noise(rng, (h, 1), 40))
    if rng.uniform() < 0.2:
        info["textures"].append("segment gaps")
        for _ in range(int(rng.integers(1, 3))):
            gy = rng.uniform(0.05, 0.95) * h
            line = np.exp(-0.5 * ((np.arange(h) - gy) / rng.uniform(0.8, 2.5)) ** 2)[:, None]
            img = img - rng.uniform(15, 50) * line
    if rng.uniform() < 0.5:
        info["textures"].append("edge shadow")
        for side in (0, 1):
            if rng.uniform() < 0.6:
                ramp = np.exp(-np.arange(w) / rng.uniform(4, 25))[None, :]
                img = img * (1 - rng.uniform(0.2, 0.6) * (ramp if side == 0 else ramp[:, ::-1]))
    return img, info


def _distractors(rng, img: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Stains, smudges, oil marks, dust and lint: changes of appearance that are no defect."""
    h, w = img.shape
    drawn = []
    tone = float(np.median(img))
    for _ in range(int(rng.poisson(1.3))):
        kind = rng.choice(["stain", "water mark", "smudge", "oil"])
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if kind == "smudge":
            blob = _blob(rng, h, w, cy, cx, rng.uniform(25, 90), rng.uniform(6, 20), 0.3)
            blob = ndimage.gaussian_filter(blob, rng.uniform(2, 5))
            img = img + rng.choice([-1, 1]) * rng.uniform(0.05, 0.2) * tone * blob
        elif kind == "oil":
            blob = _blob(rng, h, w, cy, cx, rng.uniform(12, 45), rng.uniform(12, 45), 0.2)
            img = img * (1 - rng.uniform(0.08, 0.3) * blob) + rng.uniform(0, 6) * blob
        else:
            ry, rx = rng.uniform(15, 80), rng.uniform(12, 60)
            blob = ndimage.gaussian_filter(_blob(rng, h, w, cy, cx, ry, rx, 0.4), 3)
            sign = rng.choice([-1, 1], p=[0.65, 0.35])
            img = img + sign * rng.uniform(0.06, 0.25) * tone * blob
            if kind == "water mark":  # a darker rim where the drop dried
                rim = np.clip(blob * (1 - blob) * 4, 0, 1)
                img = img - rng.uniform(4, 14) * rim
        drawn.append(str(kind))
    n_dust = int(rng.poisson(6))
    if n_dust:
        dust = np.zeros((h, w), np.float32)
        ys, xs = rng.integers(0, h, n_dust), rng.integers(0, w, n_dust)
        dust[ys, xs] = rng.choice([-1.0, 1.0], n_dust) * rng.uniform(20, 60, n_dust)
        img = img + ndimage.gaussian_filter(dust, rng.uniform(0.6, 1.2)) * 3
        drawn.append(f"dust x{n_dust}")
    if rng.uniform() < 0.15:  # a lint fibre: long, thin, soft and faint
        p0 = (rng.uniform(0, h), rng.uniform(0, w))
        p1 = (p0[0] + rng.uniform(-120, 120), p0[1] + rng.uniform(-80, 80))
        fibre = _stroke(h, w, _curve(rng, p0, p1, rng.uniform(-40, 40), 120), 1.2, soft=2.0)
        img = img + rng.choice([-1, 1]) * rng.uniform(4, 12) * ndimage.gaussian_filter(fibre, 1.2)
        drawn.append("fibre")
    return img, drawn


def _contrast(rng) -> float:
    """Grey levels a defect departs from the surface: sometimes faint, mostly clear."""
    return float(rng.uniform(8, 20) if rng.uniform() < 0.25 else rng.uniform(20, 90))


def _defect(rng, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Draw one defect into ``img``; returns the image, its footprint (bool) and a summary."""
    h, w = img.shape
    kind = str(rng.choice(DEFECT_KINDS, p=DEFECT_WEIGHTS))
    sign = 1.0 if rng.uniform() < 0.3 else -1.0  # most defects darker
    amount = _contrast(rng)
    cy, cx = rng.uniform(0.06, 0.94) * h, rng.uniform(0.08, 0.92) * w
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "scratch":
        length = float(np.exp(rng.uniform(np.log(15), np.log(320))))
        angle = rng.uniform(0, np.pi) if rng.uniform() < 0.5 else rng.normal(0, 0.25)
        d = np.array([np.cos(angle), np.sin(angle)]) * length / 2
        pts = _curve(rng, (cy, cx) - d, (cy, cx) + d, rng.uniform(-0.25, 0.25) * length)
        width = rng.uniform(1, 6) * (0.7 + 0.3 * np.sin(np.linspace(0, np.pi, len(pts))))
        alpha = _stroke(h, w, pts, width)
        img = img + sign * amount * alpha
        extra = {"length_px": round(length), "width_px": round(float(width.max()), 1)}
    elif kind == "crack":
        steps = int(rng.integers(30, 160))
        heading = rng.uniform(0, 2 * np.pi)
        pts = [np.array([cy, cx])]
        for _ in range(steps):
            heading += rng.normal(0, 0.45)
            pts.append(pts[-1] + 1.5 * np.array([np.sin(heading), np.cos(heading)]))
        alpha = _stroke(h, w, np.array(pts), rng.uniform(1, 2.5), soft=0.5)
        if rng.uniform() < 0.4:  # a branch
            start = pts[int(rng.integers(len(pts) // 4, len(pts)))]
            branch = [start]
            heading += rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
            for _ in range(int(rng.integers(10, 50))):
                heading += rng.normal(0, 0.5)
                branch.append(branch[-1] + 1.5 * np.array([np.sin(heading), np.cos(heading)]))
            alpha = np.maximum(alpha, _stroke(h, w, np.array(branch), 1.2, soft=0.5))
        sign = -1.0
        img = img + sign * amount * alpha
        extra = {"steps": steps}
    elif kind == "pit":
        r = rng.uniform(2, 10)
        dist = np.hypot(yy - cy, (xx - cx) * rng.uniform(0.7, 1.3))
        alpha = np.clip(r + 0.5 - dist, 0, 1).astype(np.float32)
        img = img + sign * amount * alpha
        if rng.uniform() < 0.5:  # a raised rim of the opposite brightness
            rim = np.clip(1 - np.abs(dist - r - 1.5) / 1.5, 0, 1)
            img = img - sign * 0.5 * amount * rim
            alpha = np.maximum(alpha, rim)
        extra = {"radius_px": round(r, 1)}
    elif kind == "dent":
        ry, rx = rng.uniform(8, 30), rng.uniform(8, 25)
        alpha = _blob(rng, h, w, cy, cx, ry, rx, 0.1)
        light = rng.uniform(0, 2 * np.pi)
        gy, gx = np.gradient(ndimage.gaussian_filter(alpha, 2))
        shade = (np.sin(light) * gy + np.cos(light) * gx) / (np.abs(gy).max() + 1e-9)
        img = img + amount * shade + sign * 0.3 * amount * alpha
        alpha = np.maximum(alpha, np.clip(np.abs(shade), 0, 1))
        extra = {"size_px": [round(2 * ry), round(2 * rx)]}
    elif kind == "chip":
        left = rng.uniform() < 0.5
        depth, span = rng.uniform(6, 30), rng.uniform(12, 60)
        edge = np.abs(yy - cy) / span * depth + 3 * _smooth_noise(rng, (h, 1), 3)
        dx = xx if left else (w - 1 - xx)
        alpha = np.clip(depth - edge - dx, 0, 1).astype(np.float32) * (np.abs(yy - cy) < span)
        fill = (
            float(np.median(img))
            + sign * amount
            + rng.uniform(2, 8) * _smooth_noise(rng, (h, w), 1.0)
        )
        img = img * (1 - alpha) + fill * alpha
        extra = {"side": "left" if left else "right", "depth_px": round(depth)}
    else:  # patch: a rough, discoloured area (corrosion, a burn)
        ry, rx = rng.uniform(6, 35), rng.uniform(6, 30)
        alpha = _blob(rng, h, w, cy, cx, ry, rx, 0.35)
        alpha = (alpha > 0.2).astype(np.float32) * np.clip(alpha * 2, 0, 1)
        rough = rng.uniform(4, 15) * _smooth_noise(rng, (h, w), 0.8)
        img = img + (sign * amount + rough) * alpha
        extra = {"size_px": [round(2 * ry), round(2 * rx)]}
    footprint = alpha > 0.35
    return img, footprint, {"kind": kind, "dark": sign < 0, "contrast": round(amount, 1), **extra}


def make_image(seed: np.random.SeedSequence, defective: bool) -> dict:
    """One surface: ``image`` (H, W, 3) uint8, ``gt`` (H, W) uint8 0/255 and ``info``."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(615, 646)), int(rng.integers(218, 243))
    img, info = _surface(rng, h, w)
    img, info["distractors"] = _distractors(rng, img)
    mask = np.zeros((h, w), bool)
    info["defects"] = []
    if defective:
        while not mask.any():  # a defect drawn off the image does not count
            for _ in range(int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))):
                img, footprint, summary = _defect(rng, img)
                grow = int(rng.integers(0, 4))
                if grow and footprint.any():
                    footprint = ndimage.binary_dilation(footprint, iterations=grow)
                if footprint.any():
                    mask |= footprint
                    info["defects"].append(summary)
    # line-scan: each row has its own exposure; then optics blur and sensor noise
    img = img * (1 + rng.uniform(0.0, 0.025) * _smooth_noise(rng, (h, 1), rng.uniform(0.5, 3)))
    img = ndimage.gaussian_filter(img, rng.uniform(0.4, 1.1))
    img = img + rng.uniform(0.8, 4.0) * rng.standard_normal((h, w))
    tint = np.ones(3) if rng.uniform() < 0.4 else 1 + rng.normal(0, 0.025, 3)
    rgb = img[..., None] * tint[None, None, :] + rng.normal(0, 0.6, (h, w, 3))
    image = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    info["size"] = [w, h]
    return {"image": image, "gt": mask.astype(np.uint8) * 255, "info": info}


def _write_image(task: tuple) -> tuple[str, dict]:
    from PIL import Image

    folder, name, seed, defective = task
    made = make_image(seed, defective)
    Image.fromarray(made["image"], "RGB").save(Path(folder) / f"{name}.png")
    Image.fromarray(made["gt"], "L").save(Path(folder) / f"{name}_GT.png")
    return name, {"defective": bool(made["gt"].any()), **made["info"]}


def generate_ksdd2(
    out: str | Path, train: int = 480, test: int = 160, seed: int = 1, workers: int = 1
) -> dict[str, list[str]]:
    """Write ``train`` and ``test`` KSDD2-format surfaces under ``out/{train,test}`` (``out``
    must not exist or be empty); returns the image names per folder."""
    counts = {"train": train, "test": test}
    params = {"format": "ksdd2", "train": train, "test": test, "seed": seed}
    names: dict[str, list[str]] = {}
    with staged_output(out, params) as (stage, manifest):
        for stream, folder in enumerate(FOLDERS, start=1):
            n = counts[folder]
            rng = np.random.default_rng(np.random.SeedSequence([seed, 10 + stream]))
            n_defect = int(round(rng.uniform(0.30, 0.35) * n)) if n > 1 else n
            defective = np.zeros(n, bool)
            defective[rng.permutation(n)[:n_defect]] = True
            names[folder] = [f"{FIRST_NUMBER[folder] + i:05d}" for i in range(n)]
            (stage / folder).mkdir()
            tasks = [
                (str(stage / folder), name, s, bool(d))
                for name, s, d in zip(names[folder], case_seeds(seed, n, stream), defective,
                                      strict=True)
            ]  # fmt: skip
            manifest[folder] = dict(run_cases(_write_image, tasks, workers))
    return names
