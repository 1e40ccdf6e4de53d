"""A brain, a head around it, gliomas in it and the four MRI contrasts, in millimetres.

Everything is built on a :class:`Grid` (voxel centres in mm, a frame centred on 0), so one
phantom can be sampled at BraTS's 1 mm 240 x 240 x 155 or at any coarser grid over the same
field of view. Axis 0 runs right to left, axis 1 anterior to posterior, axis 2 inferior to
superior (BraTS's stored orientation).

The brain is a union of a cerebrum (a lopsided ellipsoid with a flattened frontal base), a
cerebellum and a brainstem. Its depth below the pial surface and the distance to three
families of clefts (sulci from the zero surfaces of smooth random fields, the
interhemispheric fissure above the corpus callosum, the Sylvian fissures, the tentorium)
decide CSF, the cortical ribbon and white matter; ventricles, deep grey nuclei, choroid
plexus and cortical veins are ellipsoids and thresholded noise. A glioma is a union of
random ellipsoids with a noisy surface; its oedema grows voxel by voxel through white
matter (so it runs into the gyri as fingers) and it pushes the anatomy around it aside.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

# Tissue classes of the label volume.
AIR, CSF, GM, WM, DEEP, PALLIDUM, STEM, CBL_GM, PV_WM, CHOROID, VEIN = range(11)
BONE, MARROW, MUSCLE, FAT, SKIN, VITREOUS = range(11, 17)
N_TISSUES = 17

# Tumour appearance classes (seg label in brackets).
NECROSIS, OEDEMA, NONENH, ENHANCING, CYST = 1, 2, 3, 5, 6
SEG_OF = {NECROSIS: 1, OEDEMA: 2, NONENH: 1, ENHANCING: 4, CYST: 1}

MODALITIES = ("t1", "t1ce", "t2", "flair")

# Mean signal of each tissue, white matter on T1 = 1 (per-case jitter is added).
_T = {
    #            t1    t1ce   t2    flair
    AIR: (0.00, 0.00, 0.00, 0.00),
    CSF: (0.28, 0.29, 1.00, 0.10),
    GM: (0.62, 0.64, 0.62, 0.64),
    WM: (0.95, 0.95, 0.43, 0.47),
    DEEP: (0.72, 0.74, 0.55, 0.58),
    PALLIDUM: (0.82, 0.83, 0.38, 0.46),
    STEM: (0.84, 0.85, 0.50, 0.54),
    CBL_GM: (0.64, 0.66, 0.60, 0.60),
    PV_WM: (0.90, 0.90, 0.52, 0.62),
    CHOROID: (0.50, 1.05, 0.70, 0.35),
    VEIN: (0.45, 1.25, 0.25, 0.20),
    BONE: (0.04, 0.04, 0.04, 0.04),
    MARROW: (1.10, 1.12, 0.75, 0.85),
    MUSCLE: (0.52, 0.56, 0.34, 0.40),
    FAT: (1.25, 1.25, 0.85, 0.95),
    SKIN: (0.60, 0.62, 0.55, 0.60),
    VITREOUS: (0.15, 0.16, 1.10, 0.08),
}
LUT = np.array([_T[t] for t in range(N_TISSUES)], dtype=np.float32)  # (tissue, modality)

# Tumour signal (same units): a value, or (low, high) drawn per case.
TUMOUR_SIGNAL = {
    NECROSIS: ((0.26, 0.36), (0.24, 0.34), (0.88, 1.00), (0.30, 0.70)),
    NONENH: ((0.55, 0.68), (0.56, 0.70), (0.76, 0.88), (0.84, 0.98)),
    ENHANCING: ((0.55, 0.70), (1.15, 1.55), (0.62, 0.78), (0.70, 0.90)),
    CYST: ((0.22, 0.30), (0.22, 0.30), (0.95, 1.05), (0.20, 0.45)),
    OEDEMA: ((0.66, 0.78), (0.67, 0.79), (0.80, 0.92), (0.90, 1.05)),
}


@dataclass(frozen=True)
class Grid:
    """Voxel centres ``origin + spacing * index`` (mm) of an array of ``shape``."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def frame(cls, shape, fov) -> Grid:
        spacing = tuple(float(f) / int(n) for f, n in zip(fov, shape, strict=True))
        origin = tuple(-float(f) / 2 + s / 2 for f, s in zip(fov, spacing, strict=True))
        return cls(tuple(int(n) for n in shape), spacing, origin)  # type: ignore[arg-type]

    def axes(self) -> list[np.ndarray]:
        """The three coordinate vectors (mm), shaped to broadcast against each other."""
        out = []
        for k in range(3):
            v = (self.origin[k] + self.spacing[k] * np.arange(self.shape[k])).astype(np.float32)
            shape = [1, 1, 1]
            shape[k] = -1
            out.append(v.reshape(shape))
        return out

    def sub(self, lo, hi) -> Grid:
        """The grid of the box ``[lo, hi)`` (voxel indices)."""
        return Grid(
            tuple(int(h - lo_) for lo_, h in zip(lo, hi, strict=True)),  # type: ignore[arg-type]
            self.spacing,
            tuple(o + s * lo_ for o, s, lo_ in zip(self.origin, self.spacing, lo, strict=True)),
        )  # type: ignore[arg-type]

    def index(self, point) -> np.ndarray:
        """Voxel index (float) of a point in mm."""
        return (np.asarray(point, float) - self.origin) / self.spacing

    @property
    def voxel_mm(self) -> float:
        return float(np.mean(self.spacing))


