"""Voxel statistics of dose-rate maps: per-VOI metrics, dose-rate volume histograms, errors and agreement.

Definitions follow Li et al., DblurDoseNet, Med Phys 49:1216 (2022) (docs/physics.md):

- ``DRx``: the minimum dose-rate received by x % of the VOI's volume (DR10 high, DR90 low). Every voxel of a VOI has
  the same volume, so volume fractions are voxel-count fractions. With the VOI's ``n`` voxel values sorted in
  descending order ``d_1 >= d_2 >= ... >= d_n``, ``DRx = d_k`` with ``k = ceil(x * n / 100)`` (at least 1): the
  coldest voxel among the hottest x % -- the largest value ``D`` such that at least x % of the voxels receive ``>= D``.
  No interpolation between voxels; ``DRx`` is always a value some voxel has. It equals
  ``-numpy.quantile(-d, x / 100, method="inverted_cdf")``.
- median: numpy's (the mean of the two middle values when ``n`` is even).
- ``nrmse = sqrt(mean((est - ref)^2)) / sqrt(mean(ref^2))`` over the VOI's voxels.
- ``mean_error = |mean(est) - mean(ref)| / mean(ref)`` (a fraction, not %).
- ensemble noise over M noise realisations: ``100 * sqrt(mean_j var_m) / mean_j mean_m`` in %, ``var_m`` the
  unbiased (ddof=1) variance over realisations of voxel j.
- Pearson R^2 and Lin's concordance correlation coefficient (Lin, Biometrics 45:255, 1989) with population (1/n)
  moments: ``ccc = 2 s_ab / (s_a^2 + s_b^2 + (mean_a - mean_b)^2)``.

Policies (the same in every function of this module):

- Labels: integer map, 0 = outside every VOI; ``names`` maps label value -> VOI name (keys may be ints or the strings
  that JSON/zarr attributes turn them into). A label present in the map without a name, or a negative label, is an
  error. A named VOI with no voxel gets a row with ``volume_ml = 0`` and NaN statistics. Where VOIs overlap, the map
  holds regions and ``vois`` maps VOI name -> region values (:mod:`cohort_dosimetry.vocabulary`, section regions):
  every VOI's statistics are over all its voxels, so a voxel in several VOIs counts in each.
- Non-finite dose-rates (NaN, inf) inside a VOI make that VOI's statistics NaN (its volume still counts every voxel)
  and raise a ``NonFiniteDoseRateWarning`` naming the VOI and the voxel count: never silently dropped.
- The whole-array functions (:func:`nrmse`, :func:`mean_error`, ...) raise ``ValueError`` for an empty selection and
  let NaN propagate, like numpy.

Arrays are (z, y, x); dose-rates in Gy/s (any unit works: statistics carry the input's unit); spacing in mm.
All per-VOI functions make one pass over the volume for all VOIs, and
accept numpy, dask or xarray arrays (a lazy array is loaded once, whole; call them one scan at a time). The voxels
are grouped by VOI once per label map (:class:`VoiIndex`, a stable argsort of the VOI labels, reused for every map
of the scan); sums are bincounts and order statistics come from sorting each VOI's contiguous segment.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from cohort_dosimetry.vocabulary import label_table, voi_regions

#: The x of the DRx metrics reported per VOI (Li et al. 2022).
DR_PERCENTS = (10, 30, 70, 90)

#: Columns of :func:`voi_metrics`, in order.
VOI_METRIC_COLUMNS = ("voi", "volume_ml", "mean", "median", "max", *(f"dr{x}" for x in DR_PERCENTS))


class NonFiniteDoseRateWarning(RuntimeWarning):
    """A VOI holds NaN or infinite dose-rates; its statistics are reported as NaN."""


def _as_numpy(array) -> np.ndarray:
    """Load a numpy, dask or xarray array (computing it if lazy)."""
    if isinstance(array, xr.DataArray):
        array = array.data
    return np.asarray(array)


class VoiIndex:
    """The voxels of every VOI of one label map, gathered once and reused for several dose-rate maps of that scan.

    ``labels``: integer array (z, y, x); ``names``: {label: VOI name}; ``vois``: {VOI name: [label values]} where
    VOIs overlap (a map of regions, :mod:`cohort_dosimetry.vocabulary`), None when every name is a VOI of one label.
    Attributes: ``names`` (VOI names: in label order, or in the order of ``vois``), ``regions`` {VOI name: label
    values}, ``n_voxels`` (per VOI, int64), ``shape``, and ``labels`` (the label value of each VOI; None for a map of
    regions).
    """

    regions: dict[str, tuple[int, ...]]
    labels: np.ndarray | None

    def __init__(self, labels, names: Mapping, vois: Mapping | None = None):
        label_map = _as_numpy(labels)
        if not np.issubdtype(label_map.dtype, np.integer):
            raise ValueError(f"labels must be an integer map, got dtype {label_map.dtype}")
        voi_names = label_table(names, unique_names=vois is None)
        flat = label_map.ravel()
        if flat.size and flat.min() < 0:
            raise ValueError(f"labels contain negative values (min {flat.min()})")
        top = max(int(flat.max()) if flat.size else 0, max(voi_names, default=0))
        counts = np.bincount(flat, minlength=top + 1)
        unnamed = sorted(set((np.flatnonzero(counts[1:]) + 1).tolist()) - set(voi_names))
        if unnamed:
            raise ValueError(f"labels {unnamed} occur in the label map but have no VOI name")
        self.shape = label_map.shape
        if vois is not None:
            self._index_regions(flat, counts, voi_names, vois)
            return
        self.regions = {name: (label,) for label, name in voi_names.items()}
        self.labels = np.array(list(voi_names), dtype=np.int64)
        self.names = list(voi_names.values())
        self.n_voxels = counts[self.labels].astype(np.int64)
        # Dense VOI position 0..n_voi-1 of every VOI voxel, so per-VOI sums are bincounts of length n_voi.
        position = np.zeros(top + 1, dtype=np.int64)
        position[self.labels] = np.arange(len(self.labels))
        voxels = np.flatnonzero(flat)
        voxel_position = position[flat[voxels]]
        # Voxels grouped by VOI (stable: flat order within a VOI): VOI i is the segment [start_i, start_i + n_i).
        grouped = np.argsort(voxel_position, kind="stable")
        self._voxels = voxels[grouped]
        self._position = voxel_position[grouped]
        self._start = np.concatenate([[0], np.cumsum(self.n_voxels)[:-1]]).astype(np.int64)

    def _index_regions(self, flat: np.ndarray, counts: np.ndarray, region_names: dict[int, str], vois: Mapping):
        self.regions = voi_regions(region_names, vois)
        self.labels = None
        self.names = list(self.regions)
        # Voxels grouped by region (stable: flat order within a region); a VOI is the concatenation of its regions.
        voxels = np.flatnonzero(flat)
        by_region = voxels[np.argsort(flat[voxels], kind="stable")]
        region_start = np.concatenate([[0], np.cumsum(counts[1:])])  # region r: by_region[start[r-1]:start[r]]
        segments = [
            [by_region[region_start[r - 1] : region_start[r]] for r in regions] for regions in self.regions.values()
        ]
        self.n_voxels = np.array([sum(len(part) for part in parts) for parts in segments], dtype=np.int64)
        self._voxels = np.concatenate([part for parts in segments for part in parts] or [np.zeros(0, np.int64)])
        self._position = np.repeat(np.arange(len(self.names), dtype=np.int64), self.n_voxels)
        self._start = np.concatenate([[0], np.cumsum(self.n_voxels)[:-1]]).astype(np.int64)

    @classmethod
    def from_labels(cls, labels) -> VoiIndex:
        """The index of a ``labels`` DataArray as ``Cohort.scan`` returns it: its attrs ``names`` and, where VOIs
        overlap, ``vois``."""
        return cls(labels, labels.attrs["names"], labels.attrs.get("vois"))

    def mask(self, names: Sequence[str]) -> np.ndarray:
        """Boolean (z, y, x): the voxels of any of the VOIs ``names``."""
        out = np.zeros(int(np.prod(self.shape)), dtype=bool)
        for i, name in enumerate(self.names):
            if name in names:
                out[self._voxels[self._start[i] : self._start[i] + self.n_voxels[i]]] = True
        return out.reshape(self.shape)

    def values(self, dose_rate, what: str = "dose-rate map") -> np.ndarray:
        """The VOI voxels' values of ``dose_rate`` (same shape as the labels) as float64, grouped by VOI."""
        array = _as_numpy(dose_rate)
        if array.shape != self.shape:
            raise ValueError(f"{what} has shape {array.shape} but the label map has shape {self.shape}")
        return array.ravel()[self._voxels].astype(np.float64)

    def sums(self, weights: np.ndarray) -> np.ndarray:
        """Per-VOI sums of per-voxel ``weights`` (grouped as :meth:`values` returns them)."""
        return np.bincount(self._position, weights=weights, minlength=len(self.names))

    def broadcast(self, per_voi: np.ndarray) -> np.ndarray:
        """A per-VOI quantity repeated for every VOI voxel (in the order of :meth:`values`)."""
        return per_voi[self._position]

    def nonfinite_vois(self, values: np.ndarray, what: str) -> np.ndarray:
        """Boolean per VOI: holds a non-finite value. Warns naming those VOIs."""
        n_bad = self.sums((~np.isfinite(values)).astype(np.float64)).astype(np.int64)
        bad = n_bad > 0
        if bad.any():
            listing = ", ".join(f"{name} ({n} voxels)" for name, n in zip(self.names, n_bad) if n)
            warnings.warn(
                f"{what}: non-finite values in VOI {listing}; their statistics are NaN",
                NonFiniteDoseRateWarning,
                stacklevel=3,
            )
        return bad

    def sorted_values(self, values: np.ndarray) -> np.ndarray:
        """Values (as :meth:`values` returns them) sorted ascending within each VOI's segment (NaN last)."""
        ordered = values.copy()
        for start, n in zip(self._start, self.n_voxels):  # contiguous segments, not whole-volume masks
            ordered[start : start + n].sort()
        return ordered


