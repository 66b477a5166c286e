"""Dose voxel kernels (voxel S-values): generation with our Monte Carlo engine, disk cache, shipped data, importers.

A kernel ``K[dz, dy, dx]`` is the mean dose-rate in the voxel at offset (dz, dy, dx) from a source voxel holding a
uniformly distributed activity, per unit activity: mGy/(MBq s) (= 1e-9 Gy per decay), in homogeneous soft tissue of
1.04 g/cm3. Arrays are (z, y, x) with odd sizes and the source voxel at the centre.

How a kernel is made (:func:`voxel_kernel`): ``run_monte_carlo`` on a grid of exactly the kernel's shape, density
1.04 g/cm3 everywhere, 1 MBq in the centre voxel, emissions "electron" (kind "beta": beta, conversion and Auger
electrons) or "photon" (kind "photon": gammas and x-rays). Energy carried out of the grid escapes: it is not in the
kernel (the engine tallies it as ``energy_escaped_j``), so a kernel is the infinite-medium kernel minus the energy
that would be scattered back from beyond its edges, and the DVK drops dose at offsets beyond it. Kind "total" is the
sum of the "beta" and "photon" kernels. The raw tally is then averaged over the symmetry group of the grid (the 8
reflections through the centre voxel, times the axis permutations that map the spacing and shape onto themselves:
x<->y for square in-plane voxels, all 6 for cubic grids), i.e. up to 48 equivalent copies of every voxel are averaged;
this cuts the statistical noise by up to sqrt(48) off the axes (sqrt(8) for a (z, y=x) grid) and makes the kernel
exactly symmetric.

Lookup order: the disk cache (``$COHORT_DOSIMETRY_CACHE`` or ``~/.cache/cohort-dosimetry/kernels``), keyed by
(nuclide, spacing, shape, kind, n_decays, ENGINE_VERSION); then the kernels shipped in ``kernel_data/`` (only on an
exact key match, engine version included); then a fresh Monte Carlo run, written atomically to the cache.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import cast

import numpy as np

from cohort_dosimetry.constants import COMPACT_SPACING_MM, J_PER_MEV, KERNEL_TISSUE_DENSITY_G_CM3

KINDS = ("beta", "photon", "total")
#: Emissions the engine transports for each generated kind (architecture.md: "electron" = beta + IC + Auger).
_EMISSIONS = {"beta": ("electron",), "photon": ("photon",)}
#: Kinds :func:`generate_kernel` also makes on request (never shipped, cached or summed into "total"):
#: "beta_spectrum" = the ICRP-107 beta spectrum alone, without conversion and Auger electrons, to compare like with
#: like against published tables whose source is the beta spectrum only (cohort_dosimetry.validation).
_GENERATED_EMISSIONS = {**_EMISSIONS, "beta_spectrum": ("beta",)}
#: Decays per generated kernel kind when none are asked for. On the shipped (3, 3.91, 3.91) mm grid they give the
#: symmetrised beta kernel 0.04 % relative uncertainty at the centre and < 0.5 % at the face neighbours (where
#: nearly all its dose is), and the photon kernel 0.2-0.9 % at the centre and its neighbours, 7 % per voxel at 50 mm
#: and 21 % at 100 mm, where a voxel gets 5e-4 and 8e-5 of the photon dose of the centre (kernel_data/index.json
#: holds the measured values). A DVK sums many kernel voxels for every target voxel, which averages that noise.
DEFAULT_KERNEL_DECAYS = {"beta": 2_000_000, "photon": 10_000_000}
#: Default DVK kernel reach: +-100 mm (about 1.4 mean free paths of the 208 keV photon in soft tissue, where the
#: primary fluence has fallen to ~25 %), at most 99 voxels per axis (the size Li et al. 2022 used).
DEFAULT_KERNEL_HALF_WIDTH_MM = 100.0
MAX_DEFAULT_KERNEL_SIZE = 99
#: Seed of every kernel run: kernels are reproducible on a given device.
_KERNEL_SEED = 0
#: Source activity of a kernel run; the kernel is normalised by it, so only its presence matters.
_SOURCE_MBQ = 1.0
_DATA_DIR = Path(__file__).parent / "kernel_data"


def default_kernel_shape(spacing_mm) -> tuple[int, ...]:
    """Odd (z, y, x) kernel size reaching +-100 mm from the source, capped at 99 voxels per axis."""
    return tuple(
        min(2 * int(np.ceil(DEFAULT_KERNEL_HALF_WIDTH_MM / s - 1e-9)) + 1, MAX_DEFAULT_KERNEL_SIZE)
        for s in _spacing(spacing_mm)
    )


def voxel_kernel(
    nuclide: str, spacing_mm, shape, kind: str = "total", n_decays: int | None = None, device=None
) -> np.ndarray:
    """Soft-tissue dose voxel kernel of a nuclide, from the cache, the shipped data or a Monte Carlo run.

    Parameters
    ----------
    nuclide : e.g. "Lu177".
    spacing_mm : (z, y, x) voxel size, mm.
    shape : odd int (cube) or odd (z, y, x) 3-tuple: the kernel's size and the Monte Carlo grid's size.
    kind : "beta" (all electrons: beta, internal conversion, Auger), "photon" (gammas, x-rays) or "total" (sum).
    n_decays : decays simulated per generated kernel kind (default :data:`DEFAULT_KERNEL_DECAYS`); part of the
        cache key.
    device : where the Monte Carlo runs if a kernel must be generated (None: CUDA if available, else CPU).

    Returns
    -------
    float32 array (z, y, x) = ``shape``, mGy/(MBq s), source voxel at the centre, symmetrised (module docstring).
    """
    if kind not in KINDS:
        raise ValueError(f"kernel kind must be one of {KINDS}, got {kind!r}")
    if kind == "total":
        return voxel_kernel(nuclide, spacing_mm, shape, "beta", n_decays, device) + voxel_kernel(
            nuclide, spacing_mm, shape, "photon", n_decays, device
        )
    key = _Key.make(nuclide, spacing_mm, shape, kind, n_decays)
    path = _cache_dir() / f"{key.stem}.npy"
    if path.exists():
        return _read_npy(path, key.shape)
    shipped = _shipped_kernel(key)
    if shipped is not None:
        return shipped
    kernel, info = generate_kernel(key.nuclide, key.spacing_mm, key.shape, kind, key.n_decays, device)
    _write_atomic(path, kernel, info)
    return kernel


def generate_kernel(
    nuclide: str,
    spacing_mm,
    shape,
    kind: str,
    n_decays: int,
    device=None,
    density_g_cm3: float = KERNEL_TISSUE_DENSITY_G_CM3,
) -> tuple[np.ndarray, dict]:
    """Run the engine for one kernel (no cache). Returns (kernel float32 (z, y, x) mGy/(MBq s), provenance dict).

    kind: "beta" (all electrons), "photon" or "beta_spectrum" (the beta spectrum alone: see ``_GENERATED_EMISSIONS``).
    The provenance holds the key, the engine version, the energy bookkeeping per decay (MeV) and the relative
    statistical uncertainty (1 sigma) of the symmetrised kernel at the centre and at its face, edge and corner
    neighbours. ``density_g_cm3``: the soft-tissue medium's density (the kernels the package uses are at the default,
    1.04 g/cm3; another density serves comparisons with published tables).
    """
    kernel, _, info = _run_kernel(nuclide, spacing_mm, shape, kind, n_decays, device, density_g_cm3)
    return kernel, info


def _run_kernel(nuclide, spacing_mm, shape, kind, n_decays, device, density_g_cm3=KERNEL_TISSUE_DENSITY_G_CM3):
    """(kernel float32, its 1-sigma statistical uncertainty float64 (z, y, x) mGy/(MBq s), provenance dict)."""
    from ._montecarlo import ENGINE_VERSION, run_monte_carlo
    from ._nuclide import nuclide as load_nuclide

    nuclide = load_nuclide(nuclide).name
    if kind not in _GENERATED_EMISSIONS:
        raise ValueError(f"generated kernel kind must be one of {tuple(_GENERATED_EMISSIONS)}, got {kind!r}")
    spacing = _spacing(spacing_mm)
    shape = _odd_shape(shape)
    activity = np.zeros(shape, dtype=np.float32)
    centre = tuple(s // 2 for s in shape)
    activity[centre] = _SOURCE_MBQ * 1e6
    density = np.full(shape, density_g_cm3, dtype=np.float32)
    result = run_monte_carlo(
        activity,
        density,
        spacing,
        nuclide=nuclide,
        n_decays=int(n_decays),
        seed=_KERNEL_SEED,
        device=device,
        emissions=_GENERATED_EMISSIONS[kind],
    )
    # Gy/s per MBq -> mGy/(MBq s)
    raw = np.asarray(result.dose_rate_gy_s, dtype=np.float64) * 1e3 / _SOURCE_MBQ
    # The engine gives NaN uncertainty where no dose was tallied: no dose, no spread.
    sigma = np.where(raw > 0, raw * np.nan_to_num(np.asarray(result.relative_uncertainty, dtype=np.float64)), 0.0)
    kernel = symmetrise(raw, spacing)
    # Mean of |orbit| (nearly independent) tallies: variance = mean variance over the orbit / |orbit|.
    sigma_sym = np.sqrt(symmetrise(sigma**2, spacing) / _orbit_sizes(shape, spacing))
    rel = np.divide(sigma_sym, kernel, out=np.zeros_like(kernel), where=kernel > 0)
    decays_per_s = _SOURCE_MBQ * 1e6
    info = {
        "nuclide": nuclide,
        "spacing_mm": list(spacing),
        "shape": list(shape),
        "kind": kind,
        "n_decays": int(n_decays),
        "engine_version": ENGINE_VERSION,
        "seed": _KERNEL_SEED,
        "medium": f"homogeneous soft tissue {density_g_cm3} g/cm3",
        "units": "mGy/(MBq s)",
        "symmetrised_over": _symmetry_description(shape, spacing),
        "energy_per_decay_mev": {
            "emitted": result.energy_emitted_j / decays_per_s / J_PER_MEV,
            "deposited_in_grid": result.energy_deposited_j / decays_per_s / J_PER_MEV,
            "escaped_from_grid": result.energy_escaped_j / decays_per_s / J_PER_MEV,
        },
        "relative_uncertainty": {
            name: float(rel[tuple(c + o for c, o in zip(centre, off))])
            for name, off in {
                **_NEIGHBOURS,
                "x_half_way": (0, 0, shape[2] // 4),
                "x_edge": (0, 0, shape[2] // 2),
            }.items()
            if all(0 <= c + o < s for c, o, s in zip(centre, off, shape))
        },
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return kernel.astype(np.float32), sigma_sym, info


_NEIGHBOURS = {"centre": (0, 0, 0), "face_x": (0, 0, 1), "face_z": (1, 0, 0), "edge_yx": (0, 1, 1), "corner": (1, 1, 1)}


def symmetrise(kernel: np.ndarray, spacing_mm) -> np.ndarray:
    """Average a centred (z, y, x) kernel over the symmetry group of its grid (reflections, allowed permutations)."""
    k = np.asarray(kernel, dtype=np.float64)
    for axis in range(3):
        k = 0.5 * (k + np.flip(k, axis=axis))
    perms = _grid_permutations(k.shape, _spacing(spacing_mm))
    return cast(np.ndarray, sum(np.transpose(k, p) for p in perms) / len(perms))  # perms holds the identity at least


def _grid_permutations(shape, spacing) -> list[tuple[int, ...]]:
    """Axis permutations p with shape[p[i]] == shape[i] and spacing[p[i]] == spacing[i] (the grid's own)."""
    return [
        p
        for p in itertools.permutations(range(3))
        if all(shape[p[i]] == shape[i] and np.isclose(spacing[p[i]], spacing[i], rtol=1e-9) for i in range(3))
    ]


def _orbit_sizes(shape, spacing) -> np.ndarray:
    """Number of distinct voxels each voxel is averaged with by :func:`symmetrise` (itself included)."""
    offsets = np.abs(np.indices(shape) - np.array([s // 2 for s in shape])[:, None, None, None])
    signs = 2.0 ** np.count_nonzero(offsets, axis=0)
    images = np.stack([offsets[list(p)] for p in _grid_permutations(shape, _spacing(spacing))])  # (P, 3, z, y, x)
    distinct = np.ones(shape)
    for i in range(1, len(images)):
        distinct += np.all([np.any(images[i] != images[j], axis=0) for j in range(i)], axis=0)
    return signs * distinct


def _symmetry_description(shape, spacing) -> str:
    perms = _grid_permutations(shape, spacing)
    swaps = ["".join("zyx"[i] for i in p) for p in perms]
    return f"8 reflections x {len(perms)} axis orders ({', '.join(swaps)}) = {8 * len(perms)} images"


# ------------------------------------------------------------------------------------------------- cache / shipped
class _Key:
    """Cache key of one generated kernel kind."""

    def __init__(self, nuclide, spacing_mm, shape, kind, n_decays, engine_version):
        self.nuclide, self.spacing_mm, self.shape = nuclide, spacing_mm, shape
        self.kind, self.n_decays, self.engine_version = kind, n_decays, engine_version

    @classmethod
    def make(cls, nuclide, spacing_mm, shape, kind, n_decays):
        from ._montecarlo import ENGINE_VERSION
        from ._nuclide import nuclide as load_nuclide

        n = DEFAULT_KERNEL_DECAYS[kind] if n_decays is None else int(n_decays)
        if n <= 0:
            raise ValueError(f"n_decays must be positive, got {n_decays!r}")
        return cls(load_nuclide(nuclide).name, _spacing(spacing_mm), _odd_shape(shape), kind, n, str(ENGINE_VERSION))

    def matches(self, entry: dict) -> bool:
        return (
            entry["nuclide"] == self.nuclide
            and entry["kind"] == self.kind
            and tuple(entry["shape"]) == self.shape
            and int(entry["n_decays"]) == self.n_decays
            and str(entry["engine_version"]) == self.engine_version
            and np.allclose(entry["spacing_mm"], self.spacing_mm, rtol=1e-9, atol=0)
        )

    @property
    def stem(self) -> str:
        spacing = "x".join(f"{s:g}" for s in self.spacing_mm)
        shape = "x".join(str(s) for s in self.shape)
        engine = re.sub(r"[^A-Za-z0-9.]+", "_", self.engine_version)
        return f"{self.nuclide}_{self.kind}_{spacing}mm_{shape}_{self.n_decays}decays_engine{engine}"


def _cache_dir() -> Path:
    root = os.environ.get("COHORT_DOSIMETRY_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "cohort-dosimetry" / "kernels"


def _write_atomic(path: Path, kernel: np.ndarray, info: dict) -> None:
    """Write ``path`` (.npy) and its ``.json`` provenance so that readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, write in (
        (path.with_suffix(".json"), lambda f: f.write(json.dumps(info, indent=1).encode())),
        (path, lambda f: np.save(f, kernel)),
    ):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _read_npy(path: Path, shape) -> np.ndarray:
    kernel = np.load(path)
    if kernel.shape != tuple(shape):
        raise ValueError(f"cached kernel {path} has shape {kernel.shape}, expected {tuple(shape)}; delete it")
    return kernel.astype(np.float32, copy=False)


def shipped_kernels() -> list[dict]:
    """Entries of ``kernel_data/index.json``: how every kernel shipped with the package was made."""
    index = _DATA_DIR / "index.json"
    if not index.exists():
        return []
    return json.loads(index.read_text())["kernels"]


def _shipped_kernel(key: _Key) -> np.ndarray | None:
    for entry in shipped_kernels():
        if key.matches(entry):
            # Shipped as the (z >= 0, y >= 0, x >= 0) octant of the symmetrised kernel.
            return expand_octant(np.load(_DATA_DIR / entry["file"])).astype(np.float32)
    return None


def expand_octant(octant: np.ndarray) -> np.ndarray:
    """(a, b, c) octant of offsets >= 0 -> (2a-1, 2b-1, 2c-1) kernel by reflection through the centre voxel."""
    full = np.asarray(octant)
    for axis in range(3):
        full = np.concatenate([np.flip(np.delete(full, 0, axis=axis), axis=axis), full], axis=axis)
    return full


# ------------------------------------------------------------------------------------------------- importers
def load_kernel_npy_pair(beta_path, photon_path, spacing_mm, nuclide: str = "Lu177") -> np.ndarray:
    """Total kernel from an external pair of .npy kernels (beta, photon), each (z, y, x) in mGy/(MBq s).

    The two may differ in size (Li et al. used a 9^3 beta and a 99^3 photon kernel): the smaller is zero-padded about
    its centre and they are summed. Units cannot be read from a .npy file, so each kernel is checked against energy
    conservation instead: ``sum(K) x voxel mass`` (the energy it deposits per decay) must not exceed what
    ``nuclide`` emits as electrons (beta kernel) or photons (photon kernel); a kernel in uGy or per Bq fails.

    Returns float32 (z, y, x) mGy/(MBq s), odd shape, source at the centre.
    """
    spacing = _spacing(spacing_mm)
    kernels = []
    for path, emitted in ((beta_path, "electron"), (photon_path, "photon")):
        try:
            k = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read as a .npy array ({err})") from err
        kernels.append(_checked_external(k, path, spacing, nuclide, emitted))
    shape = tuple(max(a, b) for a, b in zip(kernels[0].shape, kernels[1].shape))
    total = np.zeros(shape, dtype=np.float64)
    for k in kernels:
        total[tuple(slice((s - n) // 2, (s - n) // 2 + n) for s, n in zip(shape, k.shape))] += k
    return total.astype(np.float32)


_UNIT = re.compile(
    r"(?P<dose>[mu\u00b5]?)gy\s*/\s*\(?\s*(?P<act>[kmg]?)bq"
    r"\s*(?:[*\u00b7.\-/]|\s)\s*(?P<time>s|sec|h)\b",
    re.IGNORECASE,
)
_DOSE_IN_MGY = {"": 1e3, "m": 1.0, "u": 1e-3}
_BQ_PER_MBQ = {"": 1e6, "k": 1e3, "m": 1.0, "g": 1e-3}
_PER_S = {"s": 1.0, "sec": 1.0, "h": 1.0 / 3600.0}


def load_kernel_octant_text(path, spacing_mm, nuclide: str = "Lu177") -> np.ndarray:
    """Kernel from the octant text format of published voxel S-value tables (e.g. Lanconelli et al. 2012).

    Format: header lines (any text) that must declare the units somewhere, e.g. ``# units: mGy/(MBq s)`` or a
    column header ``i j k S(mGy/MBq s)``; accepted are [m|u]Gy / ([k|M|G]Bq s|h). Then one line per voxel of one
    octant: ``i j k S`` with integer offsets i, j, k >= 0 along (z, y, x) (published tables are for cubic voxels,
    where the order does not matter) covering the full box 0..I, 0..J, 0..K once each. Blank lines and lines
    starting with ``#`` after the data are ignored. The octant is expanded by reflection to (2I+1, 2J+1, 2K+1) and
    checked against energy conservation like :func:`load_kernel_npy_pair` (against the nuclide's total emission).

    Returns float32 (z, y, x) mGy/(MBq s).
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the kernel table ({err})") from err
    factor = None
    rows: dict[tuple[int, int, int], float] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        fields = text.split()
        if not rows and not _is_number(fields[0]):
            unit = _UNIT.search(text)
            if unit and factor is None:
                # Case is dropped: "M" of MBq is mega (no table is per mBq), "m" of mGy is milli.
                factor = (
                    _DOSE_IN_MGY[unit["dose"].lower().replace("\u00b5", "u")]
                    * _BQ_PER_MBQ[unit["act"].lower()]
                    * _PER_S[unit["time"].lower()]
                )
            continue
        if text.startswith("#"):
            continue
        if len(fields) != 4:
            raise ValueError(f"{path}:{number}: expected 4 columns 'i j k S', got {len(fields)}: {text!r}")
        try:
            i, j, k = (int(f) for f in fields[:3])
            value = float(fields[3])
        except ValueError:
            raise ValueError(f"{path}:{number}: expected integers i j k and a number S, got {text!r}") from None
        if min(i, j, k) < 0:
            raise ValueError(f"{path}:{number}: offsets must be >= 0 in an octant table, got ({i}, {j}, {k})")
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{path}:{number}: S-value must be finite and >= 0, got {fields[3]!r}")
        if (i, j, k) in rows:
            raise ValueError(f"{path}:{number}: offset ({i}, {j}, {k}) appears twice")
        rows[(i, j, k)] = value
    if factor is None:
        raise ValueError(f"{path}: declares no units; add a header line such as '# units: mGy/(MBq s)'")
    if not rows:
        raise ValueError(f"{path}: holds no 'i j k S' data lines")
    size = tuple(max(key[a] for key in rows) + 1 for a in range(3))
    octant = np.full(size, np.nan)
    for key, value in rows.items():
        octant[key] = value
    if np.isnan(octant).any():
        missing = tuple(int(v) for v in np.argwhere(np.isnan(octant))[0])
        raise ValueError(
            f"{path}: the octant 0..{size[0] - 1} x 0..{size[1] - 1} x 0..{size[2] - 1} is incomplete: "
            f"{int(np.isnan(octant).sum())} offsets missing, the first ({missing[0]}, {missing[1]}, "
            f"{missing[2]})"
        )
    kernel = expand_octant(octant * factor)
    return _checked_external(kernel, path, _spacing(spacing_mm), nuclide, "total").astype(np.float32)


def _checked_external(kernel, path, spacing, nuclide_name: str, emitted: str) -> np.ndarray:
    from ._nuclide import nuclide

    k = np.asarray(kernel)
    if k.ndim != 3 or any(s % 2 == 0 for s in k.shape):
        raise ValueError(
            f"{path}: a kernel must be 3-D (z, y, x) with odd sizes (source at the centre), got shape {k.shape}"
        )
    if not np.issubdtype(k.dtype, np.floating) and not np.issubdtype(k.dtype, np.integer):
        raise ValueError(f"{path}: kernel values must be numeric, got dtype {k.dtype}")
    k = k.astype(np.float64)
    if not np.isfinite(k).all() or (k < 0).any():
        raise ValueError(f"{path}: kernel values must be finite and >= 0 (mGy/(MBq s))")
    voxel_mass_kg = np.prod(spacing) * 1e-3 * KERNEL_TISSUE_DENSITY_G_CM3 * 1e-3  # mm3 -> cm3, g -> kg
    deposited_mev = k.sum() * 1e-9 * voxel_mass_kg / J_PER_MEV  # mGy/(MBq s) = 1e-9 Gy per decay
    available_mev = nuclide(nuclide_name).energy_per_decay_mev(emitted)
    # 2 % margin for statistical noise in the kernel and for a different tissue composition.
    if deposited_mev > 1.02 * available_mev:
        raise ValueError(
            f"{path}: with {spacing} mm voxels of {KERNEL_TISSUE_DENSITY_G_CM3} g/cm3 this kernel deposits "
            f"{deposited_mev:.4g} MeV per decay, more than the {available_mev:.4g} MeV {nuclide_name} emits "
            f"({emitted}); check that it is in mGy/(MBq s) and that spacing_mm is its voxel size"
        )
    return k


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _spacing(spacing_mm) -> tuple[float, float, float]:
    spacing = tuple(float(s) for s in np.asarray(spacing_mm, dtype=float).ravel())
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be three positive finite (z, y, x) sizes in mm, got {spacing_mm!r}")
    return spacing


def _odd_shape(shape) -> tuple[int, ...]:
    dims = (shape,) * 3 if np.ndim(shape) == 0 else tuple(shape)
    if len(dims) != 3 or not all(int(d) == d and d >= 1 and int(d) % 2 == 1 for d in dims):
        raise ValueError(f"kernel shape must be an odd int or three odd ints (z, y, x), got {shape!r}")
    return tuple(int(d) for d in dims)


def _build_shipped_kernels() -> None:
    """Regenerate ``kernel_data/`` (run ``python -m cohort_dosimetry.physics._kernels``; takes minutes)."""
    spacing = COMPACT_SPACING_MM  # the compact virtual-patient grid of the demo
    shape = default_kernel_shape(spacing)
    entries = []
    _DATA_DIR.mkdir(exist_ok=True)
    for kind in _EMISSIONS:
        kernel, info = generate_kernel("Lu177", spacing, shape, kind, DEFAULT_KERNEL_DECAYS[kind])
        name = f"Lu177_{kind}_{'x'.join(f'{s:g}' for s in spacing)}mm_{'x'.join(map(str, shape))}_octant.npy"
        np.save(_DATA_DIR / name, kernel[tuple(slice(s // 2, None) for s in shape)])
        entries.append(
            {"file": name, "storage": "octant z,y,x >= 0 of the symmetrised kernel; expand by reflection", **info}
        )
    (_DATA_DIR / "index.json").write_text(
        json.dumps(
            {
                "description": "Lu-177 soft-tissue dose voxel kernels shipped with cohort-dosimetry, generated by "
                "cohort_dosimetry.physics._kernels._build_shipped_kernels with the package's own Monte Carlo "
                "engine: 1 MBq uniformly in the centre voxel of a grid of the kernel's shape, homogeneous soft "
                "tissue 1.04 g/cm3; energy carried out of the grid is not in the kernel (escaped_from_grid); "
                "the tally is averaged over the grid's symmetries (symmetrised_over). Total = beta + photon. "
                "relative_uncertainty: 1 sigma of the symmetrised kernel at the named voxels.",
                "kernels": entries,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    _build_shipped_kernels()