def smooth_noise(rng: np.random.Generator, grid: Grid, scale: float) -> np.ndarray:
    """Zero-mean unit-variance Gaussian random field with correlation length ``scale`` mm.

    White noise on a grid of ``scale / 2`` mm (or ``grid``'s voxel, if coarser), blurred by
    ``scale / 2`` and interpolated linearly onto ``grid`` (separably: cheap however fine the
    grid)."""
    step = max(scale / 2.0, min(grid.spacing))
    lo = [o - 2 * step for o in grid.origin]
    n = [int(np.ceil(s * sp / step)) + 5 for s, sp in zip(grid.shape, grid.spacing, strict=True)]
    white = rng.standard_normal(n, dtype=np.float32)
    a = ndi.gaussian_filter(white, scale / 2.0 / step, mode="wrap")
    for k in range(3):
        pos = grid.origin[k] + grid.spacing[k] * np.arange(grid.shape[k])
        f = (pos - lo[k]) / step
        i0 = np.floor(f).astype(int)
        w = (f - i0).astype(np.float32)
        shape = [1, 1, 1]
        shape[k] = -1
        w = w.reshape(shape)
        a = np.take(a, i0, axis=k) * (1 - w) + np.take(a, i0 + 1, axis=k) * w
    sub = a[::3, ::3, ::3]
    return ((a - sub.mean()) / max(float(sub.std()), 1e-6)).astype(np.float32)


def gradient_scale(field_: np.ndarray, grid: Grid) -> float:
    """Mean gradient magnitude (per mm) of a smooth field, from a central block."""
    c = [s // 2 for s in field_.shape]
    r = [max(2, min(s // 2 - 1, 20)) for s in field_.shape]
    block = field_[tuple(slice(ci - ri, ci + ri) for ci, ri in zip(c, r, strict=True))]
    g = np.gradient(block, *grid.spacing)
    return float(np.mean(np.sqrt(sum(gi**2 for gi in g)))) + 1e-6


def ellipsoid_depth(x, y, z, a, b, c) -> np.ndarray:
    """Approximate signed distance (mm) inside an axis-aligned ellipsoid (negative outside):
    ``(1 - r) / |grad r|`` for the ellipsoidal radius ``r`` (exact at the surface)."""
    q = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), np.float32)
    g = np.zeros_like(q)
    for v, axis in ((x, a), (y, b), (z, c)):
        inv = np.float32(1) / np.asarray(axis, np.float32)
        t = v * inv
        q += t * t
        t *= inv
        g += t * t
    centre = q < 1e-6
    np.sqrt(q, out=q)  # r
    np.sqrt(g, out=g)  # r |grad r|
    small = float(np.min([np.min(a), np.min(b), np.min(c)]))
    g += 1e-9
    np.divide(q, g, out=g)  # r / (r |grad r|)
    np.subtract(1, q, out=q)
    q *= g
    np.minimum(q, small, out=q)
    q[centre] = small
    return q


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz = np.cos(yaw), np.sin(yaw)
    cy, sy = np.cos(pitch), np.sin(pitch)
    cx, sx = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cy, -sy], [0, sy, cy]])  # pitch: about the left-right axis
    ry = np.array([[cx, 0, sx], [0, 1, 0], [-sx, 0, cx]])  # roll: about the front-back axis
    return rz @ rx @ ry


