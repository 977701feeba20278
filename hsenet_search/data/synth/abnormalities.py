"""The 18 CT-RATE abnormalities: planned with attributes (side, lobe or zone, size, axial level) and drawn.

Planning happens once per scan on the analytic anatomy and the scan's grid; every focal finding is placed
on the centre of an axial slice, whose index is carried in :attr:`Finding.slice_index` (0-based along the
volume's third axis; reports cite it 1-based as the image number). Drawing runs per slab of the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from ..labels import LABELS
from .phantom import HU_AIR, HU_FLUID, AirwayStyle, Anatomy, Scene
from .shapes import Grid, Point, SmoothField, blend, ellipsoid_occupancy, paint, segment_occupancy, soft


@dataclass
class Finding:
    """One rendered abnormality (a label can have several, e.g. three nodules)."""

    label: str
    kind: str = ""
    side: str | None = None  # "right", "left" or "bilateral"
    site: str = ""  # lobe / zone / lymph-node station / vessel, as reported
    size_mm: float | None = None
    centre: Point | None = None
    slice_index: int | None = None  # 0-based axial index (third volume axis) where it is best seen
    params: dict = field(default_factory=dict)


@dataclass
class _Ctx:
    anat: Anatomy
    grid: Grid
    rng: np.random.Generator
    effusion: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # side -> (T, z_top, z_ref)


def _side_sign(side: str) -> int:
    return -1 if side == "right" else 1


def _snap(grid: Grid, z: float, lo: int = 1, hi: int | None = None) -> tuple[int, float]:
    hi = grid.shape[2] - 2 if hi is None else hi
    k = int(np.clip(round((z - grid.origin[2]) / grid.spacing[2]), lo, hi))
    return k, grid.z_of(k)


def _effusion_thickness(t: float, z_top: float, z_ref: float, z):
    return t * np.clip((z_top - z) / (z_top - z_ref), 0.0, 1.0) ** 0.6


def _lung_site(
    ctx: _Ctx,
    side: int,
    lobes: Sequence[str] | None = None,
    margin: float = 4.0,
    zmin: float | None = None,
    zmax: float | None = None,
) -> tuple[Point, int, str]:
    """A point inside one lung (in one of ``lobes``) on a slice centre, clear of pleural fluid."""
    anat, grid = ctx.anat, ctx.grid
    heights = np.array([grid.z_of(k) for k in range(1, grid.shape[2] - 1)])
    heights = heights[
        (heights >= (zmin if zmin is not None else -np.inf)) & (heights <= (zmax if zmax is not None else np.inf))
    ]

    def clear_of_fluid(x, y, z):
        if side not in ctx.effusion:
            return np.ones(np.shape(x), dtype=bool)
        t, z_top, z_ref = ctx.effusion[side]
        return anat.posterior_depth(x, y, z) > _effusion_thickness(t, z_top, z_ref, z) + margin + 6.0

    p = anat.sample_lung_points(
        ctx.rng, side, 1, margin=margin, lobes=tuple(lobes) if lobes else None, heights=heights, accept=clear_of_fluid
    )[0]
    q = (float(p[0]), float(p[1]), float(p[2]))
    k = int(round((q[2] - grid.origin[2]) / grid.spacing[2]))
    return q, k, anat.lobe(side, *q)


def _choose_side(rng: np.random.Generator, p_bilateral: float) -> str:
    if rng.random() < p_bilateral:
        return "bilateral"
    return "right" if rng.random() < 0.55 else "left"


def _sides(side: str) -> list[int]:
    return [-1, 1] if side == "bilateral" else [_side_sign(side)]


def _lobe_choice(rng: np.random.Generator, side: int, preferred: Sequence[str]) -> str:
    names = [lobe for lobe in preferred if side < 0 or lobe != "middle"]
    return str(rng.choice(names))


# ---- planners ------------------------------------------------------------------------------------
def _plan_medical_material(ctx: _Ctx) -> list[Finding]:
    rng, anat = ctx.rng, ctx.anat
    kind = str(
        rng.choice(
            ["port catheter", "pacemaker", "sternotomy wires", "central venous catheter"], p=[0.35, 0.25, 0.2, 0.2]
        )
    )
    (hx, hy, hz), (rx, ry, rz) = anat.heart
    (sx, sy, _), _ = anat.svc_path()[0]
    (bx, by, bz), _ = anat.svc_path()[1]
    H = anat.H
    side = "right" if kind != "pacemaker" else "left"
    if kind in ("port catheter", "pacemaker") and rng.random() < 0.2:
        side = "left" if side == "right" else "right"
    s = _side_sign(side)
    a_top, b_top = anat.body_axes(np.float32(0.8 * H))
    z_dev = 0.8 * H
    svc_top = (float(bx - 4), float(by - 2), 0.9 * H)
    junction = (float(bx), float(by), float(bz))
    if kind == "sternotomy wires":
        _, bc = anat.cavity_axes(np.float32(0.6 * H))
        levels = [_snap(ctx.grid, zl)[1] for zl in np.linspace(0.4 * H, 0.85 * H, int(rng.integers(4, 7)))]
        wires = [(float(zl), float(-bc - 4.0)) for zl in levels]
        k, _ = _snap(ctx.grid, float(levels[len(levels) // 2]))
        return [
            Finding(
                "Medical material",
                kind,
                None,
                "sternum",
                None,
                (0.0, -float(bc), float(levels[0])),
                k,
                {"wires": wires},
            )
        ]
    if kind == "central venous catheter":
        path = [(-40.0, -10.0, H + 90.0), (-30.0, -8.0, H + 20.0), svc_top, junction]
        k, _ = _snap(ctx.grid, junction[2])
        return [
            Finding(
                "Medical material",
                kind,
                "right",
                "right internal jugular vein",
                None,
                junction,
                k,
                {"path": path, "radius": 1.3, "hu": 600.0, "tip": "superior vena cava"},
            )
        ]
    # Subcutaneous, on the anterior body surface at 55 % of the half width.
    dev_y = float(-b_top * np.sqrt(1 - 0.55**2) + max(0.55 * anat.patient.fat, 6.0))
    dev = (s * 0.55 * float(a_top), dev_y, z_dev)
    k, zk = _snap(ctx.grid, z_dev)
    dev = (dev[0], dev[1], zk)
    via = (s * 0.3 * float(a_top), -0.45 * float(b_top), 0.95 * H)
    if kind == "port catheter":
        path = [dev, via, svc_top, junction]
        return [
            Finding(
                "Medical material",
                kind,
                side,
                f"{side} anterior chest wall",
                None,
                dev,
                k,
                {
                    "device": dev,
                    "device_radii": (12.0, 4.5, 12.0),
                    "device_hu": 2600.0,
                    "path": path,
                    "radius": 1.3,
                    "hu": 700.0,
                    "tip": "superior vena cava-right atrium junction",
                },
            )
        ]
    ra = (hx - 0.6 * rx, hy + 0.1 * ry, hz + 0.15 * rz)
    rv = (hx + 0.15 * rx, hy - 0.45 * ry, hz - 0.45 * rz)
    path = [dev, via, svc_top, junction, ra, rv]
    return [
        Finding(
            "Medical material",
            kind,
            side,
            f"{side} infraclavicular subcutaneous tissue",
            None,
            dev,
            k,
            {
                "device": dev,
                "device_radii": (22.0, 5.0, 19.0),
                "device_hu": 3000.0,
                "path": path,
                "radius": 1.2,
                "hu": 2600.0,
                "tip": "right ventricle",
            },
        )
    ]


_AORTA_SITES = {"ascending aorta": (0, 1), "aortic arch": (2, 3, 4), "descending aorta": (5,)}


def _plan_arterial_calcification(ctx: _Ctx) -> list[Finding]:
    rng, anat = ctx.rng, ctx.anat
    names = list(_AORTA_SITES)
    chosen = [
        n for n in names if rng.random() < {"ascending aorta": 0.3, "aortic arch": 0.8, "descending aorta": 0.7}[n]
    ] or ["aortic arch"]
    path = anat.aorta_path()
    plaques = []
    for site in chosen:
        for _ in range(int(rng.integers(2, 6))):
            seg = int(rng.choice(_AORTA_SITES[site]))
            (p0, r0), (p1, r1) = path[seg], path[seg + 1]
            if seg == 5:  # keep descending-aorta plaques within the thorax
                p1 = (p1[0], p1[1], max(p1[2], 0.05 * anat.H))
            t = float(rng.uniform(0.1, 0.9))
            c = np.add(p0, t * np.subtract(p1, p0))
            d = np.subtract(p1, p0)
            n = np.cross(d, rng.normal(size=3))
            n /= np.linalg.norm(n) + 1e-9
            r = r0 + t * (r1 - r0)
            plaques.append((tuple(c + n * (r - 0.5)), float(rng.uniform(1.4, 2.6)), float(rng.uniform(650, 1000))))
    zs = [p[0][2] for p in plaques]
    k, _ = _snap(ctx.grid, float(np.median(zs)))
    return [
        Finding(
            "Arterial wall calcification",
            "calcified atheroma plaques",
            None,
            " and ".join(chosen),
            None,
            plaques[0][0],
            k,
            {"plaques": plaques, "sites": chosen},
        )
    ]


def _plan_cardiomegaly(ctx: _Ctx) -> list[Finding]:
    c, r = ctx.anat.heart
    k, _ = _snap(ctx.grid, c[2])
    return [
        Finding(
            "Cardiomegaly",
            "enlarged heart",
            None,
            "heart",
            round(2 * r[0]),
            c,
            k,
            {"ctr": round(ctx.anat.cardiothoracic_ratio, 2)},
        )
    ]


def _plan_pericardial_effusion(ctx: _Ctx) -> list[Finding]:
    c, r = ctx.anat.heart
    k, _ = _snap(ctx.grid, c[2])
    t = ctx.anat.pericardial_fluid
    probe = (c[0] + r[0] + t / 2, c[1], ctx.grid.z_of(k))
    return [
        Finding(
            "Pericardial effusion",
            "minimal" if t < 8 else "moderate",
            None,
            "pericardium",
            round(t),
            c,
            k,
            {"probe": probe},
        )
    ]


_CORONARY_PATHS = {
    "left anterior descending": ((0.45, -0.85, 0.55), (0.35, -0.9, -0.6)),
    "circumflex": ((0.5, 0.2, 0.75), (0.95, 0.35, 0.2)),
    "right": ((-0.75, -0.55, 0.45), (-0.9, 0.1, -0.45)),
}


def _plan_coronary_calcification(ctx: _Ctx) -> list[Finding]:
    rng = ctx.rng
    (cx, cy, cz), radii = ctx.anat.heart
    arteries = ["left anterior descending"] + [a for a in ("circumflex", "right") if rng.random() < 0.5]
    spots = []
    for art in arteries:
        d0, d1 = (np.asarray(v) for v in _CORONARY_PATHS[art])
        for _ in range(int(rng.integers(1, 4))):
            d = d0 + rng.uniform(0, 1) * (d1 - d0)
            d /= np.linalg.norm(d)
            r_spot = float(rng.uniform(1.6, 3.0))
            pos = np.array([cx, cy, cz]) + d * (np.asarray(radii) + 4.0)
            spots.append((tuple(pos), r_spot, float(rng.uniform(600, 1000))))
    k, _ = _snap(ctx.grid, float(spots[0][0][2]))
    return [
        Finding(
            "Coronary artery wall calcification",
            "calcified plaques",
            None,
            ", ".join(arteries),
            None,
            spots[0][0],
            k,
            {"spots": spots, "arteries": arteries},
        )
    ]


def _plan_hiatal_hernia(ctx: _Ctx) -> list[Finding]:
    rng, anat = ctx.rng, ctx.anat
    radii = (float(rng.uniform(16, 28)), float(rng.uniform(13, 20)), float(rng.uniform(18, 30)))
    y = anat.spine_y - anat.patient.vertebra_radius - 6.0 - radii[1]
    base = float(anat.diaphragm(np.float32(0.0), np.float32(anat.heart[0][1])))  # central tendon height
    k, z = _snap(ctx.grid, base + 0.6 * radii[2])
    centre = (0.0, y, z)
    air = bool(rng.random() < 0.6)
    return [
        Finding(
            "Hiatal hernia",
            "sliding",
            None,
            "esophageal hiatus",
            round(2 * max(radii[0], radii[2])),
            centre,
            k,
            {"radii": radii, "air": air},
        )
    ]


def _lymph_stations(anat: Anatomy, short: float) -> dict[str, Point]:
    rt = anat.patient.trachea_radius
    ty, cz, az = anat.trachea_y, anat.carina_z, anat.arch_z
    _, b0 = anat.cavity0
    hr, hl = anat.hilum(-1), anat.hilum(1)
    return {
        "right lower paratracheal": (-(rt + 5 + short / 2), ty - 3.0, cz + 14.0),
        "right upper paratracheal": (-(rt + 5 + short / 2), ty - 4.0, az + 28.0),
        "subcarinal": (4.0, ty + 8.0, cz - 10.0 - short / 2),
        "prevascular": (10.0, -0.62 * b0, az - 4.0),
        "aortopulmonary window": (24.0, ty - 8.0, cz + 8.0),
        "right hilar": (hr[0] - 6.0, hr[1] - 14.0, hr[2] - 10.0),
        "left hilar": (hl[0] + 6.0, hl[1] - 14.0, hl[2] - 10.0),
    }


def _plan_lymphadenopathy(ctx: _Ctx) -> list[Finding]:
    rng, anat = ctx.rng, ctx.anat
    names = list(_lymph_stations(anat, 10.0))
    count = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.35, 0.2, 0.1]))
    stations = list(rng.choice(names, size=count, replace=False))
    out = []
    for st in stations:
        short = float(np.round(rng.uniform(11, 24)))
        long = float(np.round(short * rng.uniform(1.2, 1.6)))
        c = _lymph_stations(anat, short)[st]
        k, z = _snap(ctx.grid, c[2])
        out.append(
            Finding(
                "Lymphadenopathy", "enlarged lymph node", None, str(st), short, (c[0], c[1], z), k, {"long_mm": long}
            )
        )
    return out


def _plan_emphysema(ctx: _Ctx) -> list[Finding]:
    rng = ctx.rng
    kind = str(rng.choice(["centrilobular", "paraseptal", "centrilobular and paraseptal"], p=[0.6, 0.2, 0.2]))
    severity = str(rng.choice(["mild", "moderate", "severe"], p=[0.4, 0.4, 0.2]))
    side = "bilateral" if rng.random() < 0.9 else _choose_side(rng, 0.0)
    frac = {"mild": 0.16, "moderate": 0.28, "severe": 0.45}[severity]
    f = Finding(
        "Emphysema",
        kind,
        side,
        "upper lobes",
        None,
        None,
        None,
        {"severity": severity, "fraction": frac, "bullae": [], "seed": int(rng.integers(2**31))},
    )
    if kind != "centrilobular" or severity == "severe":
        s = _sides(side)[0]
        p, k, lobe = _lung_site(ctx, s, ("upper",), margin=3.0, zmin=0.7 * ctx.anat.H)
        size = float(np.round(rng.uniform(14, 32)))
        # A subpleural bulla: push the centre towards the chest wall.
        direction = np.array([p[0], p[1]]) / (np.hypot(p[0], p[1]) + 1e-6)
        shift = max(0.0, float(ctx.anat.cavity_depth(p[0], p[1], p[2])) - size / 2 - 1.0)
        c = (p[0] + direction[0] * shift, p[1] + direction[1] * shift, p[2])
        f.params["bullae"] = [(c, size / 2)]
        f.slice_index, f.centre, f.size_mm = k, c, size
        f.params["bulla_side"] = "right" if s < 0 else "left"
    return [f]


def _plan_atelectasis(ctx: _Ctx) -> list[Finding]:
    rng = ctx.rng
    out = []
    dependent = bool(ctx.effusion) and rng.random() < 0.6 or rng.random() < 0.15
    if dependent:
        s = next(iter(ctx.effusion)) if ctx.effusion else (-1 if rng.random() < 0.5 else 1)
        side = "right" if s < 0 else "left"
        thick = float(np.round(rng.uniform(10, 18)))
        eff = ctx.effusion.get(s)
        z_top = 0.32 * ctx.anat.H
        k, z = _snap(ctx.grid, 0.16 * ctx.anat.H)
        out.append(
            Finding(
                "Atelectasis",
                "compressive",
                side,
                "lower",
                thick,
                None,
                k,
                {"thickness": thick, "z_top": z_top, "effusion": eff},
            )
        )
        if rng.random() < 0.5:
            return out
    for _ in range(int(rng.integers(1, 3))):
        s = -1 if rng.random() < 0.5 else 1
        lobe = _lobe_choice(rng, s, ("lower", "lower", "middle", "upper"))
        p, k, lobe = _lung_site(ctx, s, (lobe,), margin=6.0, zmax=0.55 * ctx.anat.H)
        length = float(np.round(rng.uniform(18, 40)))
        ang = rng.uniform(0, np.pi)
        half = np.array([np.cos(ang), np.sin(ang), rng.uniform(-0.15, 0.15)]) * length / 2
        out.append(
            Finding(
                "Atelectasis",
                "linear",
                "right" if s < 0 else "left",
                lobe,
                length,
                p,
                k,
                {
                    "p0": tuple(np.subtract(p, half)),
                    "p1": tuple(np.add(p, half)),
                    "radius": float(rng.uniform(1.8, 3.0)),
                    "segment": ctx.anat.segment(s, lobe, p),
                },
            )
        )
    return out


def _nodule_size(rng: np.random.Generator, kind: str) -> float:
    if kind == "calcified":
        return float(np.round(rng.uniform(3, 8)))
    if kind == "solid":
        return float(np.clip(np.round(np.exp(rng.normal(np.log(6.0), 0.55))), 3, 30))
    return float(np.round(rng.uniform(6, 20)))


def _plan_lung_nodule(ctx: _Ctx) -> list[Finding]:
    rng = ctx.rng
    out = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))):
        kind = str(rng.choice(["solid", "ground-glass", "part-solid", "calcified"], p=[0.72, 0.13, 0.08, 0.07]))
        size = _nodule_size(rng, kind)
        s = -1 if rng.random() < 0.55 else 1
        p, k, lobe = _lung_site(ctx, s, None, margin=size / 2 + 3.0)
        out.append(
            Finding(
                "Lung nodule",
                kind,
                "right" if s < 0 else "left",
                lobe,
                size,
                p,
                k,
                {"segment": ctx.anat.segment(s, lobe, p)},
            )
        )
    return out


def _patches(
    ctx: _Ctx, label: str, kind: str, count: int, rmin: float, rmax: float, lobes: Sequence[str]
) -> list[Finding]:
    rng = ctx.rng
    out = []
    for _ in range(count):
        s = -1 if rng.random() < 0.5 else 1
        lobe = _lobe_choice(rng, s, lobes)
        radii = tuple(float(rng.uniform(rmin, rmax)) for _ in range(3))
        p, k, lobe = _lung_site(ctx, s, (lobe,), margin=4.0)
        size = float(np.round(2 * max(radii[0], radii[1])))
        out.append(
            Finding(
                label,
                kind,
                "right" if s < 0 else "left",
                lobe,
                size,
                p,
                k,
                {"radii": radii, "segment": ctx.anat.segment(s, lobe, p), "seed": int(rng.integers(2**31))},
            )
        )
    return out


def _plan_lung_opacity(ctx: _Ctx) -> list[Finding]:
    count = int(ctx.rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    return _patches(ctx, "Lung opacity", "ground-glass", count, 10, 28, ("upper", "middle", "lower", "lower"))


def _plan_consolidation(ctx: _Ctx) -> list[Finding]:
    count = int(ctx.rng.choice([1, 2], p=[0.7, 0.3]))
    return _patches(ctx, "Consolidation", "consolidation", count, 12, 26, ("lower", "lower", "middle", "upper"))


def _plan_fibrotic_sequela(ctx: _Ctx) -> list[Finding]:
    rng, anat = ctx.rng, ctx.anat
    apical = rng.random() < 0.6
    out = []
    for _ in range(int(rng.integers(1, 3))):
        s = -1 if rng.random() < 0.5 else 1
        zmin, zmax = (0.72 * anat.H, None) if apical else (None, 0.45 * anat.H)
        p, k, lobe = _lung_site(ctx, s, None, margin=5.0, zmin=zmin, zmax=zmax)
        bands = []
        for _ in range(int(rng.integers(2, 4))):
            ang = np.arctan2(p[1], p[0]) + rng.uniform(-0.6, 0.6)
            depth = float(anat.cavity_depth(p[0], p[1], p[2]))
            length = depth + 4.0
            end = (p[0] + np.cos(ang) * length, p[1] + np.sin(ang) * length, p[2] + rng.uniform(-3, 3))
            bands.append((p, tuple(float(v) for v in end)))
        out.append(
            Finding(
                "Pulmonary fibrotic sequela",
                "linear fibrotic bands",
                "right" if s < 0 else "left",
                lobe,
                None,
                p,
                k,
                {"bands": bands, "radius": float(rng.uniform(1.5, 2.3)), "segment": anat.segment(s, lobe, p)},
            )
        )
    return out


def _plan_pleural_effusion(ctx: _Ctx) -> list[Finding]:
    rng, anat, grid = ctx.rng, ctx.anat, ctx.grid
    side = _choose_side(rng, 0.4)
    out = []
    k, z_ref = _snap(grid, 0.12 * anat.H)
    for s in _sides(side):
        t = float(np.round(rng.uniform(10, 42)))
        z_top = float(rng.uniform(0.35, 0.55) * anat.H)
        ctx.effusion[s] = (t, z_top, z_ref)
        a, _ = anat.cavity_axes(np.float32(z_ref))
        x = s * 0.45 * float(a)
        y = float(anat.posterior_depth(x, 0.0, z_ref)) - t / 2.0
        name = "right" if s < 0 else "left"
        out.append(
            Finding(
                "Pleural effusion",
                "minimal" if t < 15 else "moderate" if t < 35 else "large",
                name,
                f"{name} hemithorax",
                t,
                (x, y, z_ref),
                k,
                {"z_top": z_top, "z_ref": z_ref},
            )
        )
    return out


def _plan_diffuse(label: str, kind: str, zones: Sequence[str]) -> Callable[[_Ctx], list[Finding]]:
    def plan(ctx: _Ctx) -> list[Finding]:
        rng = ctx.rng
        side = _choose_side(rng, 0.75)
        zone = str(rng.choice(list(zones)))
        lobes = {
            "lower lobes": ("lower",),
            "lower and middle lobes": ("lower", "middle"),
            "upper lobes": ("upper",),
            "both lungs diffusely": ("upper", "middle", "lower"),
        }[zone]
        pairs = [(s, lobe) for s in _sides(side) for lobe in lobes if s < 0 or lobe != "middle"]
        if not pairs:
            pairs = [(s, "lower") for s in _sides(side)]
        return [Finding(label, kind, side, zone, None, None, None, {"lobes": pairs, "seed": int(rng.integers(2**31))})]

    return plan


_PLANNERS: dict[str, Callable[[_Ctx], list[Finding]]] = {
    "Medical material": _plan_medical_material,
    "Arterial wall calcification": _plan_arterial_calcification,
    "Cardiomegaly": _plan_cardiomegaly,
    "Pericardial effusion": _plan_pericardial_effusion,
    "Coronary artery wall calcification": _plan_coronary_calcification,
    "Hiatal hernia": _plan_hiatal_hernia,
    "Lymphadenopathy": _plan_lymphadenopathy,
    "Emphysema": _plan_emphysema,
    "Atelectasis": _plan_atelectasis,
    "Lung nodule": _plan_lung_nodule,
    "Lung opacity": _plan_lung_opacity,
    "Pulmonary fibrotic sequela": _plan_fibrotic_sequela,
    "Pleural effusion": _plan_pleural_effusion,
    "Mosaic attenuation pattern": _plan_diffuse(
        "Mosaic attenuation pattern", "mosaic", ("lower lobes", "both lungs diffusely", "lower and middle lobes")
    ),
    "Peribronchial thickening": _plan_diffuse(
        "Peribronchial thickening", "peribronchial", ("lower lobes", "lower and middle lobes", "both lungs diffusely")
    ),
    "Consolidation": _plan_consolidation,
    "Bronchiectasis": _plan_diffuse(
        "Bronchiectasis", "cylindrical", ("lower lobes", "lower and middle lobes", "upper lobes")
    ),
    "Interlobular septal thickening": _plan_diffuse(
        "Interlobular septal thickening", "smooth", ("lower lobes", "both lungs diffusely")
    ),
}
assert set(_PLANNERS) == set(LABELS)


def plan_findings(positive: Sequence[str], anat: Anatomy, grid: Grid, rng: np.random.Generator) -> list[Finding]:
    """Findings (with attributes) for the positive labels; pleural effusion first so others avoid the fluid."""
    ctx = _Ctx(anat, grid, rng)
    order = sorted(positive, key=lambda lb: (lb != "Pleural effusion", LABELS.index(lb)))
    findings: list[Finding] = []
    for label in order:
        findings.extend(_PLANNERS[label](ctx))
    if "Bronchiectasis" in positive:
        kind = str(rng.choice(["cylindrical", "varicose", "cystic"], p=[0.7, 0.2, 0.1]))
        for f in findings:
            if f.label == "Bronchiectasis":
                f.kind = kind
    return findings


def airway_style(findings: Sequence[Finding]) -> AirwayStyle:
    """How the findings change the bronchi (thick walls, dilatation, air bronchograms)."""
    thick = {tuple(p) for f in findings if f.label == "Peribronchial thickening" for p in f.params["lobes"]}
    dilated = {tuple(p) for f in findings if f.label == "Bronchiectasis" for p in f.params["lobes"]}
    regions = tuple((f.centre, f.params["radii"]) for f in findings if f.label == "Consolidation")
    return AirwayStyle(frozenset(thick), frozenset(dilated), regions)  # type: ignore[arg-type]


# ---- drawing -------------------------------------------------------------------------------------
def _lung_box(anat: Anatomy) -> tuple[Point, Point]:
    a0, b0 = anat.cavity0
    return (-1.15 * a0, -1.15 * b0, -140.0), (1.15 * a0, 1.15 * b0, anat.H + 20.0)


def _lobes_mask(scene: Scene, pairs) -> np.ndarray:
    x, y, z = scene.axes
    mask = np.zeros(scene.hu.shape, dtype=bool)
    for side, lobe in pairs:
        mask |= scene.lung_mask(side) & scene.anatomy.in_lobe(side, lobe, x, y, z)
    return mask


def _draw_emphysema(scene: Scene, f: Finding) -> None:
    anat, grid = scene.anatomy, scene.grid
    x, y, z = scene.axes
    rng = np.random.default_rng(f.params["seed"])
    field_ = SmoothField.sample(rng, *_lung_box(anat), scale=9.0).on(grid)
    weight = np.clip((z - 0.25 * anat.H) / (0.45 * anat.H), 0.0, 1.0) * f.params["fraction"]
    nd = NormalDist()
    thr = np.array([nd.inv_cdf(1.0 - w) if w > 1e-4 else 9.0 for w in weight.ravel()], dtype=np.float32)
    occ = np.clip((field_ - thr.reshape(1, 1, -1)) / 0.25 + 0.5, 0.0, 1.0)
    mask = np.zeros(scene.hu.shape, dtype=bool)
    for s in _sides(f.side or "bilateral"):
        mask |= scene.lung_mask(s)
    if f.kind == "paraseptal":
        mask &= anat.cavity_depth(x, y, z) < 14.0
    blend(scene.hu, occ * mask, -985.0)
    for c, r in f.params["bullae"]:
        paint(scene.hu, ellipsoid_occupancy(grid, c, (r, r, r)), -992.0, where=scene.lung > 0)


def _draw_mosaic(scene: Scene, f: Finding) -> None:
    rng = np.random.default_rng(f.params["seed"])
    field_ = SmoothField.sample(rng, *_lung_box(scene.anatomy), scale=32.0).on(scene.grid)
    mask = _lobes_mask(scene, f.params["lobes"])
    blend(scene.hu, np.clip((field_ - 0.35) / 0.3, 0, 1) * mask, -912.0)
    blend(scene.hu, np.clip((-field_ - 0.35) / 0.3, 0, 1) * mask, -765.0)


def _draw_septal(scene: Scene, f: Finding) -> None:
    rng = np.random.default_rng(f.params["seed"])
    x, y, z = scene.axes
    field_ = SmoothField.sample(rng, *_lung_box(scene.anatomy), scale=13.0).on(scene.grid)
    mask = _lobes_mask(scene, f.params["lobes"]) & (scene.anatomy.cavity_depth(x, y, z) < 32.0)
    lines = np.clip(1.0 - np.abs(field_) / 0.13, 0.0, 1.0)
    blend(scene.hu, lines * mask * 0.9, -380.0)


def _warped_patch(scene: Scene, f: Finding, hu_value: float, texture: float) -> None:
    c, r = f.centre, f.params["radii"]
    pad = max(r) * 1.4
    win = scene.grid.window(tuple(ci - pad for ci in c), tuple(ci + pad for ci in c))  # type: ignore[arg-type]
    if win is None:
        return
    sub = scene.grid.sub(win)
    x, y, z = sub.axes()
    rng = np.random.default_rng(f.params["seed"])
    lo, hi = tuple(ci - pad for ci in c), tuple(ci + pad for ci in c)
    warp = SmoothField.sample(rng, lo, hi, scale=max(r) * 0.8).on(sub)  # type: ignore[arg-type]
    tex = SmoothField.sample(rng, lo, hi, scale=6.0).on(sub)  # type: ignore[arg-type]
    rho = np.sqrt(((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2)
    occ = soft((1.0 - rho - 0.22 * warp) * min(r), scene.grid.spacing[0])
    side = _side_sign(f.side or "right")
    mask = scene.lung_mask(side)[win] & scene.anatomy.in_lobe(side, f.site, x, y, z)
    blend(scene.hu[win], occ * mask, hu_value + texture * tex)


def _draw_opacity(scene: Scene, f: Finding) -> None:
    _warped_patch(scene, f, -610.0, 45.0)


def _draw_consolidation(scene: Scene, f: Finding) -> None:
    _warped_patch(scene, f, 28.0, 6.0)


def _draw_nodule(scene: Scene, f: Finding) -> None:
    r = f.size_mm / 2
    c = f.centre
    if f.kind == "ground-glass":
        paint(scene.hu, ellipsoid_occupancy(scene.grid, c, (r, r, r)), -560.0)
        return
    if f.kind == "part-solid":
        paint(scene.hu, ellipsoid_occupancy(scene.grid, c, (r, r, r)), -540.0)
        r *= 0.45
    paint(scene.hu, ellipsoid_occupancy(scene.grid, c, (r, r, r)), 360.0 if f.kind == "calcified" else 35.0)


def _dependent_band(scene: Scene, side: int, inner, outer, z_top: float) -> np.ndarray:
    x, y, z = scene.axes
    depth = scene.anatomy.posterior_depth(x, y, z)
    w = scene.grid.spacing[0]
    occ = soft(np.minimum(depth - inner, outer - depth), w) * (z < z_top)
    return occ * scene.lung_mask(side)


def _draw_atelectasis(scene: Scene, f: Finding) -> None:
    if f.kind == "compressive":
        side = _side_sign(f.side or "right")
        eff = f.params["effusion"]
        x, y, z = scene.axes
        inner = _effusion_thickness(*eff, z) if eff is not None else 0.0
        occ = _dependent_band(scene, side, inner, inner + f.params["thickness"], f.params["z_top"])
        blend(scene.hu, occ, 22.0)
        return
    paint(
        scene.hu,
        segment_occupancy(scene.grid, f.params["p0"], f.params["p1"], f.params["radius"], f.params["radius"]),
        8.0,
        where=scene.lung > 0,
    )


def _draw_fibrotic(scene: Scene, f: Finding) -> None:
    r = f.params["radius"]
    for p0, p1 in f.params["bands"]:
        paint(scene.hu, segment_occupancy(scene.grid, p0, p1, r, r * 0.8), -40.0, where=scene.lung > 0)


def _draw_pleural_effusion(scene: Scene, f: Finding) -> None:
    _, _, z = scene.axes
    side = _side_sign(f.side or "right")
    thick = _effusion_thickness(f.size_mm, f.params["z_top"], f.params["z_ref"], z)
    occ = _dependent_band(scene, side, -50.0, thick, f.params["z_top"])
    blend(scene.hu, occ, HU_FLUID)


def _draw_lymph_node(scene: Scene, f: Finding) -> None:
    s, long = f.size_mm / 2, f.params["long_mm"] / 2
    paint(scene.hu, ellipsoid_occupancy(scene.grid, f.centre, (s, s * 1.1, long)), 38.0)


def _draw_hernia(scene: Scene, f: Finding) -> None:
    c, r = f.centre, f.params["radii"]
    shape = ellipsoid_occupancy(scene.grid, c, r)
    paint(scene.hu, shape, 30.0)
    if f.params["air"] and shape is not None:
        win, occ = shape
        _, _, z = scene.grid.sub_axes(win)
        paint(scene.hu, (win, occ * (z > c[2] + 0.2 * r[2])), HU_AIR + 15.0)


def _draw_spots(scene: Scene, spots) -> None:
    for c, r, value in spots:
        paint(scene.hu, ellipsoid_occupancy(scene.grid, c, (r, r, 1.3 * r)), value)


def _draw_arterial(scene: Scene, f: Finding) -> None:
    _draw_spots(scene, f.params["plaques"])


def _draw_coronary(scene: Scene, f: Finding) -> None:
    _draw_spots(scene, f.params["spots"])


def _draw_material(scene: Scene, f: Finding) -> None:
    g = scene.grid
    if "wires" in f.params:
        for z, y in f.params["wires"]:
            for dy in (-5.0, 5.0):
                paint(scene.hu, segment_occupancy(g, (-13.0, y + dy, z), (13.0, y + dy, z), 1.4, 1.4), 3000.0)
        return
    path, r, value = f.params["path"], f.params["radius"], f.params["hu"]
    for p0, p1 in zip(path[:-1], path[1:]):
        paint(scene.hu, segment_occupancy(g, p0, p1, r, r), value)
    if "device" in f.params:
        paint(scene.hu, ellipsoid_occupancy(g, f.params["device"], f.params["device_radii"]), f.params["device_hu"])


_DRAWERS: dict[str, Callable[[Scene, Finding], None]] = {
    "Emphysema": _draw_emphysema,
    "Mosaic attenuation pattern": _draw_mosaic,
    "Interlobular septal thickening": _draw_septal,
    "Lung opacity": _draw_opacity,
    "Consolidation": _draw_consolidation,
    "Lung nodule": _draw_nodule,
    "Atelectasis": _draw_atelectasis,
    "Pulmonary fibrotic sequela": _draw_fibrotic,
    "Pleural effusion": _draw_pleural_effusion,
    "Lymphadenopathy": _draw_lymph_node,
    "Hiatal hernia": _draw_hernia,
    "Arterial wall calcification": _draw_arterial,
    "Coronary artery wall calcification": _draw_coronary,
    "Medical material": _draw_material,
}

# Drawing stages, in order of the labels drawn within each (the anatomy draws the others:
# cardiomegaly and pericardial effusion with the heart, bronchial changes with the airway trees).
STAGES: dict[str, tuple[str, ...]] = {
    "parenchyma": (
        "Mosaic attenuation pattern",
        "Emphysema",
        "Interlobular septal thickening",
        "Lung opacity",
        "Consolidation",
    ),
    "lung": ("Lung nodule", "Pulmonary fibrotic sequela", "Pleural effusion", "Atelectasis"),
    "mediastinum": ("Hiatal hernia", "Lymphadenopathy"),
    "vessel walls": ("Arterial wall calcification", "Coronary artery wall calcification"),
    "devices": ("Medical material",),
}


def draw_findings(scene: Scene, findings: Sequence[Finding], stage: str) -> None:
    """Draw the findings that belong to ``stage`` into the scene."""
    for label in STAGES[stage]:
        for f in findings:
            if f.label == label:
                _DRAWERS[label](scene, f)