def _order_statistic(sorted_values: np.ndarray, start: np.ndarray, index: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.full(len(start), np.nan)
    out[valid] = sorted_values[start[valid] + index[valid]]
    return out


def voi_metrics(
    dose_rate,
    labels,
    names: Mapping,
    spacing_mm: Sequence[float],
    *,
    index: VoiIndex | None = None,
    what: str = "dose-rate map",
) -> pd.DataFrame:
    """Per-VOI volume and dose-rate statistics of one map, all VOIs in one pass.

    ``dose_rate`` (z, y, x) (Gy/s), ``labels`` (z, y, x) int, ``names`` {label: VOI name}, ``spacing_mm`` (z, y, x).
    Returns one row per named VOI, in label order, with columns ``voi, volume_ml, mean, median, max, dr10, dr30,
    dr70, dr90`` (statistics in the unit of ``dose_rate``). ``index``: a :class:`VoiIndex` of the scan's labels, to
    reuse for several maps of a scan (``labels`` and ``names`` are then not read); ``what`` names the map in errors
    and warnings. See the module docstring for the
    DRx convention, empty VOIs (NaN row, volume 0) and non-finite values (NaN row and a warning).
    """
    index = index or VoiIndex(labels, names)
    values = index.values(dose_rate, what)
    n = index.n_voxels
    bad = index.nonfinite_vois(values, what)
    valid = (n > 0) & ~bad
    ordered = index.sorted_values(values)
    start = index._start
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = index.sums(values) / n
    mean[~valid] = np.nan
    median = 0.5 * (
        _order_statistic(ordered, start, (n - 1) // 2, valid) + _order_statistic(ordered, start, n // 2, valid)
    )
    row = {
        "voi": index.names,
        "volume_ml": n * float(np.prod(spacing_mm)) / 1000.0,
        "mean": mean,
        "median": median,
        "max": _order_statistic(ordered, start, n - 1, valid),
    }
    for x in DR_PERCENTS:
        k = (x * n + 99) // 100  # ceil(x n / 100) in exact integer arithmetic: the k-th hottest voxel
        row[f"dr{x}"] = _order_statistic(ordered, start, n - np.maximum(k, 1), valid)
    return pd.DataFrame(row, columns=list(VOI_METRIC_COLUMNS))


def drvh(
    dose_rate,
    labels,
    names: Mapping,
    dose_rate_levels=None,
    *,
    index: VoiIndex | None = None,
    what: str = "dose-rate map",
) -> xr.DataArray:
    """Cumulative dose-rate volume histograms of every VOI, in one pass.

    Returns ``volume_fraction`` (voi, dose_rate): the fraction of the VOI's voxels whose dose-rate is ``>=`` each
    level, so ``drvh >= x/100`` exactly at levels ``<= DRx``. ``dose_rate_levels``: increasing levels in the unit of
    ``dose_rate`` (default 256 levels from 0 to the highest finite value inside the VOIs). Empty VOIs and VOIs with
    non-finite values get NaN rows.
    """
    index = index or VoiIndex(labels, names)
    values = index.values(dose_rate, what)
    bad = index.nonfinite_vois(values, what)
    if dose_rate_levels is None:
        finite = values[np.isfinite(values)]
        dose_rate_levels = np.linspace(0.0, finite.max() if finite.size else 1.0, 256)
    levels = np.asarray(dose_rate_levels, dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0 or np.any(np.diff(levels) <= 0):
        raise ValueError("dose_rate_levels must be a non-empty, strictly increasing 1-D sequence")
    finite = np.isfinite(values)
    # Level bin of each voxel: the highest level <= value (-1: below every level, not counted at any level).
    level_bin = np.searchsorted(levels, values[finite], side="right") - 1
    counted = level_bin >= 0
    n_levels = levels.size
    flat_bin = index._position[finite][counted] * n_levels + level_bin[counted]
    per_bin = np.bincount(flat_bin, minlength=len(index.names) * n_levels).reshape(len(index.names), n_levels)
    at_or_above = np.cumsum(per_bin[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = at_or_above / index.n_voxels[:, None]
    fraction[bad | (index.n_voxels == 0)] = np.nan
    return xr.DataArray(
        fraction,
        dims=("voi", "dose_rate"),
        coords={"voi": index.names, "dose_rate": levels},
        name="volume_fraction",
        attrs={"units": "1", "long_name": "fraction of VOI volume >= level"},
    )


def voi_concordance(
    estimate, reference, labels, names: Mapping, *, index: VoiIndex | None = None, what: str = "dose-rate maps"
) -> pd.DataFrame:
    """Per-VOI agreement of two dose-rate maps (z, y, x) over each VOI's voxels, all VOIs in one pass.

    Columns: ``voi, n_voxels, pearson_r2, ccc, slope, intercept, nrmse, mean_error``. ``slope``/``intercept``: the
    least-squares line ``estimate = slope * reference + intercept`` (intercept in the maps' unit). ``nrmse`` and
    ``mean_error`` take ``reference`` as truth. Undefined values (empty VOI, zero variance, zero reference) are NaN.
    """
    index = index or VoiIndex(labels, names)
    a = index.values(estimate, what)
    b = index.values(reference, what)
    bad = index.nonfinite_vois(a, what) | index.nonfinite_vois(b, what)
    n = index.n_voxels.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_a = index.sums(a) / n
        mean_b = index.sums(b) / n
        da = a - index.broadcast(mean_a)
        db = b - index.broadcast(mean_b)
        var_a = index.sums(da * da) / n
        var_b = index.sums(db * db) / n
        cov = index.sums(da * db) / n
        r2 = cov**2 / (var_a * var_b)
        ccc = 2 * cov / (var_a + var_b + (mean_a - mean_b) ** 2)
        slope = cov / var_b
        intercept = mean_a - slope * mean_b
        nrmse_voi = np.sqrt(index.sums((a - b) ** 2) / index.sums(b * b))
        mean_error_voi = np.abs(mean_a - mean_b) / mean_b
    table = pd.DataFrame(
        {
            "voi": index.names,
            "n_voxels": index.n_voxels,
            "pearson_r2": r2,
            "ccc": ccc,
            "slope": slope,
            "intercept": intercept,
            "nrmse": nrmse_voi,
            "mean_error": mean_error_voi,
        }
    )
    table.loc[bad, table.columns[2:]] = np.nan
    return table


def _selected(array, mask, what: str) -> np.ndarray:
    values = _as_numpy(array).astype(np.float64, copy=False)
    if mask is not None:
        mask = _as_numpy(mask)
        if mask.shape != values.shape:
            raise ValueError(f"{what}: mask shape {mask.shape} differs from array shape {values.shape}")
        values = values[mask.astype(bool)]
    values = values.ravel()
    if values.size == 0:
        raise ValueError(f"{what}: the mask selects no voxels")
    return values


def nrmse(est, ref, mask=None) -> float:
    """``sqrt(mean((est - ref)^2)) / sqrt(mean(ref^2))`` over the voxels where ``mask`` is true (all if None)."""
    e, r = _selected(est, mask, "nrmse estimate"), _selected(ref, mask, "nrmse reference")
    return float(np.sqrt(np.mean((e - r) ** 2)) / np.sqrt(np.mean(r**2)))


def mean_error(est, ref, mask=None) -> float:
    """Relative mean dose-rate error ``|mean(est) - mean(ref)| / mean(ref)`` over ``mask`` (a fraction)."""
    e, r = _selected(est, mask, "mean_error estimate"), _selected(ref, mask, "mean_error reference")
    return float(abs(e.mean() - r.mean()) / r.mean())


def _paired(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _selected(a, None, what), _selected(b, None, what)
    if x.shape != y.shape:
        raise ValueError(f"{what}: the two samples differ in size ({x.size} vs {y.size})")
    if x.size < 2:
        raise ValueError(f"{what}: needs at least 2 paired values, got {x.size}")
    return x, y


def pearson_r2(a, b) -> float:
    """Squared Pearson correlation of paired samples (flattened). NaN if either sample is constant."""
    x, y = _paired(a, b, "pearson_r2")
    dx, dy = x - x.mean(), y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.dot(dx, dy) ** 2 / (np.dot(dx, dx) * np.dot(dy, dy)))


def lins_ccc(a, b) -> float:
    """Lin's concordance correlation coefficient of paired samples (population moments; Lin 1989)."""
    x, y = _paired(a, b, "lins_ccc")
    dx, dy = x - x.mean(), y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(2 * np.mean(dx * dy) / (np.mean(dx * dx) + np.mean(dy * dy) + (x.mean() - y.mean()) ** 2))


def ensemble_noise(realisations, mask=None) -> float:
    """Ensemble noise in % of M noise realisations (M, z, y, x) over the voxels j of ``mask`` (z, y, x).

    ``100 * sqrt(mean_j var_m) / mean_j mean_m`` with the unbiased (ddof=1) variance over realisations m.
    """
    stack = _as_numpy(realisations).astype(np.float64, copy=False)
    if stack.ndim < 2 or stack.shape[0] < 2:
        raise ValueError(f"ensemble_noise needs at least 2 realisations stacked on axis 0, got shape {stack.shape}")
    flat = stack.reshape(stack.shape[0], -1)
    if mask is not None:
        mask = _as_numpy(mask)
        if mask.shape != stack.shape[1:]:
            raise ValueError(f"ensemble_noise: mask shape {mask.shape} differs from a realisation's {stack.shape[1:]}")
        flat = flat[:, mask.astype(bool).ravel()]
    if flat.shape[1] == 0:
        raise ValueError("ensemble_noise: the mask selects no voxels")
    return float(100.0 * np.sqrt(flat.var(axis=0, ddof=1).mean()) / flat.mean())


def joint_histogram(a, b, mask=None, bins=128, range=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D histogram of paired voxel values of two maps over ``mask``: ``(counts (bins_a, bins_b), edges_a, edges_b)``.

    ``bins``/``range`` as in :func:`numpy.histogram2d`; pass fixed edges to add histograms of several scans.
    Values outside the edges are not counted.
    """
    x, y = _selected(a, mask, "joint_histogram a"), _selected(b, mask, "joint_histogram b")
    counts, edges_a, edges_b = np.histogram2d(x, y, bins=bins, range=range)
    return counts.astype(np.int64), edges_a, edges_b


def concordance(a, b) -> dict[str, float]:
    """Agreement of paired samples: ``{"n", "pearson_r2", "ccc", "slope", "intercept"}``
    (``a = slope b + intercept``)."""
    x, y = _paired(a, b, "concordance")
    dx, dy = x - x.mean(), y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = float(np.dot(dx, dy) / np.dot(dy, dy))
    return {
        "n": int(x.size),
        "pearson_r2": pearson_r2(x, y),
        "ccc": lins_ccc(x, y),
        "slope": slope,
        "intercept": float(x.mean() - slope * y.mean()),
    }