def _relu(v):
    return np.maximum(v, 0)


def _sigmoid(v):
    return 0.5 * (1 + np.tanh(0.5 * v))


@dataclass
class Brain:
    """One subject's anatomy on a grid."""

    grid: Grid
    labels: np.ndarray  # uint8 tissue classes
    brain: np.ndarray  # bool: the skull-stripped brain (incl. the CSF rim)
    depth: np.ndarray  # float32 mm below the brain's surface (negative outside)
    depth_cerebrum: np.ndarray  # float32 mm below the cerebral surface
    ventricle: np.ndarray  # float32 signed mm inside the ventricles (negative outside)
    centre: np.ndarray  # cerebrum centre (mm, frame coordinates)
    rotation: np.ndarray  # subject -> frame
    size: dict = field(default_factory=dict)


def _to_subject(grid: Grid, centre, rot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, z = grid.axes()
    c = [float(v) for v in centre]
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    r = [[float(v) for v in row] for row in rot]
    # subject = R^T (p - c)
    return tuple(  # type: ignore[return-value]
        (r[0][k] * dx + r[1][k] * dy + r[2][k] * dz).astype(np.float32) for k in range(3)
    )


def make_brain(
    rng: np.random.Generator, grid: Grid, centre=(0.0, 0.0, 10.0), head: bool = False
) -> Brain:
    """Draw one subject's brain (and, with ``head``, scalp, skull and eyes) on ``grid``."""

    def u(lo: float, hi: float) -> float:  # Python floats keep the arrays float32
        return float(rng.uniform(lo, hi))

    s = u(0.9, 1.03)
    ax, ay = 67 * s * u(0.95, 1.05), 84 * s * u(0.95, 1.05)
    az_sup, az_inf = 60 * s * u(0.95, 1.04), 44 * s * u(0.95, 1.05)
    atrophy = u(0, 1) ** 1.5
    vs = s * u(0.8, 1.15) * (1 + 0.45 * atrophy)  # ventricle scale
    centre = np.asarray(centre, float) + rng.uniform([-3, -5, -4], [3, 5, 4])
    rot = _rotation(*np.deg2rad(rng.uniform([-7, -6, -4], [7, 6, 4])))
    X, Y, Z = _to_subject(grid, centre, rot)

    # Outer surfaces.
    ax_eff = ax * (1 + 0.07 * np.clip(Y / ay, -1, 1))
    d_cer = ellipsoid_depth(X, Y, Z, ax_eff, ay, np.where(Z > 0, az_sup, az_inf))
    d_cer += 2.2 * smooth_noise(rng, grid, 22)
    # The floor of the cerebrum: the frontal lobes rest higher than the temporal lobes, which
    # sit either side of the midline and end some way behind the frontal pole.
    temporal = _sigmoid((np.abs(X) - 0.38 * ax) / 5) * _sigmoid((Y + 0.5 * ay) / 5)
    d_cer = np.minimum(d_cer, Z + 0.5 * az_inf + 0.6 * az_inf * temporal)
    cbl_c = (0.42 * ay, -1.05 * az_inf)
    d_cbl = ellipsoid_depth(X, Y - cbl_c[0], Z - cbl_c[1], 0.75 * ax, 0.42 * ay, 0.55 * az_inf)
    d_cbl += 1.2 * smooth_noise(rng, grid, 15)
    rs = 10 * s + 5 * s * np.exp(-(((Z + 0.85 * az_inf) / 9) ** 2))
    d_stem = np.minimum(rs - np.sqrt((X / 1.1) ** 2 + (Y - 0.1 * ay) ** 2), -0.1 * az_inf - Z)
    depth = np.maximum(np.maximum(d_cer, d_cbl), d_stem)
    cer = (d_cer >= d_cbl) & (d_cer >= d_stem)
    cbl = ~cer & (d_cbl >= d_stem)

    # Clefts: distances (mm) to CSF sheets, large where a sheet does not exist.
    ribbon = np.clip(2.5 + 0.4 * smooth_noise(rng, grid, 30), 1.8, 3.4)
    clefts = [depth]
    for scale, deep, width in ((8.5, 19.0, 1.1), (5.0, 6.0, 0.5)):
        g = smooth_noise(rng, grid, scale)
        reach = deep * np.maximum(1 + 0.3 * smooth_noise(rng, grid, 40), 0.3)
        half = 0.2 + width * (0.3 + atrophy) * np.clip(1 - depth / reach, 0, 1)
        clefts.append(np.abs(g) / gradient_scale(g, grid) - half + 0.8 * _relu(depth - reach))
    zcc = 23 * s - 14 * (Y / (36 * s)) ** 2
    fissure = np.abs(X - 1.5 * smooth_noise(rng, grid, 40)) - (0.9 + 1.2 * atrophy)
    clefts.append(fissure + 3 * _relu(zcc - Z) * (np.abs(Y) < 36 * s))
    zs = -4 * s + 0.5 * Y + 2.5 * smooth_noise(rng, grid, 25)
    sylvian = np.abs(Z - zs) - (0.7 + 1.3 * atrophy)
    sylvian += 1.5 * _relu(0.56 * ax - np.abs(X)) + 1.0 * _relu(np.abs(Y + 5) - 28 * s)
    clefts.append(sylvian)
    clefts.append(np.where((d_cer > -3) & (d_cbl > -3), np.abs(d_cer - d_cbl) - 0.9, np.inf))
    pial = np.minimum.reduce(clefts).astype(np.float32)
    del clefts
    g3 = smooth_noise(rng, grid, 3.5)
    folia = np.minimum(depth, np.abs(g3) / gradient_scale(g3, grid) - 0.35 + _relu(d_cbl - 11))
    folia = np.minimum(folia, pial)

    rim = 1.4 + 1.6 * atrophy + 0.5 * smooth_noise(rng, grid, 30)
    brain = depth > -rim
    lab = np.zeros(grid.shape, np.uint8)
    lab[brain] = CSF
    inside = depth > 0
    lab[inside & cer] = np.where(pial < 0, CSF, np.where(pial < ribbon, GM, WM))[inside & cer]
    lab[inside & cbl] = np.where(folia < 0, CSF, np.where(folia < 2.2, CBL_GM, WM))[inside & cbl]
    lab[inside & ~cer & ~cbl] = STEM

    # Deep grey nuclei, ventricles, choroid plexus (subject coordinates, both sides), in a
    # box around the cerebrum's centre.
    lo, hi = _box(grid, centre, [62 * s, 78 * s, 64 * s])
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    bx, by, bz = X[box], Y[box], Z[box]

    def ell(cx, cy, cz, a, b, c, yaw=0.0):
        ca, sa = float(np.cos(yaw)), float(np.sin(yaw))
        u, v = bx - cx, by - cy
        return ellipsoid_depth(ca * u + sa * v, -sa * u + ca * v, bz - cz, a, b, c)

    jit = [float(j) for j in rng.uniform(0.92, 1.08, size=4)]
    deep = pall = caud = vent = chor = np.float32(-np.inf)
    for side in (-1, 1):
        t = side * float(np.deg2rad(8))
        deep = np.maximum(
            deep, ell(side * 24 * s, -2 * s, -s, 4.5 * s, 14 * s * jit[0], 10 * s, -t)
        )
        deep = np.maximum(deep, ell(side * 9 * s, 12 * s, -2 * s, 7.5 * s * jit[1], 13 * s, 8 * s))
        pall = np.maximum(pall, ell(side * 18.5 * s, 0, -3 * s, 3 * s, 9 * s, 6 * s, -t))
        caud = np.maximum(caud, ell(side * (7 * vs + 8), -14 * s, 7 * s, 5 * s, 11 * s, 8 * s))
        vent = np.maximum(
            vent, ell(side * 7 * vs, -8 * s, 10 * s, 5.5 * vs * jit[2], 30 * s, 7.5 * vs, t)
        )
        vent = np.maximum(
            vent, ell(side * 17 * vs, 26 * s, 4 * s, 6 * vs, 14 * s * jit[3], 8 * vs, 2.5 * t)
        )
        vent = np.maximum(vent, ell(side * 27 * s, 2 * s, -20 * s, 3 * vs, 15 * s, 4 * vs, -t))
        chor = np.maximum(chor, ell(side * 17 * vs, 25 * s, 2 * s, 3 * vs, 6 * vs, 3 * vs))
    vent = np.maximum(vent, ell(0, 4 * s, -6 * s, 1.5 * vs, 13 * s, 8 * vs))
    vent = np.maximum(vent, ell(0, 0.45 * ay - 20 * s, cbl_c[1] + 4 * s, 5 * s, 3 * s, 6 * s))
    vent = vent + 0.7 * smooth_noise(rng, grid.sub(lo, hi), 10)
    sub = lab[box]  # a view: written in place
    cer_in = inside[box] & cer[box]
    sub[cer_in & (deep > 0)] = DEEP
    sub[cer_in & (pall > 0)] = PALLIDUM
    caps = (sub == WM) & (vent > -3.5) & (vent < 0) & (np.abs(by + 3) > 20 * s)
    if rng.uniform() < 0.8:
        sub[caps] = PV_WM
    sub[inside[box] & (vent > 0)] = CSF
    sub[inside[box] & (vent > 0) & (chor > 0)] = CHOROID
    sub[cer_in & (caud > 0)] = DEEP
    ventricle = np.full(grid.shape, -100, np.float32)
    ventricle[box] = vent
    veins = (lab == CSF) & (depth < 8) & (ventricle <= 0) & (smooth_noise(rng, grid, 2.5) > 2.2)
    lab[veins] = VEIN

    if head:
        env = np.maximum(d_cer, d_cbl) + rim  # the skull follows the brain's envelope
        out = -env
        layers = [(0.0, CSF), (1.5, BONE), (3.3, MARROW), (6.0, BONE), (7.3, MUSCLE)]
        layers += [(8.8, FAT), (12.8, SKIN), (14.0, AIR)]
        jitter = 1 + 0.15 * smooth_noise(rng, grid, 40)
        for (lo, tissue), (hi, _) in zip(layers[:-1], layers[1:], strict=True):
            band = ~brain & (out >= lo * jitter) & (out < hi * jitter)
            lab[band] = tissue
        for side in (-1, 1):
            eye = (X - side * 31 * s) ** 2 + (Y + 0.9 * ay) ** 2 + (Z + 0.78 * az_inf) ** 2
            lab[(eye < (15 * s) ** 2) & ~inside] = FAT
            lab[(eye < (11.5 * s) ** 2) & ~inside] = VITREOUS

    return Brain(
        grid=grid,
        labels=lab,
        brain=brain,
        depth=depth,
        depth_cerebrum=np.where(cer, d_cer, -np.inf).astype(np.float32),
        ventricle=ventricle,
        centre=centre,
        rotation=rot,
        size={"ax": ax, "ay": ay, "az_sup": az_sup, "az_inf": az_inf, "s": s},
    )


# --------------------------------------------------------------------------- tumours


@dataclass
class TumourSpec:
    """What one tumour looks like; drawn by :func:`draw_tumour`."""

    kind: str  # gbm | solid | nonenh | lgg
    place: str  # cortical | periventricular | deep
    radius: tuple[float, float, float]  # core semi-axes (mm)
    oedema: float  # how far oedema grows through white matter (mm)
    rim: float  # enhancing rim thickness (mm)
    mass: float  # mass effect, a fraction of the radius
    satellites: int
    cyst: bool = False
    enhancing_foci: bool = False
    centre: np.ndarray | None = None  # frame mm, chosen by place_tumour


GLIOBLASTOMA_KINDS = (("gbm", 0.6), ("solid", 0.12), ("nonenh", 0.28))


def draw_tumour(rng: np.random.Generator, kind: str | None = None) -> TumourSpec:
    """A tumour's kind, size and spread: BraTS-like gliomas, or (``kind='lgg'``) a lower-grade
    glioma (``draw_lgg`` sets its size)."""
    if kind is None:
        names, p = zip(*GLIOBLASTOMA_KINDS, strict=True)
        kind = str(rng.choice(names, p=p))
    place = str(rng.choice(["cortical", "periventricular", "deep"], p=[0.4, 0.3, 0.3]))
    r = rng.uniform(6, 26) if rng.uniform() < 0.8 else rng.uniform(4, 9)
    radius = tuple(r * rng.uniform(0.8, 1.2, size=3))
    oedema = rng.uniform(3, 30) * (0.5 if kind == "nonenh" else 1.0)
    oedema = max(oedema, 16 - r)  # small cores come with oedema: BraTS keeps no tiny tumours
    return TumourSpec(
        kind=kind,
        place=place,
        radius=radius,  # type: ignore[arg-type]
        oedema=float(oedema),
        rim=float(rng.uniform(2.0, 5.0) if kind != "solid" else 99.0),
        mass=float(rng.uniform(0.1, 0.45) * min(r / 18, 1.2)),
        satellites=int(rng.choice([0, 1, 2], p=[0.72, 0.2, 0.08])),
        enhancing_foci=bool(kind == "nonenh" and rng.uniform() < 0.35),
    )


def draw_lgg(rng: np.random.Generator, z_extent: float) -> TumourSpec:
    """A lower-grade glioma spanning about ``z_extent`` mm from bottom to top."""
    rz = z_extent / 2 / rng.uniform(1.0, 1.25)  # blobs reach beyond the core's semi-axis
    rxy = rng.uniform(0.7, 1.1, size=2) * max(rz, 12)
    return TumourSpec(
        kind="lgg",
        place=str(rng.choice(["cortical", "deep"], p=[0.65, 0.35])),
        radius=(float(rxy[0]), float(rxy[1]), float(rz)),
        oedema=float(rng.uniform(0, 4)),
        rim=0.0,
        mass=float(rng.uniform(0.05, 0.25)),
        satellites=0,
        cyst=bool(rng.uniform() < 0.2),
        enhancing_foci=bool(rng.uniform() < 0.25),
    )


def place_tumour(rng: np.random.Generator, brain: Brain, spec: TumourSpec) -> np.ndarray:
    """Pick the tumour centre (frame mm) in the cerebrum, near the cortex, next to a ventricle
    or deep in the white matter as ``spec.place`` asks."""
    r = float(np.mean(spec.radius))
    d, v = brain.depth_cerebrum, brain.ventricle
    grid = brain.grid
    idx = rng.integers(0, np.array(grid.shape)[:, None], size=(3, 60000))
    dd, vv = d[tuple(idx)], v[tuple(idx)]
    lab = brain.labels[tuple(idx)]
    ok = (dd > max(0.45 * r, 4)) & (vv < -2) & np.isin(lab, [GM, WM, DEEP, PV_WM, PALLIDUM])
    rules = {
        "cortical": (dd < r + 8),
        "periventricular": (vv > -(r + 8)) & (dd > r + 4),
        "deep": (dd > r + 8) & (vv < -(r + 3)),
    }
    for rule in (rules[spec.place], rules["deep"], np.ones_like(ok)):
        hits = np.flatnonzero(ok & rule)
        if len(hits):
            pick = idx[:, hits[rng.integers(len(hits))]]
            return np.asarray(grid.origin) + pick * np.asarray(grid.spacing)
    return brain.centre.copy()


def _box(grid: Grid, centre, half_mm) -> tuple[np.ndarray, np.ndarray]:
    c = grid.index(centre)
    half = np.asarray(half_mm, float) / np.asarray(grid.spacing)
    lo = np.clip(np.floor(c - half), 0, grid.shape).astype(int)
    hi = np.clip(np.ceil(c + half) + 1, 0, grid.shape).astype(int)
    return lo, hi


def _mass_effect(brain: Brain, centre, radius: float, mass: float) -> None:
    """Push the anatomy away from ``centre`` (the labels are resampled in place)."""
    if mass <= 0:
        return
    centre = [float(c) for c in centre]
    amp, width = float(mass * radius), float(2.2 * radius)
    reach = width * np.sqrt(max(np.log(amp / 0.3), 0.0)) + 2
    lo, hi = _box(brain.grid, centre, [reach] * 3)
    sub = brain.grid.sub(lo, hi)
    x, y, z = sub.axes()
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    d = np.sqrt(dx**2 + dy**2 + dz**2) + 1e-3
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    inside = brain.brain[box]
    # Fade the push out towards the brain surface, so the skull stays where it is.
    surface = np.clip(brain.depth[box] / 12, 0, 1)
    push = amp * np.exp(-((d / width) ** 2)) / (d + 1) * surface
    coords = np.stack(
        [
            (np.broadcast_to(dx, d.shape) * (1 - push) + centre[0] - brain.grid.origin[0])
            / brain.grid.spacing[0],
            (np.broadcast_to(dy, d.shape) * (1 - push) + centre[1] - brain.grid.origin[1])
            / brain.grid.spacing[1],
            (np.broadcast_to(dz, d.shape) * (1 - push) + centre[2] - brain.grid.origin[2])
            / brain.grid.spacing[2],
        ]
    )
    warped = ndi.map_coordinates(brain.labels, coords, order=0, mode="nearest")
    brain.labels[box] = np.where(inside, warped, brain.labels[box])


def _blobs(rng, sub: Grid, centre, radius, lobes: int, rough: float) -> np.ndarray:
    """Union of ``lobes`` random ellipsoids around ``centre`` with a noisy surface: a field
    positive inside."""
    x, y, z = sub.axes()
    f = np.full(sub.shape, -np.inf, np.float32)
    r = np.asarray(radius, float)
    for i in range(lobes):
        off = np.zeros(3) if i == 0 else rng.normal(0, 0.45, 3) * r
        semi = [float(v) for v in r * rng.uniform(*((0.55, 0.85) if i else (0.7, 0.9)), 3)]
        rot = [[float(v) for v in row] for row in _rotation(*rng.uniform(-np.pi, np.pi, 3))]
        c = [float(centre[k] + off[k]) for k in range(3)]
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        u = rot[0][0] * dx + rot[1][0] * dy + rot[2][0] * dz
        v = rot[0][1] * dx + rot[1][1] * dy + rot[2][1] * dz
        w = rot[0][2] * dx + rot[1][2] * dy + rot[2][2] * dz
        f = np.maximum(f, 1 - np.sqrt((u / semi[0]) ** 2 + (v / semi[1]) ** 2 + (w / semi[2]) ** 2))
    scale = float(np.mean(r))
    f += rough * smooth_noise(rng, sub, max(scale * 0.6, 3)) + 0.06 * smooth_noise(rng, sub, 3)
    return f


def add_tumour(rng: np.random.Generator, brain: Brain, spec: TumourSpec) -> np.ndarray:
    """Grow ``spec``'s tumour into ``brain`` (its labels are pushed aside in place).

    Returns the tumour's appearance classes (uint8: NECROSIS, OEDEMA, NONENH, ENHANCING,
    CYST or 0), all inside the brain."""
    grid = brain.grid
    centre = spec.centre if spec.centre is not None else place_tumour(rng, brain, spec)
    spec.centre = centre
    r_mean = float(np.mean(spec.radius))
    _mass_effect(brain, centre, r_mean, spec.mass)

    half = 1.7 * np.asarray(spec.radius) + spec.oedema + 12
    if spec.satellites:
        half = np.maximum(half, 2.4 * r_mean + spec.oedema + 14)
    lo, hi = _box(grid, centre, half)
    sub = grid.sub(lo, hi)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    inside = brain.brain[box]
    tissue = brain.labels[box]
    lobes = int(rng.integers(2, 7)) if spec.kind != "lgg" else int(rng.integers(2, 5))
    rough = 0.22 if spec.kind != "lgg" else 0.12
    core = (_blobs(rng, sub, centre, spec.radius, lobes, rough) > 0) & inside

    seeds = core.copy()
    extra = np.zeros_like(core)
    for _ in range(spec.satellites):
        for _try in range(20):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            where = centre + direction * r_mean * rng.uniform(1.5, 2.2)
            i = np.round(sub.index(where)).astype(int)
            if np.all(i >= 0) and np.all(i < sub.shape) and tissue[tuple(i)] in (WM, GM, PV_WM):
                rs = rng.uniform(2.5, 6.5)
                blob = (_blobs(rng, sub, where, (rs, rs, rs), 2, 0.15) > 0) & inside
                extra |= blob
                break
    seeds |= extra
    app = np.zeros(sub.shape, np.uint8)
    if spec.kind == "lgg":
        app[core] = NONENH
    elif spec.kind == "nonenh":
        app[seeds] = NONENH
    else:
        depth_in = ndi.distance_transform_edt(seeds, sampling=grid.spacing)
        rim = spec.rim * (1 + 0.45 * smooth_noise(rng, sub, 6))
        app[seeds] = ENHANCING
        app[seeds & (depth_in > rim)] = NECROSIS
        # Parts of the wall that do not enhance.
        gaps = seeds & (app == ENHANCING) & (smooth_noise(rng, sub, 8) < -1.1)
        app[gaps] = NONENH
        small = extra & (depth_in < 3)
        app[small] = ENHANCING
    if spec.enhancing_foci:
        foci = seeds & (smooth_noise(rng, sub, 4) > (2.1 if spec.kind == "lgg" else 1.6))
        app[foci] = ENHANCING
    if spec.cyst:
        depth_in = ndi.distance_transform_edt(core, sampling=grid.spacing)
        cyst = core & (depth_in > 4) & (smooth_noise(rng, sub, 6) > 1.0)
        app[cyst] = CYST

    # Oedema: grows from the tumour through white matter (and a little into grey matter).
    if spec.oedema > 0:
        white = np.isin(tissue, [WM, PV_WM, STEM]) & inside
        grey = np.isin(tissue, [GM, DEEP, PALLIDUM, CBL_GM]) & inside
        speed = np.clip(0.65 + 0.35 * smooth_noise(rng, sub, 7), 0.05, 1.0)
        steps = max(1, int(round(spec.oedema / grid.voxel_mm)))
        grown = seeds.copy()
        structure = ndi.generate_binary_structure(3, 2)
        for k in range(steps):
            allowed = (white | (grey & (k < max(2, steps // 6)))) & (speed >= k / steps)
            grown = ndi.binary_dilation(grown, structure) & (allowed | grown)
        app[grown & (app == 0)] = OEDEMA
    out = np.zeros(grid.shape, np.uint8)
    out[box] = np.where(inside, app, 0)
    return out


def seg_labels(appearance: np.ndarray) -> np.ndarray:
    """BraTS labels {0, 1, 2, 4} of the appearance classes."""
    lut = np.zeros(256, np.uint8)
    for a, s in SEG_OF.items():
        lut[a] = s
    return lut[appearance]


# --------------------------------------------------------------------------- images


def render(
    rng: np.random.Generator,
    brain: Brain,
    appearance: np.ndarray | None,
    modalities=MODALITIES,
    skull_stripped: bool = True,
    blur: float = 0.55,
) -> dict[str, np.ndarray]:
    """The MRI contrasts (float32, white matter on T1 about 1, before any scaling).

    Tissue means with a per-case jitter, fine texture, the tumour's signal (heterogeneous,
    fading at its infiltrating margin), partial volume, a smooth bias field per contrast and
    Rician noise. Outside the brain is zero when ``skull_stripped``."""
    grid = brain.grid
    texture = 0.03 * smooth_noise(rng, grid, 2.5)
    hetero = None
    fade = None
    box = None
    if appearance is not None and appearance.any():
        nz = np.nonzero(appearance)
        lo = np.maximum(np.min(nz, axis=1) - 3, 0)
        hi = np.minimum(np.max(nz, axis=1) + 4, grid.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        sub = grid.sub(lo, hi)
        app = appearance[box]
        hetero = 0.08 * smooth_noise(rng, sub, 4) + 0.05 * smooth_noise(rng, sub, 12)
        strength = np.clip(0.75 + 0.3 * smooth_noise(rng, sub, 8), 0.35, 1.0)
        margin = ndi.distance_transform_edt(app > 0, sampling=grid.spacing)
        fade = strength * np.clip(0.35 + margin / 3.5, 0, 1)
    out = {}
    for name in modalities:
        m = MODALITIES.index(name)
        lut = LUT[:, m] * rng.uniform(0.95, 1.05, N_TISSUES).astype(np.float32)
        img = lut[brain.labels] * (1 + texture)
        if box is not None:
            assert hetero is not None and fade is not None
            part = img[box]
            app = appearance[box]  # type: ignore[index]
            for cls, ranges in TUMOUR_SIGNAL.items():
                sel = app == cls
                if not sel.any():
                    continue
                level = rng.uniform(*ranges[m]) * (1 + hetero[sel])
                if cls in (OEDEMA, NONENH):  # infiltrative: blends with the tissue it invades
                    part[sel] = part[sel] + fade[sel] * (level - part[sel])
                else:
                    part[sel] = level
            img[box] = part
        img = ndi.gaussian_filter(img, blur)
        bias = 0.12 * rng.uniform(0.4, 1.4) * smooth_noise(rng, grid, 90)
        x, y, z = grid.axes()
        tilt = [float(t) for t in rng.normal(0, 0.0015, 3)]
        img *= np.exp(bias + tilt[0] * x + tilt[1] * y + tilt[2] * z)
        sigma = rng.uniform(0.012, 0.035)
        noise_re = rng.standard_normal(grid.shape, dtype=np.float32) * sigma
        noise_im = rng.standard_normal(grid.shape, dtype=np.float32) * sigma
        img = np.sqrt((img + noise_re) ** 2 + noise_im**2)
        if skull_stripped:
            img[~brain.brain] = 0
        out[name] = img.astype(np.float32)
    return out
