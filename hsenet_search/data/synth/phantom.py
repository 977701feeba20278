"""Chest CT phantom anatomy: body wall, lungs with lobes and vessel/airway trees, mediastinum, bones.

Geometry is analytic in body coordinates (see :mod:`.shapes`): each structure is an ellipse, ellipsoid,
paraboloid or tube in millimetres, so membership can be tested at single points (to place findings)
and rendered on any grid. HU values follow non-contrast chest CT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .shapes import (
    Grid,
    Point,
    blend,
    blend_flat,
    ellipsoid_occupancy,
    paint,
    segment_occupancy,
    soft,
    tubes_occupancy,
)

HU_AIR = -1000.0
HU_FAT = -95.0
HU_MUSCLE = 42.0
HU_BLOOD = 42.0
HU_LUNG = -855.0
HU_LIVER = 58.0
HU_SPLEEN = 46.0
HU_FLUID = 12.0
HU_CORTICAL = 750.0
HU_CANCELLOUS = 230.0

SIDES = {"right": -1, "left": 1}
LOBES = {
    "right": ("upper", "middle", "lower"),
    "left": ("upper", "lower"),
}


@dataclass(frozen=True)
class Patient:
    """Per-patient body habitus; every scan of one patient shares it."""

    sex: str
    age: int
    half_width: float  # body half width (mm) at mid chest
    half_depth: float  # body half antero-posterior depth (mm)
    fat: float  # subcutaneous fat thickness (mm)
    muscle: float  # chest-wall muscle thickness (mm)
    lung_height: float  # right dome to lung apex (mm)
    left_dome: float  # height of the left hemidiaphragm dome (mm, right dome = 0)
    heart_u: float  # position of this heart within the normal / enlarged size range (0..1)
    vertebra_radius: float
    trachea_radius: float
    aorta_radius: float
    rib_phase: float


def sample_patient(rng: np.random.Generator) -> Patient:
    """Draw a plausible adult habitus."""
    sex = "M" if rng.random() < 0.55 else "F"
    scale = 1.0 if sex == "M" else 0.93
    half_width = float(rng.uniform(142, 172) * scale)
    return Patient(
        sex=sex,
        age=int(np.clip(rng.normal(58, 14), 19, 92)),
        half_width=half_width,
        half_depth=float(half_width * rng.uniform(0.72, 0.82)),
        fat=float(rng.uniform(5, 12) + rng.exponential(5)),
        muscle=float(rng.uniform(8, 12)),
        lung_height=float(rng.uniform(200, 235) * scale),
        left_dome=float(rng.uniform(-22, -10)),
        heart_u=float(rng.uniform(0, 1)),
        vertebra_radius=float(rng.uniform(15.5, 19) * scale),
        trachea_radius=float(rng.uniform(7.5, 9.5) * scale),
        aorta_radius=float(rng.uniform(13, 16)),
        rib_phase=float(rng.uniform(0, 24)),
    )


@dataclass(frozen=True)
class TreeSegments:
    """Segments of the pulmonary vessel trees and their companion bronchi (parallel arrays)."""

    p0: np.ndarray  # (N, 3) start points
    p1: np.ndarray  # (N, 3) end points
    r0: np.ndarray  # (N,) vessel radius at p0
    r1: np.ndarray  # (N,) vessel radius at p1
    side: np.ndarray  # (N,) -1 right, +1 left
    lobe: np.ndarray  # (N,) lobe name of p1
    b0: np.ndarray  # (N, 3) companion bronchus start (arteries only; nan for veins)
    b1: np.ndarray  # (N, 3) companion bronchus end


@dataclass
class Anatomy:
    """One scan's anatomy: the patient's habitus plus scan-level heart size and the pulmonary trees."""

    patient: Patient
    cardiothoracic_ratio: float
    pericardial_fluid: float = 0.0  # pericardial effusion thickness (mm), 0 when absent
    trees: TreeSegments | None = field(default=None, repr=False)

    # ---- body outline ---------------------------------------------------------------------------
    @property
    def H(self) -> float:
        """Lung height: right hemidiaphragm dome to lung apex (mm)."""
        return self.patient.lung_height

    def _taper(self, z):
        return np.clip((z - 0.55 * self.H) / (0.5 * self.H), 0.0, 1.0)

    def body_axes(self, z):
        """Body half width and half depth at height z."""
        t = self._taper(z)
        return self.patient.half_width * (1 - 0.07 * t), self.patient.half_depth * (1 - 0.08 * t)

    def cavity_axes(self, z):
        """Half axes of the thoracic cavity (inside the ribs) at height z."""
        a, b = self.body_axes(z)
        p = self.patient
        return a - p.fat - p.muscle - 9.0, b - 0.8 * p.fat - p.muscle - 9.0

    @cached_property
    def cavity0(self) -> tuple[float, float]:
        a, b = self.cavity_axes(np.float32(0.3 * self.H))
        return float(a), float(b)

    # ---- landmarks ------------------------------------------------------------------------------
    @property
    def spine_y(self) -> float:
        return self.cavity0[1] - 0.85 * self.patient.vertebra_radius

    @property
    def trachea_y(self) -> float:
        return self.spine_y - self.patient.vertebra_radius - 24.0

    @property
    def carina_z(self) -> float:
        return 0.6 * self.H

    @property
    def arch_z(self) -> float:
        return self.carina_z + 22.0

    def dome(self, side: int, x, y):
        """Height of the hemidiaphragm on ``side`` below point (x, y)."""
        a0, b0 = self.cavity0
        top = 0.0 if side < 0 else self.patient.left_dome
        u = (x - side * 0.45 * a0) / (0.55 * a0)
        v = (y + 0.1 * b0) / b0
        return top - 32.0 * u**2 - 70.0 * np.maximum(v, 0) ** 2 - 15.0 * np.minimum(v, 0) ** 2

    def diaphragm(self, x, y):
        return np.where(x < 0, self.dome(-1, x, y), self.dome(1, x, y))

    def apex(self, side: int, x, y):
        """Upper limit of the lung on ``side`` above point (x, y)."""
        a0, b0 = self.cavity0
        u = (x - side * 0.5 * a0) / (0.5 * a0)
        v = (y - 0.15 * b0) / (0.85 * b0)
        return self.H - 45.0 * u**2 - 40.0 * v**2

    def mediastinum_half_width(self, z):
        return 9.0 + 16.0 * np.exp(-(((z - self.arch_z) / (0.14 * self.H)) ** 2))

    # ---- heart ----------------------------------------------------------------------------------
    @property
    def heart(self) -> tuple[Point, Point]:
        """Heart ellipsoid (centre, radii); its transverse diameter follows the cardiothoracic ratio."""
        a0, b0 = self.cavity0
        rx = self.cardiothoracic_ratio * a0
        ry = (0.5 + 0.25 * (self.cardiothoracic_ratio - 0.44)) * b0
        rz = 0.27 * self.H * (1 + 0.8 * max(self.cardiothoracic_ratio - 0.5, 0))
        cx = min(0.2 * a0, 0.9 * a0 - rx)
        cy = -b0 + ry + 4.0 + self.pericardial_fluid
        cz = float(self.diaphragm(np.float32(0.0), np.float32(cy))) + 0.85 * rz
        return (cx, cy, cz), (rx, ry, rz)

    def heart_envelope(self) -> tuple[Point, Point]:
        """Heart plus pericardial fluid and epicardial fat: what the lungs cannot enter."""
        c, r = self.heart
        m = self.pericardial_fluid + 4.0
        return c, (r[0] + m, r[1] + m, r[2] + m)

    # ---- great vessels and airways (polylines) --------------------------------------------------
    def hilum(self, side: int) -> Point:
        """Where the pulmonary artery enters the lung on ``side``."""
        a0, _ = self.cavity0
        return (side * 0.4 * a0, self.trachea_y + 6.0, self.carina_z - (22.0 if side < 0 else 28.0))

    def bronchus_hilum(self, side: int) -> Point:
        x, y, z = self.hilum(side)
        return (x - side * 2.0, y + 13.0, z + 6.0)

    def aorta_path(self) -> list[tuple[Point, float]]:
        """Centre line of the thoracic aorta (root, ascending, arch, descending) with radii."""
        (hx, hy, hz), (rx, ry, rz) = self.heart
        r = self.patient.aorta_radius
        rd = 0.8 * r
        a0, _ = self.cavity0
        yd = self.spine_y - self.patient.vertebra_radius - 0.6 * rd
        xd = 0.6 * self.patient.vertebra_radius + 0.5 * rd
        top = self.arch_z
        return [
            ((hx - 0.3 * rx, hy + 0.15 * ry, hz + 0.35 * rz), r),
            ((-10.0, hy + 0.1 * ry, top - 30.0), r),
            ((-6.0, -0.15 * a0, top - 2.0), r),
            ((6.0, self.trachea_y - 6.0, top + 8.0), 0.95 * r),
            ((xd + 4.0, self.trachea_y + 14.0, top), 0.85 * r),
            ((xd, yd, top - 22.0), rd),
            ((xd - 4.0, yd, -140.0), rd),
        ]

    def pulmonary_artery_paths(self) -> list[list[tuple[Point, float]]]:
        (hx, hy, hz), (rx, ry, rz) = self.heart
        trunk_top = (12.0, hy + 0.2 * ry, self.carina_z - 14.0)
        trunk = [((hx + 0.05 * rx, hy - 0.35 * ry, hz + 0.5 * rz), 12.0), (trunk_top, 12.0)]
        return [trunk, [(trunk_top, 10.0), (self.hilum(-1), 8.0)], [(trunk_top, 10.0), (self.hilum(1), 8.0)]]

    def svc_path(self) -> list[tuple[Point, float]]:
        (hx, hy, hz), (rx, ry, rz) = self.heart
        x = hx - rx + 12.0
        return [((x - 6.0, hy + 0.4 * ry, self.H + 80.0), 9.0), ((x, hy + 0.45 * ry, hz + 0.4 * rz), 10.0)]

    def airway_paths(self) -> list[list[tuple[Point, float]]]:
        """Trachea and main bronchi centre lines with lumen radii."""
        rt = self.patient.trachea_radius
        carina = (0.0, self.trachea_y, self.carina_z)
        trachea = [((-1.0, self.trachea_y - 4.0, self.H + 80.0), rt), (carina, rt * 0.95)]
        right = [(carina, 0.75 * rt), (self.bronchus_hilum(-1), 0.6 * rt)]
        left = [(carina, 0.65 * rt), (self.bronchus_hilum(1), 0.55 * rt)]
        return [trachea, right, left]

    def esophagus_path(self) -> list[tuple[Point, float]]:
        y = self.trachea_y + self.patient.trachea_radius + 7.0
        return [((4.0, y, self.H + 80.0), 7.0), ((10.0, y + 4.0, -20.0), 7.5), ((45.0, -5.0, -60.0), 9.0)]

    # ---- lungs ----------------------------------------------------------------------------------
    def lung_side(self, x, y, z):
        """0 outside the lungs, 1 right lung, 2 left lung (broadcasting arrays)."""
        x, y, z = np.asarray(x), np.asarray(y), np.asarray(z)
        a, b = self.cavity_axes(z)
        inside = (x / a) ** 2 + (y / b) ** 2 < 1.0
        inside &= np.abs(x) > self.mediastinum_half_width(z)
        vr = self.patient.vertebra_radius
        inside &= ~((np.abs(x) < vr + 9.0) & (y > self.spine_y - vr - 3.0))
        (hx, hy, hz), (rx, ry, rz) = self.heart_envelope()
        inside &= ((x - hx) / rx) ** 2 + ((y - hy) / ry) ** 2 + ((z - hz) / rz) ** 2 > 1.0
        right = inside & (x < 0) & (z > self.dome(-1, x, y)) & (z < self.apex(-1, x, y))
        left = inside & (x > 0) & (z > self.dome(1, x, y)) & (z < self.apex(1, x, y))
        return right.astype(np.uint8) + 2 * left.astype(np.uint8)

    def in_lobe(self, side: int, lobe: str, x, y, z):
        """Whether points (of the lung on ``side``) lie in ``lobe`` (broadcasting; oblique and
        horizontal fissures are planes)."""
        _, b0 = self.cavity0
        lower = np.asarray(z) < self.H * (0.12 + 0.25 * (np.asarray(y) / b0 + 1.0))
        if lobe == "lower":
            return lower
        middle = ~lower & (z < 0.48 * self.H) if side < 0 else np.zeros_like(lower)
        return middle if lobe == "middle" else ~lower & ~middle

    def lobe(self, side: int, x, y, z) -> str:
        """Lobe containing a point of the lung on ``side`` (scalars)."""
        for name in LOBES["right" if side < 0 else "left"]:
            if bool(self.in_lobe(side, name, x, y, z)):
                return name
        return "upper"

    def segment(self, side: int, lobe: str, point) -> str:
        """Conventional segment name for a point in ``lobe``."""
        x, y, z = point
        a0, b0 = self.cavity0
        lateral = abs(x) > 0.55 * a0
        if lobe == "upper":
            if side > 0 and z < 0.5 * self.H and y < 0.1 * b0:
                return "superior lingular" if z > 0.4 * self.H else "inferior lingular"
            if z > 0.8 * self.H:
                return "apical" if side < 0 else "apicoposterior"
            return "posterior" if y > 0.05 * b0 else "anterior"
        if lobe == "middle":
            return "lateral" if lateral else "medial"
        if z > 0.4 * self.H:
            return "superior"
        if y > 0.35 * b0:
            return "posterobasal"
        return "laterobasal" if lateral else ("anteromedial basal" if side > 0 else "anterior basal")

    def posterior_depth(self, x, y, z):
        """Distance (mm) from a point to the posterior chest wall straight behind it."""
        a, b = self.cavity_axes(z)
        return b * np.sqrt(np.clip(1.0 - (x / a) ** 2, 0.0, 1.0)) - y

    def cavity_depth(self, x, y, z):
        """Approximate distance (mm) from a point inside the thorax to the chest wall."""
        a, b = self.cavity_axes(z)
        return _ellipse_depth(x, y, a, b)

    def zone(self, z: float) -> str:
        if z > 0.62 * self.H:
            return "upper"
        return "lower" if z < 0.3 * self.H else "middle"

    def sample_lung_points(
        self,
        rng: np.random.Generator,
        side: int,
        count: int,
        *,
        margin: float = 0.0,
        lobes: tuple[str, ...] | None = None,
        heights: np.ndarray | None = None,
        accept=None,
    ) -> np.ndarray:
        """``count`` uniform random points inside one lung, at least ``margin`` mm from its edge.

        ``lobes`` restricts the lobe, ``heights`` draws z from these values (slice centres) and ``accept``
        is an extra vectorised predicate ``accept(x, y, z) -> bool array``."""
        a0, b0 = self.cavity0
        lo = np.array([0.0 if side > 0 else -a0 * 1.05, -b0 * 1.05, self.dome(side, 0.0, 0.0) - 90.0])
        hi = np.array([a0 * 1.05 if side > 0 else 0.0, b0 * 1.05, self.H])
        code = 1 if side < 0 else 2
        offsets = [(0.0, 0.0, 0.0)]
        if margin > 0:
            offsets += [
                (margin, 0, 0),
                (-margin, 0, 0),
                (0, margin, 0),
                (0, -margin, 0),
                (0, 0, margin),
                (0, 0, -margin),
            ]
        found: list[np.ndarray] = []
        total = 0
        batch = max(512, 12 * count)
        for _ in range(256):
            pts = rng.uniform(lo, hi, size=(batch, 3))
            if heights is not None:
                pts[:, 2] = rng.choice(heights, size=len(pts))
            x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
            ok = np.ones(len(pts), dtype=bool)
            for d in offsets:
                ok &= self.lung_side(x + d[0], y + d[1], z + d[2]) == code
            if lobes is not None:
                ok &= np.any([self.in_lobe(side, lobe, x, y, z) for lobe in lobes], axis=0)
            if accept is not None:
                ok &= accept(x, y, z)
            found.append(pts[ok])
            total += int(ok.sum())
            if total >= count:
                break
        allp = np.concatenate(found)
        if len(allp) < count:
            raise RuntimeError("phantom lung region too small for the requested points")
        return allp[:count]


def build_anatomy(
    patient: Patient, rng: np.random.Generator, *, cardiomegaly: bool, pericardial_fluid: float = 0.0
) -> Anatomy:
    """Scan-level anatomy: heart size from the label, then the four pulmonary trees."""
    ctr = 0.41 + 0.07 * patient.heart_u if not cardiomegaly else 0.57 + 0.09 * patient.heart_u
    anat = Anatomy(patient, ctr, pericardial_fluid)
    anat.trees = _grow_trees(anat, rng)
    return anat


def _grow_trees(anat: Anatomy, rng: np.random.Generator) -> TreeSegments:
    """Arterial (with bronchi) and venous trees of both lungs, grown by recursive target splitting."""
    parts = []
    (hx, hy, hz), (rx, ry, rz) = anat.heart
    for side in (-1, 1):
        arteries = anat.sample_lung_points(rng, side, 72, margin=6.0)
        p0, p1, r0, r1, parent = _branch(np.asarray(anat.hilum(side)), arteries, 6.5)
        # Each bronchus runs beside its artery: horizontal offset perpendicular to the segment.
        d = p1 - p0
        n = np.stack([d[:, 1], -d[:, 0], np.zeros(len(d))], axis=1)
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-9
        b1 = p1 + n * (1.9 * r1 + 1.0)[:, None]
        b0 = np.where((parent >= 0)[:, None], b1[np.maximum(parent, 0)], np.asarray(anat.bronchus_hilum(side)))
        parts.append((p0, p1, r0, r1, side, b0, b1))
        vein_root = np.array([hx + side * (0.55 * rx) - (6.0 if side > 0 else 0.0), hy + 0.75 * ry, hz + 0.25 * rz])
        p0, p1, r0, r1, _ = _branch(vein_root, anat.sample_lung_points(rng, side, 56, margin=6.0), 6.0)
        nan = np.full(p0.shape, np.nan)
        parts.append((p0, p1, r0, r1, side, nan, nan))
    p1 = np.concatenate([q[1] for q in parts])
    side = np.concatenate([np.full(len(q[0]), q[4]) for q in parts])
    lobe = np.full(len(p1), "upper", dtype=object)
    for s_ in (-1, 1):
        for name in ("lower", "middle"):
            lobe[(side == s_) & anat.in_lobe(s_, name, p1[:, 0], p1[:, 1], p1[:, 2])] = name
    return TreeSegments(
        p0=np.concatenate([q[0] for q in parts]),
        p1=p1,
        r0=np.concatenate([q[2] for q in parts]),
        r1=np.concatenate([q[3] for q in parts]),
        side=side,
        lobe=lobe.astype(str),
        b0=np.concatenate([q[5] for q in parts]),
        b1=np.concatenate([q[6] for q in parts]),
    )


def _branch(root: np.ndarray, pts: np.ndarray, r_root: float):
    """A tree from ``root`` to the target points: each node splits its points in two along their principal
    axis and steps 60 % of the way to each half's centroid; radii follow Murray-like ``n ** 0.45`` scaling.

    Returns segment starts, ends, start / end radii and the parent segment index (-1 at the root)."""
    total = len(pts)
    p0, p1, r0, r1, parent = [], [], [], [], []
    stack = [(root, pts, -1)]
    while stack:
        node, cluster, up = stack.pop()
        r_node = r_root * (len(cluster) / total) ** 0.45
        if len(cluster) == 1:
            halves = [cluster]
        else:
            centred = cluster - cluster.mean(axis=0)
            order = np.argsort(centred @ np.linalg.eigh(centred.T @ centred)[1][:, -1])
            halves = [cluster[order[: len(cluster) // 2]], cluster[order[len(cluster) // 2 :]]]
        for half in halves:
            target = half[0] if len(half) == 1 else node + 0.6 * (half.mean(axis=0) - node)
            p0.append(node)
            p1.append(target)
            r0.append(r_node)
            r1.append(max(r_root * (len(half) / total) ** 0.45, 0.7))
            parent.append(up)
            if len(half) > 1:
                stack.append((target, half, len(p1) - 1))
    return np.array(p0), np.array(p1), np.array(r0), np.array(r1), np.array(parent)


# ---- rendering -----------------------------------------------------------------------------------
@dataclass
class Scene:
    """A slab of the volume being drawn: HU values plus the lung label map the findings draw into."""

    grid: Grid
    anatomy: Anatomy
    hu: np.ndarray
    lung: np.ndarray  # uint8: 0 none, 1 right, 2 left

    @property
    def axes(self):
        return self.grid.axes()

    def lung_mask(self, side: int | None = None) -> np.ndarray:
        if side is None:
            return self.lung > 0
        return self.lung == (1 if side < 0 else 2)


def _ellipse_depth(x, y, a, b):
    """Approximate signed distance (mm, positive inside) to an axis-aligned ellipse."""
    return (1.0 - np.sqrt((x / a) ** 2 + (y / b) ** 2)) * np.minimum(a, b)


def _polyline(grid: Grid, path: list[tuple[Point, float]], extra: float = 0.0):
    for (p0, r0), (p1, r1) in zip(path[:-1], path[1:]):
        yield segment_occupancy(grid, p0, p1, r0 + extra, r1 + extra)


def draw_body(anat: Anatomy, grid: Grid) -> Scene:
    """Air, table, body wall, upper abdomen, mediastinal fat and aerated lungs (no vessels yet).

    Work is confined to bounding boxes (table, body, abdomen) to keep large volumes fast."""
    w = grid.spacing[0]
    p = anat.patient
    big = 1e6
    hu = np.full(grid.shape, HU_AIR, dtype=np.float32)
    lung = np.zeros(grid.shape, dtype=np.uint8)
    scene = Scene(grid, anat, hu, lung)
    # Patient table: a curved carbon plate under the back.
    ty, half = 0.9 * p.half_depth + 14.0, p.half_width + 45.0
    win = grid.window((-half, ty - 5.0, -big), (half, ty + 0.0007 * half**2 + 5.0, big))
    if win is not None:
        x, y, _ = grid.sub_axes(win)
        blend(hu[win], soft(3.5 - np.abs(y - ty - 0.0007 * x**2), w), 180.0)
    win = grid.window((-p.half_width - w, -p.half_depth - w, -big), (p.half_width + w, 0.9 * p.half_depth + w, big))
    if win is None:
        return scene
    x, y, z = grid.sub_axes(win)
    sub = hu[win]
    a, b = anat.body_axes(z)
    blend(sub, soft(np.minimum(_ellipse_depth(x, y, a, b), 0.9 * b - y), w), HU_FAT)
    blend(sub, soft(np.minimum(_ellipse_depth(x, y, a - p.fat, b - 0.8 * p.fat), 0.86 * b - 4.0 - y), w), HU_MUSCLE)
    ac, bc = anat.cavity_axes(z)
    cavity = _ellipse_depth(x, y, ac, bc) > 0
    sub[cavity] = HU_FAT + 10.0
    # Below the diaphragm (which lies below z = 0): liver on the right, stomach in front and spleen behind.
    nk = int(np.searchsorted(z.ravel(), 1.0))
    if nk:
        dia = anat.diaphragm(x, y)  # (nx, ny, 1)
        below = cavity[..., :nk] & (z[..., :nk] < dia)
        _, b0 = anat.cavity0
        organ = np.where(x < 18.0 - 0.25 * y, HU_LIVER, np.where(y < 0.1 * b0, 22.0, HU_SPLEEN))
        part = sub[..., :nk]
        part[below] = np.broadcast_to(organ, below.shape)[below]
        gas = below & ((x > 35.0) & (y < 0.0)) & (z[..., :nk] > dia - 22.0)
        part[gas] = HU_AIR + 20.0
    lung_sub = anat.lung_side(x, y, z)
    lung[win] = lung_sub
    for path in [
        anat.aorta_path(),
        anat.svc_path(),
        anat.esophagus_path(),
        *anat.pulmonary_artery_paths(),
        *anat.airway_paths(),
    ]:
        for occ in _polyline(grid, path, extra=2.0):
            if occ is not None:
                tw, o = occ
                lung[tw][o > 0.5] = 0
    inside = lung[win] > 0
    base = HU_LUNG + 30.0 * np.clip(y / bc, -1, 1)  # dependent lung is a little denser
    sub[inside] = np.broadcast_to(base, inside.shape)[inside]
    return scene


@dataclass(frozen=True)
class AirwayStyle:
    """How the bronchi are drawn: normal, or thickened / dilated in some lobes (set by findings)."""

    thick_walls: frozenset[tuple[int, str]] = frozenset()  # (side, lobe) with peribronchial thickening
    dilated: frozenset[tuple[int, str]] = frozenset()  # (side, lobe) with bronchiectasis
    bronchogram_regions: tuple[tuple[Point, Point], ...] = ()  # consolidation ellipsoids


def draw_lung_trees(scene: Scene, style: AirwayStyle) -> None:
    """Pulmonary vessels (tapering towards the periphery) and the bronchi beside the arteries."""
    t = scene.anatomy.trees
    hu, grid = scene.hu, scene.grid
    lung = (scene.lung > 0).reshape(-1)
    idx, occ = tubes_occupancy(grid, t.p0, t.p1, t.r0, t.r1)
    blend_flat(hu, idx, occ * lung[idx], HU_BLOOD)
    art = ~np.isnan(t.b0[:, 0])
    keys = list(zip(t.side.tolist(), t.lobe.tolist()))
    dilated = art & np.array([k in style.dilated for k in keys], dtype=bool)
    thick = art & np.array([k in style.thick_walls for k in keys], dtype=bool)
    in_cons = np.zeros(len(keys), dtype=bool)
    for c, r in style.bronchogram_regions:
        in_cons |= (((np.nan_to_num(t.b1) - c) / r) ** 2).sum(axis=1) < 1.0
    in_cons &= art
    visible = art & ((t.r1 >= 2.2) | dilated | in_cons | (thick & (t.r1 >= 1.4)))
    k = np.where(dilated, 1.7, 0.62)
    l0, l1 = k * t.r0, k * t.r1
    wall = np.where(thick, 0.45, np.where(dilated, 0.3, 0.2)) * np.maximum(l1, 1.0) + np.where(thick, 1.0, 0.4)
    walled = visible & (~in_cons | dilated | thick)
    idx, occ = tubes_occupancy(grid, t.b0[walled], t.b1[walled], (l0 + wall)[walled], (l1 + wall)[walled])
    blend_flat(hu, idx, occ * lung[idx], 30.0)
    idx, occ = tubes_occupancy(grid, t.b0[visible], t.b1[visible], l0[visible], l1[visible])
    blend_flat(hu, idx, occ * lung[idx], HU_AIR + 30.0)


def draw_heart(scene: Scene) -> None:
    """Epicardial fat, pericardial fluid (when present) and the non-contrast heart."""
    anat = scene.anatomy
    c, r = anat.heart
    f = anat.pericardial_fluid
    paint(scene.hu, ellipsoid_occupancy(scene.grid, c, tuple(ri + f + 3.0 for ri in r)), HU_FAT)
    if f > 0:
        paint(scene.hu, ellipsoid_occupancy(scene.grid, c, tuple(ri + f for ri in r)), HU_FLUID)
    paint(scene.hu, ellipsoid_occupancy(scene.grid, c, r), HU_BLOOD + 3.0)


def draw_great_vessels_and_airways(scene: Scene) -> None:
    """Aorta, pulmonary arteries, SVC, esophagus, trachea and main bronchi (with walls)."""
    g, hu = scene.grid, scene.hu
    anat = scene.anatomy
    for path in [anat.aorta_path(), anat.svc_path(), *anat.pulmonary_artery_paths()]:
        for occ in _polyline(g, path):
            paint(hu, occ, HU_BLOOD)
    for occ in _polyline(g, anat.esophagus_path()):
        paint(hu, occ, 38.0)
    for path in anat.airway_paths():
        for occ in _polyline(g, path, extra=2.0):
            paint(hu, occ, 50.0)
    for path in anat.airway_paths():
        for occ in _polyline(g, path):
            paint(hu, occ, HU_AIR + 10.0)


def draw_bones(scene: Scene) -> None:
    """Thoracic spine (bodies, discs, canal, posterior elements), ribs with costal cartilage, sternum."""
    anat, g, hu = scene.anatomy, scene.grid, scene.hu
    x, y, z = g.axes()
    w = g.spacing[0]
    p = anat.patient
    vr, sy = p.vertebra_radius, anat.spine_y
    # Vertebral column.
    win = g.window((-vr - 30, sy - vr - 4, -1e4), (vr + 30, sy + vr + 55, 1e4))
    if win is not None:
        xs, ys, zs = g.sub_axes(win)
        sub = hu[win]
        disc = np.mod(zs - p.rib_phase, 27.0) < 5.0
        body_d = _ellipse_depth(xs, ys - sy, 1.1 * vr, vr)
        blend(sub, soft(body_d, w) * ~disc, HU_CORTICAL)
        blend(sub, soft(body_d - 2.5, w) * ~disc, HU_CANCELLOUS)
        blend(sub, soft(body_d, w) * disc, 85.0)
        canal_y = sy + vr + 9.0
        ring = np.sqrt(xs**2 + (ys - canal_y) ** 2)
        blend(sub, soft(15.0 - ring, w), 420.0)
        spinous = soft(np.minimum(4.0 - np.abs(xs), 14.0 - np.abs(ys - canal_y - 20.0)), w)
        blend(sub, spinous, 420.0)
        blend(sub, soft(8.0 - ring, w), 15.0)
    # Ribs: a band outside the cavity, cut into obliquely sloping ribs (posterior ends higher).
    a0, b0 = anat.cavity_axes(np.float32(-60.0))
    win = g.window((-a0 - 12.0, -b0 - 12.0, -60.0), (a0 + 12.0, b0 + 12.0, anat.H + 25.0))
    idx: tuple[np.ndarray, ...] = (np.zeros(0, dtype=int),)
    if win is not None:
        xw, yw, zw = g.sub_axes(win)
        ac, bc = anat.cavity_axes(zw)
        ring = (_ellipse_depth(xw, yw, ac + 7.0, bc + 7.0) > -1.0) & (_ellipse_depth(xw, yw, ac, bc) < 1.0)
        idx = tuple(i + w_.start for i, w_ in zip(np.nonzero(ring), win))
    if idx[0].size:
        xr, yr, zr = x[idx[0], 0, 0], y[0, idx[1], 0], z[0, 0, idx[2]]
        phi = np.arctan2(np.abs(xr), yr) / np.pi  # 0 posterior midline .. 1 anterior midline
        phase = np.mod(zr + 110.0 * phi + p.rib_phase, 25.0)
        is_rib = (phase < 10.0) & (phi < 0.93) & (np.abs(xr) > 12.0)
        cartilage = is_rib & (phi > 0.8)
        values = hu[idx]
        values = np.where(is_rib, np.where(cartilage, 120.0, 320.0 + 380.0 * (np.abs(phase - 5.0) > 3.5)), values)
        hu[idx] = values
    # Sternum.
    win = g.window((-16, -1e4, 0.25 * anat.H), (16, 1e4, anat.H + 20.0))
    if win is not None:
        xs, ys, zs = g.sub_axes(win)
        _, bcs = anat.cavity_axes(zs)
        st = soft(np.minimum(14.0 - np.abs(xs), 6.0 - np.abs(ys + bcs + 5.0)), w)
        blend(hu[win], st, 380.0)
