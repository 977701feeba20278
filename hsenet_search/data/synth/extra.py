"""Never-labelled abnormalities (opt-in, ``data synth --extra-findings``): rendered and reported, never in the
18-label CSV, so no model is supervised on them; their ground truth goes to a separate file.

Five of BrgSA's under-represented CT-RATE-LT classes that the phantom can draw credibly:

- pneumothorax: an avascular air band along the anterior (non-dependent, supine) pleural surface of one lung;
- lung mass: a lobulated solid lesion of 32–60 mm (reported as a "mass", never as a nodule);
- lung cyst: a thin-walled air-filled sphere of 12–35 mm;
- rib fracture: a soft-tissue gap across one rib, slightly displaced;
- pleural calcification: dense flat plaques on the costal pleura.

Planning draws from its own random stream, so turning the option on leaves the 18 labels, their findings and
the report text of every scan as they were; the extra sentences are appended to the findings and impression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .abnormalities import Finding, _Ctx, _lung_site, _snap
from .phantom import HU_AIR, Anatomy, Scene
from .shapes import Grid, blend, ellipsoid_occupancy, paint, soft

EXTRA_LABELS = ("Pneumothorax", "Lung mass", "Lung cyst", "Rib fracture", "Pleural calcification")
EXTRA_RATE = 0.15  # each finding's prevalence (independently), so a small valid split has positives
HU_PLAQUE = 650.0


def _name(s: int) -> str:
    return "right" if s < 0 else "left"


def _plan_pneumothorax(ctx: _Ctx) -> Finding:
    s = -1 if ctx.rng.random() < 0.5 else 1
    depth = float(np.round(ctx.rng.uniform(8, 25)))
    k, z = _snap(ctx.grid, float(ctx.rng.uniform(0.45, 0.7)) * ctx.anat.H)
    kind = "small" if depth < 12 else "moderate"
    return Finding("Pneumothorax", kind, _name(s), f"{_name(s)} hemithorax", depth, (0.0, 0.0, z), k)


def _plan_mass(ctx: _Ctx) -> Finding:
    s = -1 if ctx.rng.random() < 0.55 else 1
    size = float(np.round(ctx.rng.uniform(32, 60)))
    p, k, lobe = _lung_site(ctx, s, None, margin=size / 2 + 4.0)
    lobule = tuple(float(v) for v in ctx.rng.normal(0.0, size / 6, 3))
    return Finding("Lung mass", "lobulated", _name(s), lobe, size, p, k, {"lobule": lobule})


def _plan_cyst(ctx: _Ctx) -> Finding:
    s = -1 if ctx.rng.random() < 0.5 else 1
    size = float(np.round(ctx.rng.uniform(12, 35)))
    p, k, lobe = _lung_site(ctx, s, None, margin=size / 2 + 3.0)
    return Finding("Lung cyst", "thin-walled", _name(s), lobe, size, p, k)


def _rib_point(anat: Anatomy, s: int, theta: float, z: float) -> tuple[float, float, float]:
    """The point of the rib band (3.5 mm outside the cavity ellipse) at polar angle ``theta`` from the
    posterior midline."""
    a, b = anat.cavity_axes(np.float32(z))
    return float(s * (float(a) + 3.5) * np.sin(theta)), float((float(b) + 3.5) * np.cos(theta)), z


def _plan_rib_fracture(ctx: _Ctx) -> Finding:
    anat, rng = ctx.anat, ctx.rng
    s = -1 if rng.random() < 0.5 else 1
    theta = float(np.pi * rng.uniform(0.3, 0.6))
    z = float(rng.uniform(0.35, 0.7) * anat.H)
    for _ in range(3):  # ribs: mod(z + 110 phi + rib_phase, 25) < 10 (phantom.draw_bones); take a mid-line
        x, y, _ = _rib_point(anat, s, theta, z)
        phi = float(np.arctan2(abs(x), y) / np.pi)
        base = 5.0 - 110.0 * phi - anat.patient.rib_phase
        z = base + 25.0 * round((z - base) / 25.0)
    k, _ = _snap(ctx.grid, z)
    number = int(np.clip(round(4 + (0.75 * anat.H - z) / 25.0), 3, 10))
    ordinal = f"{number}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(number, 'th') }"
    site = f"{_name(s)} {ordinal} rib, {'posterolateral' if theta < 0.45 * np.pi else 'lateral'}"
    return Finding("Rib fracture", "displaced", _name(s), site, 3.0, _rib_point(anat, s, theta, z), k)


def _plan_pleural_calcification(ctx: _Ctx) -> Finding:
    anat, rng = ctx.anat, ctx.rng
    side = str(rng.choice(["right", "left", "bilateral"], p=[0.35, 0.35, 0.3]))
    sides = [-1, 1] if side == "bilateral" else [-1 if side == "right" else 1]
    plaques = []
    for s in sides:
        for _ in range(int(rng.integers(2, 5))):
            phi = float(rng.uniform(0.2, 0.75))
            z = float(rng.uniform(0.25, 0.7) * anat.H)
            a, b = anat.cavity_axes(np.float32(z))
            theta = np.pi * phi
            centre = (float(s * (float(a) - 2.5) * np.sin(theta)), float((float(b) - 2.5) * np.cos(theta)), z)
            plaques.append((centre, float(rng.uniform(3, 5)), float(rng.uniform(8, 16))))
    k, _ = _snap(ctx.grid, plaques[0][0][2])
    first = plaques[0][0]
    params = {"plaques": plaques}
    return Finding("Pleural calcification", "plaques", side, "costal pleura", None, first, k, params)


_PLANNERS: dict[str, Callable[[_Ctx], Finding]] = {
    "Pneumothorax": _plan_pneumothorax,
    "Lung mass": _plan_mass,
    "Lung cyst": _plan_cyst,
    "Rib fracture": _plan_rib_fracture,
    "Pleural calcification": _plan_pleural_calcification,
}


def plan_extra_findings(
    anat: Anatomy, grid: Grid, rng: np.random.Generator, findings: Sequence[Finding]
) -> tuple[tuple[int, ...], list[Finding]]:
    """Draw which extra findings a scan has (0/1 per :data:`EXTRA_LABELS`) and plan them, clear of the
    pleural fluid already planned in ``findings``."""
    ctx = _Ctx(anat, grid, rng)
    for f in findings:
        if f.label == "Pleural effusion":
            ctx.effusion[-1 if f.side == "right" else 1] = (f.size_mm, f.params["z_top"], f.params["z_ref"])
    present = tuple(int(rng.random() < EXTRA_RATE) for _ in EXTRA_LABELS)
    return present, [_PLANNERS[label](ctx) for label, v in zip(EXTRA_LABELS, present) if v]


# ---- drawing -------------------------------------------------------------------------------------
def _draw_pneumothorax(scene: Scene, f: Finding) -> None:
    x, y, z = scene.axes
    a, b = scene.anatomy.cavity_axes(z)
    anterior_depth = y + b * np.sqrt(np.clip(1.0 - (x / a) ** 2, 0.0, 1.0))  # mm behind the anterior wall
    w = scene.grid.spacing[0]
    lo, hi = f.centre[2] - 60.0, f.centre[2] + 60.0
    occ = soft(f.size_mm - anterior_depth, w) * soft(np.minimum(z - lo, hi - z), 10.0)
    blend(scene.hu, occ * scene.lung_mask(-1 if f.side == "right" else 1), HU_AIR)


def _draw_mass(scene: Scene, f: Finding) -> None:
    r = f.size_mm / 2
    c = f.centre
    paint(scene.hu, ellipsoid_occupancy(scene.grid, c, (r, 0.85 * r, 0.9 * r)), 38.0)
    off = f.params["lobule"]
    lobe_centre = (c[0] + off[0], c[1] + off[1], c[2] + off[2])
    lobule = ellipsoid_occupancy(scene.grid, lobe_centre, (0.6 * r, 0.6 * r, 0.6 * r))
    paint(scene.hu, lobule, 38.0, scene.lung > 0)


def _draw_cyst(scene: Scene, f: Finding) -> None:
    r = f.size_mm / 2
    paint(scene.hu, ellipsoid_occupancy(scene.grid, f.centre, (r + 1.2, r + 1.2, r + 1.2)), 20.0)
    paint(scene.hu, ellipsoid_occupancy(scene.grid, f.centre, (r, r, r)), HU_AIR + 10.0)


def _draw_rib_fracture(scene: Scene, f: Finding) -> None:
    c = f.centre
    paint(scene.hu, ellipsoid_occupancy(scene.grid, c, (3.5, 3.5, 7.0)), 45.0)  # the gap across the rib
    shifted = (c[0] + 2.0 * np.sign(c[0]), c[1], c[2] + 4.0)  # the displaced end
    paint(scene.hu, ellipsoid_occupancy(scene.grid, shifted, (2.5, 2.5, 2.0)), 520.0)


def _draw_pleural_calcification(scene: Scene, f: Finding) -> None:
    for centre, radius, length in f.params["plaques"]:
        paint(scene.hu, ellipsoid_occupancy(scene.grid, centre, (radius, radius, length / 2)), HU_PLAQUE)


_DRAWERS: dict[str, Callable[[Scene, Finding], None]] = {
    "Pneumothorax": _draw_pneumothorax,
    "Lung mass": _draw_mass,
    "Lung cyst": _draw_cyst,
    "Rib fracture": _draw_rib_fracture,
    "Pleural calcification": _draw_pleural_calcification,
}
# render stage -> the extra findings drawn after it (lung findings over the vessel trees: a pneumothorax is
# avascular; bone findings over the ribs)
STAGES = {
    "lung": ("Pneumothorax", "Lung mass", "Lung cyst"),
    "bones": ("Rib fracture", "Pleural calcification"),
}


def draw_extra_findings(scene: Scene, findings: Sequence[Finding], stage: str) -> None:
    """Draw the extra findings of ``stage`` (``lung`` or ``bones``) into the scene."""
    for f in findings:
        if f.label in STAGES[stage]:
            _DRAWERS[f.label](scene, f)


# ---- report text ---------------------------------------------------------------------------------
def _sentence(f: Finding, rng: np.random.Generator) -> tuple[str, str]:
    """(findings sentence, impression phrase) of one extra finding."""
    if f.label == "Pneumothorax":
        return (
            f"A {f.kind} {f.side} pneumothorax is seen anteriorly, with an air rim of {f.size_mm:.0f} mm.",
            f"{f.kind.capitalize()} {f.side} pneumothorax.",
        )
    if f.label == "Lung mass":
        cm = f.size_mm / 10
        lead = str(rng.choice(["There is a", "A", "Noted is a"]))
        return (
            f"{lead} lobulated mass of {cm:.1f} cm in the {f.site} lobe of the {f.side} lung.",
            f"{cm:.1f} cm mass in the {f.side} {f.site} lobe; further evaluation is recommended.",
        )
    if f.label == "Lung cyst":
        return (
            f"A thin-walled cyst of {f.size_mm:.0f} mm is in the {f.site} lobe of the {f.side} lung.",
            f"{f.side.capitalize()} {f.site} lobe lung cyst.",
        )
    if f.label == "Rib fracture":
        return (
            f"There is a displaced fracture of the {f.site}.",
            f"Fracture of the {f.site.split(',')[0]}.",
        )
    where = "both hemithoraces" if f.side == "bilateral" else f"the {f.side} hemithorax"
    return (
        f"Calcified pleural plaques are seen along the costal pleura of {where}.",
        f"Pleural calcification ({f.side}).",
    )


def extra_report_text(findings: Sequence[Finding], rng: np.random.Generator) -> tuple[str, str]:
    """Sentences appended to the findings and to the impression (empty strings when there are none)."""
    parts = [_sentence(f, rng) for f in findings]
    return " ".join(p[0] for p in parts), " ".join(p[1] for p in parts)
