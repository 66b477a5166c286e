"""Seeded virtual-patient anatomy of the lower thorax and abdomen: CT, density, VOI labels and uptake compartments.

Synthetic virtual patients stand in for patient data: nothing here comes from a real person.

Geometry is built in physical LPS millimetres (x to the patient's left, y posterior, z superior; the field of view
is centred on (0, 0, 0) and spans 390 mm in z for both standard grids), so one seed gives the same patient on any
grid. Region: lung bases, liver, spleen, kidneys, lumbar spine (L2-L5 labelled; the vertebrae above and below are bone
labelled ``body``), aorta, vena cava and the apex of the heart, with 1-6 lesions in liver, soft tissue and lung.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from cohort_dosimetry.grid import Grid, resolve_grid
from cohort_dosimetry.physics import hu_to_density
from cohort_dosimetry.vocabulary import LESION_LABEL_OFFSET, ORGAN_LABELS, name_of

from ._kinetics import (
    ADMINISTERED_ACTIVITY_BQ,
    compartment_activity_bq,
    effective_half_life_h,
    lu177_half_life_h,
    washout_half_life_for_effective_h,
)

# Kinetic parameter ranges of Lu-177 DOTATATE, drawn uniformly per patient. Effective half-lives (h):
#   kidneys 40-60 h: Sandstrom et al., J Nucl Med 54:33 (2013), kidney effective half-life about 50 h (range 34-77);
#   spleen 55-85 h and healthy liver 50-80 h: same study and Garske-Roman et al., Eur J Nucl Med Mol Imaging
#   45:970 (2018), organ effective half-lives 2-3.5 d;
#   tumours 60-110 h: Ilan et al., J Nucl Med 56:177 (2015) and Garske-Roman 2018, tumour effective half-lives
#   2.5-4.6 d;
#   blood 1.5-3 h: fast renal clearance of the peptide, blood activity below 10 % of injected at 4 h
#   (Kwekkeboom et al., Eur J Nucl Med 28:1319 (2001));
#   red marrow 20-40 h: assumed, between blood and organ values; remainder soft tissue 50-80 h with 10-20 % uptake:
#   assumed, chosen so that the activity in this field of view, and so the SPECT count level, falls over the week
#   like the published cohort's (3-20 M counts, Li et al. 2022) with a slowly cleared whole-body component.
# Uptake fractions of the 7.4 GBq are chosen so that organ concentrations at 24 h have the published ordering
# spleen > kidney > liver and tumour-to-kidney concentration ratios of about 2-8 (Sandstrom 2013); the rest of the
# administered activity is excreted to urine (bladder outside this field of view).
_KINETICS = {
    # class: (fraction range, uptake half-life range h, effective half-life range h)
    "blood": ((0.20, 0.30), (0.02, 0.05), (1.5, 3.0)),
    "remainder": ((0.10, 0.20), (0.3, 1.0), (50.0, 80.0)),
    "liver": ((0.015, 0.03), (0.5, 2.0), (50.0, 80.0)),
    "spleen": ((0.008, 0.018), (0.5, 2.0), (55.0, 85.0)),
    "kidney": ((0.010, 0.020), (0.5, 2.0), (40.0, 60.0)),
    "red_marrow": ((0.001, 0.003), (0.3, 1.0), (20.0, 40.0)),
    "lesion": ((1.0e-4, 4.0e-4), (1.0, 4.0), (60.0, 110.0)),  # fraction per mL of viable lesion
}
# necrotic cores: concentration 5-10 % of their lesion's, slow uptake (diffusion, 24-48 h), the lesion's washout
_NECROSIS_RELATIVE_UPTAKE = (0.05, 0.10)
_NECROSIS_UPTAKE_HALF_LIFE_H = (24.0, 48.0)

_LESION_SITES = ("liver", "soft_tissue", "lung")
_LESION_SITE_PROBABILITIES = (0.5, 0.35, 0.15)
_LESION_VOLUME_ML = (2.0, 180.0)
_LUNG_LESION_MAX_ML = 20.0
_NECROSIS_MIN_ML = 10.0


def _smooth_noise(rng: np.random.Generator, grid: Grid, correlation_mm: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field (z, y, x) float32 with the given correlation length in mm.

    White noise on a coarse lattice of ``correlation_mm`` cells, trilinearly interpolated to the grid: the same seed
    gives the same field (up to interpolation) on every grid of the same field of view.
    """
    coarse = [max(2, int(np.ceil(e / correlation_mm)) + 1) for e in grid.extent_mm]
    white = torch.from_numpy(rng.standard_normal(coarse).astype(np.float32))[None, None]
    field = torch.nn.functional.interpolate(white, size=grid.shape, mode="trilinear", align_corners=True)[0, 0].numpy()
    return ((field - field.mean()) / max(float(field.std()), 1e-6)).astype(np.float32)


class _Space:
    """Voxel-centre coordinates and shape masks on a grid (LPS mm)."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.z, self.y, self.x = (a.astype(np.float32) for a in grid.axes_mm())

    def _box(self, centre, semi):
        """Index slices (z, y, x) of the bounding box of a shape."""
        out = []
        for axis, c, s in zip((self.z, self.y, self.x), centre, semi):
            lo, hi = np.searchsorted(axis, c - s, side="left"), np.searchsorted(axis, c + s, side="right")
            out.append(slice(int(lo), int(hi)))
        return tuple(out)

    def ellipsoid(self, centre, semi) -> np.ndarray:
        """Boolean (z, y, x) mask of an axis-aligned ellipsoid, ``centre`` and semi-axes ``semi`` (z, y, x) in mm."""
        mask = np.zeros(self.grid.shape, dtype=bool)
        box = self._box(centre, semi)
        zz = ((self.z[box[0]] - centre[0]) / semi[0]) ** 2
        yy = ((self.y[box[1]] - centre[1]) / semi[1]) ** 2
        xx = ((self.x[box[2]] - centre[2]) / semi[2]) ** 2
        mask[box] = zz[:, None, None] + yy[None, :, None] + xx[None, None, :] <= 1.0
        return mask

    def cylinder(self, z_range, centre_yx, semi_yx) -> np.ndarray:
        """Boolean mask of an elliptic cylinder along z between ``z_range`` (mm)."""
        mask = np.zeros(self.grid.shape, dtype=bool)
        zsel = (self.z >= z_range[0]) & (self.z <= z_range[1])
        yy = ((self.y - centre_yx[0]) / semi_yx[0]) ** 2
        xx = ((self.x - centre_yx[1]) / semi_yx[1]) ** 2
        mask[zsel] = (yy[:, None] + xx[None, :] <= 1.0)[None]
        return mask

    def index_of(self, point_mm) -> tuple[int, ...] | None:
        """Nearest voxel index of a point (z, y, x) mm, or None outside the grid."""
        idx = []
        for axis, value in zip((self.z, self.y, self.x), point_mm):
            step = axis[1] - axis[0] if len(axis) > 1 else 1.0
            i = int(round((value - axis[0]) / step))
            if i < 0 or i >= len(axis):
                return None
            idx.append(i)
        return tuple(idx)


# 26 unit directions (cube corners, edges and faces) to test that an ellipsoid lies inside a mask.
_DIRECTIONS = np.array(
    [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)], dtype=float
)
_DIRECTIONS /= np.linalg.norm(_DIRECTIONS, axis=1, keepdims=True)


def _place_lesion(rng, space: _Space, allowed: np.ndarray, semi) -> tuple | None:
    """A centre (z, y, x) mm where an ellipsoid with semi-axes ``semi`` fits inside ``allowed``, or None."""
    candidates = np.argwhere(allowed)
    if len(candidates) == 0:
        return None
    for _ in range(200):
        iz, iy, ix = candidates[rng.integers(len(candidates))]
        centre = np.array([space.z[iz], space.y[iy], space.x[ix]], dtype=float)
        inside = True
        for direction in _DIRECTIONS:
            idx = space.index_of(centre + direction * np.asarray(semi))
            if idx is None or not allowed[idx]:
                inside = False
                break
        if inside:
            return tuple(centre)
    return None


def make_anatomy(seed: int, grid: str | Grid = "compact") -> xr.Dataset:
    """A seeded virtual patient's anatomy and uptake compartments (synthetic: no patient data).

    Parameters
    ----------
    seed : the patient's seed; anatomy (sex, body size, organ sizes and positions, lesions), textures and kinetics
        all follow from it.
    grid : a name in :data:`GRIDS` (``"compact"``, ``"paper"``) or a :class:`Grid`.

    Returns
    -------
    xr.Dataset with dims (z, y, x) and ``compartment``:
        ``ct_hu`` (z, y, x) int16, HU; ``density`` (z, y, x) float32, g/cm3 (Li et al. 2022 curve);
        ``labels`` (z, y, x) int16 (attrs ``names`` = {label: VOI name}, see :mod:`cohort_dosimetry.vocabulary`);
        ``compartments`` (compartment, z, y, x) float32: the unit-sum uptake shape of each kinetic compartment;
        ``fraction`` (compartment): fraction of the administered activity taken up (model amplitude);
        ``uptake_half_life_h``, ``washout_half_life_h`` (biological), ``effective_half_life_h`` (compartment), h;
        coords ``z``, ``y``, ``x`` (LPS mm); attrs ``seed``, ``sex`` ("F"/"M"), ``spacing_mm``, ``origin_mm``
        (z, y, x), ``administered_activity_bq``, ``nuclide``, ``physical_half_life_h``, ``lesion_sites``,
        ``synthetic``.
    """
    try:
        grid = resolve_grid(grid)
    except ValueError as error:
        raise ValueError(f"virtual patient seed {seed}: {error}") from None
    rng = np.random.default_rng(seed)
    space = _Space(grid)
    sex = "M" if rng.random() < 0.5 else "F"
    semi_lr = rng.uniform(150, 185) if sex == "M" else rng.uniform(135, 170)  # body half-width, mm
    semi_ap = rng.uniform(100, 130) if sex == "M" else rng.uniform(90, 120)
    size = np.sqrt(semi_lr * semi_ap / (165.0 * 115.0))
    y_body = rng.uniform(-10, 10)
    z_top = space.z[-1] + grid.spacing_mm[0]

    # --- body, fat, spine, vessels ---
    body = space.cylinder((-np.inf, np.inf), (y_body, 0.0), (semi_ap, semi_lr))
    fat_mm = rng.uniform(10, 22) if sex == "M" else rng.uniform(15, 30)
    inner = space.cylinder((-np.inf, np.inf), (y_body, 0.0), (semi_ap - fat_mm, semi_lr - fat_mm))
    pitch = rng.uniform(32, 37) * size**0.3  # vertebral level pitch (body + disc), mm
    z_l2 = rng.uniform(-40, -20)
    y_spine = y_body + semi_ap - rng.uniform(60, 70)
    vb_semi = (0.38 * pitch, rng.uniform(15, 19), rng.uniform(19, 24))  # vertebral body (z, y, x)
    vertebrae: dict[str, np.ndarray] = {}
    bone_cortical = np.zeros(grid.shape, bool)
    trabecular = np.zeros(grid.shape, bool)
    for level in range(-4, 12):  # level 0 = L2, 1 = L3, ..., 3 = L5; others unnamed
        zc = z_l2 - level * pitch
        if zc < space.z[0] - pitch or zc > z_top + pitch:
            continue
        vb = space.cylinder((zc - vb_semi[0], zc + vb_semi[0]), (y_spine, 0.0), vb_semi[1:])
        core = space.cylinder(
            (zc - vb_semi[0] + 2, zc + vb_semi[0] - 2), (y_spine, 0.0), (vb_semi[1] - 2.5, vb_semi[2] - 2.5)
        )
        arch = space.ellipsoid((zc, y_spine + vb_semi[1] + 14, 0.0), (0.35 * pitch, 10.0, 13.0))
        arch |= space.ellipsoid((zc, y_spine + vb_semi[1] + 30, 0.0), (0.3 * pitch, 12.0, 5.0))  # spinous process
        bone_cortical |= (vb & ~core) | arch
        trabecular |= core
        if 0 <= level <= 3:  # the other levels stay bone labelled "body"
            vertebrae[f"vertebra_L{level + 2}"] = vb | arch
    bone = bone_cortical | trabecular
    y_vessel = y_spine - vb_semi[1] - 14
    aorta = space.cylinder((-np.inf, np.inf), (y_vessel, 16.0), (rng.uniform(10, 13),) * 2)
    ivc = space.cylinder((-np.inf, np.inf), (y_vessel + 2, -24.0), (rng.uniform(10, 13),) * 2)
    heart = space.ellipsoid((z_top + 25, y_body - 0.35 * semi_ap, 35.0), (60.0, 50.0, 60.0)) & inner
    vessels = (aorta | ivc | heart) & inner & ~bone

    # --- organs ---
    z_dome_right = rng.uniform(100, 130)
    z_dome_left = z_dome_right - rng.uniform(5, 20)
    lung_semi_z = 160.0
    lung_right = space.ellipsoid(
        (z_dome_right + lung_semi_z, y_body + 0.1 * semi_ap, -0.47 * semi_lr),
        (lung_semi_z, 0.72 * semi_ap, 0.36 * semi_lr),
    )
    lung_left = space.ellipsoid(
        (z_dome_left + lung_semi_z, y_body + 0.1 * semi_ap, 0.47 * semi_lr),
        (lung_semi_z, 0.72 * semi_ap, 0.36 * semi_lr),
    )
    s_liver = size * rng.uniform(0.85, 1.15)
    liver = space.ellipsoid(
        (z_dome_right - 70 * s_liver, y_body - 0.05 * semi_ap, -0.38 * semi_lr),
        (75 * s_liver, 0.68 * semi_ap, 0.5 * semi_lr),
    )
    liver |= space.ellipsoid(
        (z_dome_right - 45 * s_liver, y_body - 0.38 * semi_ap, 0.05 * semi_lr),
        (40 * s_liver, 0.33 * semi_ap, 0.33 * semi_lr),
    )
    s_spleen = np.sqrt(size) * rng.uniform(0.8, 1.2)
    spleen = space.ellipsoid(
        (z_dome_left - 55 * s_spleen, y_body + 0.35 * semi_ap, 0.6 * semi_lr),
        (55 * s_spleen, 48 * s_spleen, 28 * s_spleen),
    )
    kidneys, medullas = {}, {}
    for side, sign, dz in (("right", -1.0, 0.0), ("left", 1.0, rng.uniform(8, 20))):
        s_kidney = np.sqrt(size) * rng.uniform(0.9, 1.1)
        centre = (z_l2 + dz + rng.uniform(-10, 10), y_spine + rng.uniform(0, 10), sign * rng.uniform(58, 70))
        semi = (55 * s_kidney, 24 * s_kidney, 30 * s_kidney)
        kidneys[side] = space.ellipsoid(centre, semi)
        medullas[side] = space.ellipsoid(centre, tuple(0.68 * s for s in semi))
    soft = inner & ~bone & ~vessels

    labels = np.zeros(grid.shape, dtype=np.int16)
    labels[body] = ORGAN_LABELS["body"]
    for name, mask in (
        ("lung_right", lung_right & soft),
        ("lung_left", lung_left & soft & ~lung_right),
        ("liver", liver & soft),
        ("spleen", spleen & soft),
        ("kidney_right", kidneys["right"] & soft),
        ("kidney_left", kidneys["left"] & soft),
    ):
        labels[mask] = ORGAN_LABELS[name]
    for name, mask in vertebrae.items():
        labels[mask & body] = ORGAN_LABELS[name]
    # the liver dome sits under the diaphragm: where the right lung and liver overlap, the liver wins
    labels[liver & lung_right & soft] = ORGAN_LABELS["liver"]

    # --- lesions ---
    organ_free = soft & (labels == ORGAN_LABELS["body"])
    site_masks = {
        "liver": labels == ORGAN_LABELS["liver"],
        "soft_tissue": organ_free,
        "lung": np.isin(labels, (ORGAN_LABELS["lung_left"], ORGAN_LABELS["lung_right"])),
    }
    n_lesions = int(rng.integers(1, 7))
    lesions: list[dict] = []
    taken = np.zeros(grid.shape, bool)
    for _ in range(n_lesions):
        site = str(rng.choice(_LESION_SITES, p=_LESION_SITE_PROBABILITIES))
        volume_ml = float(np.exp(rng.uniform(*np.log(_LESION_VOLUME_ML))))
        if site == "lung":
            volume_ml = min(volume_ml, _LUNG_LESION_MAX_ML)
        elong = rng.uniform(0.8, 1.25, size=3)
        elong /= np.prod(elong) ** (1 / 3)
        placed = None
        for attempt_site in (site, "soft_tissue"):
            volume_try = volume_ml
            while placed is None and volume_try >= _LESION_VOLUME_ML[0]:
                radius = (3 * volume_try * 1000 / (4 * np.pi)) ** (1 / 3)  # mm
                semi = tuple(radius * elong)
                placed = _place_lesion(rng, space, site_masks[attempt_site] & ~taken, tuple(s * 1.1 for s in semi))
                if placed is None:
                    volume_try *= 0.7
            if placed is not None:
                site, volume_ml = attempt_site, volume_try
                break
        if placed is None:
            continue  # no room on this (tiny) grid
        mask = space.ellipsoid(placed, semi) & body
        if not mask.any():
            continue
        core = np.zeros(grid.shape, bool)
        if volume_ml >= _NECROSIS_MIN_ML and rng.random() < 0.6:
            core = space.ellipsoid(placed, tuple(s * rng.uniform(0.4, 0.6) for s in semi)) & mask
        number = len(lesions) + 1
        labels[mask] = LESION_LABEL_OFFSET + number
        taken |= space.ellipsoid(placed, tuple(s * 1.3 for s in semi))
        lesions.append({"name": f"lesion_{number}", "site": site, "mask": mask, "core": core})

    # --- CT numbers (HU) with texture ---
    tex_coarse = _smooth_noise(rng, grid, 24.0)
    tex_fine = _smooth_noise(rng, grid, 9.0)
    ct = np.full(grid.shape, -1000.0, dtype=np.float32)
    ct[body] = -100.0 + 10.0 * tex_fine[body]  # subcutaneous fat
    ct[soft] = 42.0 + 8.0 * tex_coarse[soft]
    visceral_fat = soft & (labels == ORGAN_LABELS["body"]) & (tex_fine + 0.6 * tex_coarse > 1.3)
    ct[visceral_fat] = -90.0 + 10.0 * tex_fine[visceral_fat]
    lung_hu = rng.uniform(-850, -750)
    lungs = np.isin(labels, (ORGAN_LABELS["lung_left"], ORGAN_LABELS["lung_right"]))  # lung lesions excluded
    ct[lungs] = np.clip(lung_hu + 35.0 * tex_fine[lungs], -880, -700)
    for name, hu in (("liver", rng.uniform(52, 66)), ("spleen", rng.uniform(42, 52))):
        m = labels == ORGAN_LABELS[name]
        ct[m] = hu + 6.0 * tex_fine[m]
    for side in ("left", "right"):
        m = labels == ORGAN_LABELS[f"kidney_{side}"]
        ct[m] = np.where(medullas[side][m], 28.0, 36.0) + 5.0 * tex_fine[m]
    ct[vessels] = 40.0
    ct[trabecular & body] = rng.uniform(250, 350) + 30.0 * tex_fine[trabecular & body]
    ct[bone_cortical & body] = rng.uniform(600, 700) + 30.0 * tex_fine[bone_cortical & body]
    liver_hu = float(np.median(ct[labels == ORGAN_LABELS["liver"]])) if (labels == 4).any() else 60.0
    for lesion in lesions:
        m, core = lesion["mask"], lesion["core"]
        base = {"liver": liver_hu - 25.0, "soft_tissue": 42.0, "lung": 35.0}[lesion["site"]]
        ct[m] = base + 8.0 * tex_fine[m]
        ct[core] = 15.0 + 5.0 * tex_fine[core]
    ct += rng.normal(0.0, 6.0, size=grid.shape).astype(np.float32) * body  # CT quantum noise
    ct_hu = np.clip(np.round(ct), -1024, 3071).astype(np.int16)
    density = hu_to_density(ct_hu)

    # --- uptake compartments and kinetics ---
    def texture(sigma: float) -> np.ndarray:
        angle = rng.uniform(0, 2 * np.pi)
        return np.exp(sigma * (np.cos(angle) * tex_coarse + np.sin(angle) * tex_fine)).astype(np.float32)

    def draw(kind: str):
        fraction, uptake, effective = _KINETICS[kind]
        return rng.uniform(*fraction), rng.uniform(*uptake), rng.uniform(*effective)

    names, shapes, fractions, uptakes, effectives = [], [], [], [], []

    def add(name: str, weight: np.ndarray, fraction: float, uptake_h: float, effective_h: float) -> None:
        total = float(weight.sum(dtype=np.float64))
        if total <= 0:
            return  # the organ lies outside this grid's field of view
        names.append(name)
        shapes.append((weight / total).astype(np.float32))
        fractions.append(fraction)
        uptakes.append(uptake_h)
        effectives.append(effective_h)

    in_lesion = labels > LESION_LABEL_OFFSET
    blood_weight = (vessels & ~in_lesion).astype(np.float32) + 0.05 * density * (body & ~vessels)
    add("blood", blood_weight, *draw("blood"))
    remainder = (labels == ORGAN_LABELS["body"]) & ~vessels
    tissue_factor = np.where(ct_hu < -50, 0.3, 1.0) * np.where(bone, 0.3, 1.0)
    add(
        "remainder",
        (remainder * tissue_factor * texture(0.3)).astype(np.float32) + 0.2 * lungs * density,
        *draw("remainder"),
    )
    for organ in ("liver", "spleen"):
        add(organ, (labels == ORGAN_LABELS[organ]) * texture(0.3), *draw(organ))
    f_kidney, up_kidney, eff_kidney = draw("kidney")
    cortex = np.zeros(grid.shape, np.float32)
    medulla = np.zeros(grid.shape, np.float32)
    for side in ("left", "right"):
        m = labels == ORGAN_LABELS[f"kidney_{side}"]
        side_factor = rng.uniform(0.85, 1.15)
        cortex += side_factor * (m & ~medullas[side])
        medulla += side_factor * (m & medullas[side])
    kidney_texture = texture(0.25)
    # cortex-to-medulla concentration about 3:1 for radiolabelled somatostatin analogues (reabsorption in proximal
    # tubules of the cortex: Konijnenberg et al., J Nucl Med 48:134 (2007))
    cortex_share = 3.0 * cortex.sum() / max(3.0 * cortex.sum() + medulla.sum(), 1e-6)
    add("kidney_cortex", cortex * kidney_texture, f_kidney * cortex_share, up_kidney, eff_kidney)
    add("kidney_medulla", medulla * kidney_texture, f_kidney * (1 - cortex_share), up_kidney, eff_kidney)
    add("red_marrow", (trabecular & body) * texture(0.2), *draw("red_marrow"))
    voxel_ml = grid.voxel_volume_ml
    for lesion in lesions:
        per_ml, up_lesion, eff_lesion = draw("lesion")
        viable = lesion["mask"] & ~lesion["core"]
        add(lesion["name"], viable * texture(0.4), per_ml * viable.sum() * voxel_ml, up_lesion, eff_lesion)
        if lesion["core"].any():
            relative = rng.uniform(*_NECROSIS_RELATIVE_UPTAKE)
            up_core = rng.uniform(*_NECROSIS_UPTAKE_HALF_LIFE_H)
            add(
                f"{lesion['name']}_necrosis",
                lesion["core"].astype(np.float32),
                relative * per_ml * lesion["core"].sum() * voxel_ml,
                up_core,
                eff_lesion,
            )

    names_by_label = {int(label): name_of(label) for label in np.unique(labels) if label != 0}

    z, y, x = (a.astype(np.float32) for a in grid.axes_mm())
    coords = {
        "z": ("z", z, {"units": "mm"}),
        "y": ("y", y, {"units": "mm"}),
        "x": ("x", x, {"units": "mm"}),
        "compartment": np.array(names),
    }
    physical_h = lu177_half_life_h()
    assert grid.origin_mm is not None  # Grid.__post_init__ fills it
    washouts = washout_half_life_for_effective_h(np.asarray(effectives))
    ds = xr.Dataset(
        {
            "ct_hu": (("z", "y", "x"), ct_hu, {"units": "HU"}),
            "density": (("z", "y", "x"), density, {"units": "g/cm3"}),
            "labels": (("z", "y", "x"), labels, {"units": "1", "names": names_by_label}),
            "compartments": (
                ("compartment", "z", "y", "x"),
                np.stack(shapes),
                {"units": "1", "long_name": "uptake shape of each kinetic compartment (sums to 1 over the volume)"},
            ),
            "fraction": (
                "compartment",
                np.asarray(fractions),
                {"units": "1", "long_name": "fraction of the administered activity taken up (model amplitude)"},
            ),
            "uptake_half_life_h": ("compartment", np.asarray(uptakes), {"units": "h"}),
            "washout_half_life_h": ("compartment", washouts, {"units": "h", "long_name": "biological washout"}),
            "effective_half_life_h": ("compartment", effective_half_life_h(washouts), {"units": "h"}),
        },
        coords=coords,
        attrs={
            "seed": int(seed),
            "sex": sex,
            "spacing_mm": list(grid.spacing_mm),
            "origin_mm": list(grid.origin_mm),
            "administered_activity_bq": ADMINISTERED_ACTIVITY_BQ,
            "nuclide": "Lu177",
            "physical_half_life_h": physical_h,
            "lesion_sites": {lesion["name"]: lesion["site"] for lesion in lesions},
            "synthetic": True,
        },
    )
    return ds


def activity_true(anatomy: xr.Dataset, hours) -> xr.DataArray:
    """True activity concentration at the given times: ``sum_c A_c(t) * compartments[c] / voxel volume``.

    Returns
    -------
    DataArray (timepoint, z, y, x) float32, Bq/mL; coordinate ``hours_post_injection`` (timepoint).
    """
    per_compartment = compartment_activity_bq(anatomy, hours)
    voxel_ml = float(np.prod(anatomy.attrs["spacing_mm"])) / 1000.0
    shapes = torch.from_numpy(np.ascontiguousarray(anatomy["compartments"].values))
    weights = torch.from_numpy((per_compartment.values / voxel_ml).astype(np.float32))
    values = torch.tensordot(weights, shapes, dims=([1], [0])).numpy()
    return xr.DataArray(
        values,
        dims=("timepoint", "z", "y", "x"),
        coords={
            "hours_post_injection": ("timepoint", per_compartment["hours_post_injection"].values),
            "z": anatomy["z"],
            "y": anatomy["y"],
            "x": anatomy["x"],
        },
        attrs={"units": "Bq/mL", "long_name": "true activity concentration"},
    )
