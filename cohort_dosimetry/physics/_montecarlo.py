"""Monte Carlo dose-rate engine: decays sampled from an activity map, transported on a density map.

Decays are sampled in proportion to the activity of each voxel (Bq per voxel), stratified by voxel (the number of
decays in a voxel is floor(N p + u), u uniform: its expectation is exact and it carries no multinomial noise), and
uniformly within the voxel. Each simulated decay emits the nuclide's ICRP-107 emissions: the number of particles
of every discrete line (and of betas) in a chunk of N decays is floor(N * yield + u), u uniform (stratified: exact
expectation, no Poisson noise), each particle starting isotropically at a decay chosen by systematic sampling
over the chunk's decays (so a yield-1 beta comes from every decay). Beta energies are stratified per voxel: the k
betas of a voxel in a chunk take the spectrum's quantiles (r + u_r) / k, r = 0 .. k - 1 (exact inversion of the
piecewise-linear CDF), so the spread of the beta spectrum, otherwise the largest variance term of an electron dose
tally, hardly reaches the voxel's dose: the per-decay CV of a voxel's electron tally in uniform activity falls from
0.73 (independent energies) to 0.48 (measured at 3 x 3.91 x 3.91 mm; 0.28 with a mono-energetic beta, so the rest is
transport noise), a factor 2.3 fewer decays for the same uncertainty. Every sampling choice here
keeps each voxel's expected tally, so none of them changes the physics (nor ``ENGINE_VERSION``).
Lines below the transport cutoffs (electrons < 10 keV, photons < 5 keV, e.g. most Auger electrons and the Lu N-shell
x-rays) deposit their yield-weighted energy at every decay site. Transport: see :mod:`._transport`.

Statistics: the decays are split into ``n_batches`` independent batches of equal size; the dose-rate is the mean of
the batch estimates and its relative uncertainty the standard error of that mean over the batches divided by the
mean. Voxels without dose get uncertainty NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cohort_dosimetry.constants import J_PER_MEV, MC_DECAYS

from ._device import resolve_device
from ._materials import material_index
from ._nuclide import Nuclide
from ._nuclide import nuclide as load_nuclide
from ._transport import (
    ELECTRON_CUTOFF_MEV,
    PHOTON_CUTOFF_MEV,
    Electrons,
    Grid,
    Tables,
    isotropic_directions,
    tables_on,
    transport_electrons,
    transport_photons,
)

#: Bump when the engine's physics changes: it keys the voxel-kernel cache.
ENGINE_VERSION = "1.1.0"

#: Decays simulated at a time: bounds memory (bench/mc.py, 130x128x128 voxels: 0.7 GiB resident at peak).
CHUNK_DECAYS = 1 << 20
#: Largest relative mismatch tolerated between emitted and deposited + escaped energy in a run.
ENERGY_BALANCE_TOLERANCE = 1e-6

#: Emission sets a run can transport: "electron" = beta spectrum + internal conversion + Auger electrons,
#: "photon" = gammas + x-rays (+ annihilation photons), "beta" = the beta spectrum alone (a subset of "electron", for
#: comparison with published kernels whose source is only the beta spectrum; never together with "electron").
_EMISSIONS = ("electron", "photon", "beta")


@dataclass
class MCResult:
    """Result of :func:`run_monte_carlo`.

    dose_rate_gy_s : float32 (z, y, x), Gy/s.
    relative_uncertainty : float32 (z, y, x), standard error of the mean over batches / mean; NaN where no dose.
    energy_emitted_j, energy_deposited_j, energy_escaped_j : energy per second of decays of the whole activity map
        (J/s = W), emitted by the selected emissions, deposited in the grid, and carried out of the grid.
    n_decays : decays the result is normalised to: ``n_decays`` rounded up to a multiple of ``n_batches`` (the
        stratified per-voxel counts simulate this many decays in expectation).
    """

    dose_rate_gy_s: np.ndarray
    relative_uncertainty: np.ndarray
    energy_emitted_j: float
    energy_deposited_j: float
    energy_escaped_j: float
    n_decays: int


@dataclass
class _Source:
    """Emission lines of one nuclide on the device, restricted to the selected emissions."""

    beta_energy: torch.Tensor  # (n,) MeV grid of the piecewise-linear spectrum
    beta_pdf: torch.Tensor  # (n,)
    beta_cdf: torch.Tensor  # (n,) 0..1
    beta_yield: float
    electron_lines: torch.Tensor  # (k,) MeV, transported
    electron_yields: torch.Tensor  # (k,)
    photon_lines: torch.Tensor  # (p,) MeV float64, transported
    photon_yields: torch.Tensor
    local_mev_per_decay: float  # lines below the cutoffs, deposited at the decay site

    @classmethod
    def of(cls, nuc: Nuclide, emissions: tuple[str, ...], device: torch.device) -> _Source:
        f32: dict[str, Any] = dict(dtype=torch.float32, device=device)
        local = 0.0
        beta_e, beta_p, beta_c = (torch.zeros(0, **f32),) * 3
        beta_yield = 0.0
        el_e, el_y = np.zeros(0), np.zeros(0)
        ph_e, ph_y = np.zeros(0), np.zeros(0)
        if "electron" in emissions or "beta" in emissions:
            if nuc.beta_yield > 0:
                beta_e, beta_p, beta_c = (torch.as_tensor(a, **f32) for a in nuc.beta_sampling_table())
                beta_yield = nuc.beta_yield
        if "electron" in emissions:
            e = np.concatenate([nuc.ic_energy_mev, nuc.auger_energy_mev])
            y = np.concatenate([nuc.ic_yield, nuc.auger_yield])
            low = e < ELECTRON_CUTOFF_MEV
            local += float(np.dot(e[low], y[low]))
            el_e, el_y = e[~low], y[~low]
        if "photon" in emissions:
            e, y = nuc.photon_energy_mev, nuc.photon_yield
            if e.size and e.max() > 3.0:
                raise ValueError(
                    f"nuclide {nuc.name}: photons above 3 MeV ({e.max():g} MeV) are outside the "
                    "engine's cross-section tables"
                )
            low = e < PHOTON_CUTOFF_MEV
            local += float(np.dot(e[low], y[low]))
            ph_e, ph_y = e[~low], y[~low]
        return cls(
            beta_e,
            beta_p,
            beta_c,
            beta_yield,
            torch.as_tensor(el_e, **f32),
            torch.as_tensor(el_y, dtype=torch.float64, device=device),
            torch.as_tensor(ph_e, dtype=torch.float64, device=device),
            torch.as_tensor(ph_y, dtype=torch.float64, device=device),
            local,
        )

    def sample_beta(self, u: torch.Tensor) -> torch.Tensor:
        """Energies (MeV, float32) at the spectrum's quantiles ``u`` (n,) in [0, 1): the piecewise-linear CDF
        inverted exactly (interval by the CDF table, then the quadratic within the interval), monotone in ``u``."""
        cdf = self.beta_cdf
        u = u.to(cdf.dtype)
        i = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(1, cdf.numel() - 1) - 1
        c0, c1 = cdf[i], cdf[i + 1]
        frac = ((u - c0) / (c1 - c0).clamp(min=1e-30)).clamp(0.0, 1.0)  # uniform within the interval
        p0, p1 = self.beta_pdf[i], self.beta_pdf[i + 1]
        e0, e1 = self.beta_energy[i], self.beta_energy[i + 1]
        q = frac * 0.5 * (p0 + p1)  # density-weighted fraction of the interval's area
        t = 2.0 * q / (p0 + torch.sqrt(torch.clamp(p0 * p0 + 2.0 * (p1 - p0) * q, min=0.0))).clamp(min=1e-30)
        return (e0 + t.clamp(0.0, 1.0) * (e1 - e0)).clamp(min=1e-6)


def _stratified_quantiles(voxel: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Quantiles (r + u) / k for particles sorted by voxel: r the rank of a particle among the k of its voxel,
    u uniform. Each is marginally uniform on [0, 1), and a voxel's k particles cover the k strata once each."""
    dev = voxel.device
    _, k = torch.unique_consecutive(voxel, return_counts=True)
    start = torch.cumsum(k, 0) - k
    group = torch.repeat_interleave(torch.arange(k.numel(), device=dev), k)
    rank = torch.arange(voxel.numel(), device=dev) - start[group]
    u = torch.rand(voxel.numel(), generator=gen, device=dev, dtype=torch.float64)
    return (rank + u) / k[group]


def _line_counts(n_decays: int, yields: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Stratified particle count per line: floor(N y + u), u uniform; int64 (k,)."""
    u = torch.rand(yields.numel(), generator=gen, device=yields.device, dtype=torch.float64)
    return torch.floor(n_decays * yields + u).to(torch.int64)


def _systematic_sites(counts: torch.Tensor, n_sites: int, gen: torch.Generator) -> torch.Tensor:
    """Decay sites of the particles of each line by systematic sampling over the (voxel-ordered) site list.

    Line l with c_l particles takes sites floor((j + u_l) n_sites / c_l), j = 0 .. c_l - 1, u_l uniform: every site
    is equally likely to emit (probability c_l / n_sites) and the particles spread over the voxels in proportion
    to their decays. Returns int64 indices (sum(counts),) in the order of the lines.
    """
    dev = counts.device
    total = int(counts.sum())
    line = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts)
    start = torch.cumsum(counts, 0) - counts
    j = torch.arange(total, device=dev) - start[line]
    u = torch.rand(counts.numel(), generator=gen, device=dev, dtype=torch.float64)
    idx = torch.floor((j + u[line]) * (n_sites / counts[line].double())).to(torch.int64)
    return idx.clamp(max=n_sites - 1)


def _validate(activity_bq, density, spacing_mm, n_decays, emissions, n_batches):
    activity = np.asarray(activity_bq)
    rho = np.asarray(density)
    if activity.ndim != 3:
        raise ValueError(f"activity_bq must be a 3-D (z, y, x) array, got shape {activity.shape}")
    if rho.shape != activity.shape:
        raise ValueError(f"density shape {rho.shape} differs from activity_bq shape {activity.shape}")
    spacing = tuple(float(s) for s in np.asarray(spacing_mm, dtype=np.float64).reshape(-1))
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be three positive finite numbers (z, y, x), got {spacing_mm!r}")
    if not np.all(np.isfinite(activity)) or np.any(activity < 0):
        raise ValueError(
            "activity_bq must be finite and >= 0 everywhere "
            f"(found {np.count_nonzero(~np.isfinite(activity))} non-finite, "
            f"{np.count_nonzero(activity < 0)} negative voxels)"
        )
    if not np.all(np.isfinite(rho)) or np.any(rho <= 0):
        raise ValueError(
            "density must be finite and > 0 g/cm3 everywhere "
            f"(found {np.count_nonzero(~np.isfinite(rho))} non-finite, "
            f"{np.count_nonzero(rho <= 0)} non-positive voxels)"
        )
    if isinstance(emissions, str):
        emissions = (emissions,)
    emissions = tuple(emissions)
    if (
        not emissions
        or any(e not in _EMISSIONS for e in emissions)
        or len(set(emissions)) != len(emissions)
        or {"beta", "electron"} <= set(emissions)
    ):
        raise ValueError(
            f"emissions must be a non-empty subset of {_EMISSIONS} without both 'beta' and "
            f"'electron' ('electron' includes the beta spectrum), got {emissions!r}"
        )
    if int(n_batches) != n_batches or n_batches < 2:
        raise ValueError(f"n_batches must be an integer >= 2, got {n_batches!r}")
    if int(n_decays) != n_decays or n_decays < n_batches:
        raise ValueError(f"n_decays must be an integer >= n_batches ({n_batches}), got {n_decays!r}")
    return activity.astype(np.float64), rho.astype(np.float32), spacing, emissions


def run_monte_carlo(
    activity_bq,
    density,
    spacing_mm,
    nuclide="Lu177",
    n_decays=MC_DECAYS,
    seed=0,
    device=None,
    emissions=("electron", "photon"),
    n_batches=10,
) -> MCResult:
    """Monte Carlo dose-rate of an activity map.

    Parameters
    ----------
    activity_bq : (z, y, x) array, Bq per voxel, finite and >= 0.
    density : (z, y, x) array, mass density g/cm3, finite and > 0 (below 0.1 g/cm3 is air).
    spacing_mm : voxel size (z, y, x) in mm.
    nuclide : name in the ICRP-107 database ("Lu177") or a :class:`Nuclide`.
    n_decays : decays to simulate (rounded up to a multiple of ``n_batches``).
    seed : seeds a ``torch.Generator`` on the device; a run is reproducible on a given device.
    device : torch device or name; None = CUDA when available.
    emissions : subset of ("electron", "photon", "beta"); "electron" = beta + internal conversion + Auger,
        "photon" = gamma + x-rays (+ annihilation photons), "beta" = the beta spectrum alone (not with "electron").
    n_batches : independent batches for the statistical uncertainty (>= 2).

    Returns
    -------
    MCResult; energy totals are per second of decays of the whole map. Energy bookkeeping
    (emitted = deposited + escaped to 1e-6 relative) is checked in every run.
    """
    activity, rho, spacing_mm, emissions = _validate(activity_bq, density, spacing_mm, n_decays, emissions, n_batches)
    nuc = nuclide if isinstance(nuclide, Nuclide) else load_nuclide(nuclide)
    if nuc.alpha_energy_mev > 0:
        raise ValueError(
            f"nuclide {nuc.name} emits alpha particles ({nuc.alpha_energy_mev:.3g} MeV per decay); "
            "the engine transports electrons and photons only"
        )
    dev = resolve_device(device)
    n_batches = int(n_batches)
    per_batch = -(-int(n_decays) // n_batches)
    total_decays = per_batch * n_batches
    shape = activity.shape
    a_total = float(activity.sum())
    voxel_volume_cm3 = float(np.prod(spacing_mm)) * 1e-3
    if a_total == 0.0:
        zeros = np.zeros(shape, np.float32)
        return MCResult(zeros, np.full(shape, np.nan, np.float32), 0.0, 0.0, 0.0, total_decays)

    grid = Grid.build(rho, material_index(rho), spacing_mm, dev)
    tables = tables_on(dev)
    majorants = tables.majorants(grid)
    source = _Source.of(nuc, emissions, dev)
    flat_act = activity.reshape(-1)
    src_voxels = np.flatnonzero(flat_act > 0)
    src_prob = torch.as_tensor(flat_act[src_voxels] / a_total, dtype=torch.float64, device=dev)
    src_t = torch.as_tensor(src_voxels, dtype=torch.int64, device=dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(seed))

    n_vox = rho.size
    tally = torch.zeros(n_vox, dtype=torch.float64, device=dev)
    dose_sum = torch.zeros(n_vox, dtype=torch.float64, device=dev)
    dose_sq = torch.zeros(n_vox, dtype=torch.float64, device=dev)
    emitted = torch.zeros((), dtype=torch.float64, device=dev)
    escaped = torch.zeros((), dtype=torch.float64, device=dev)
    deposited = torch.zeros((), dtype=torch.float64, device=dev)
    mass_kg = torch.as_tensor(rho.reshape(-1), dtype=torch.float64, device=dev) * voxel_volume_cm3 * 1e-3
    gy_s_per_mev = a_total / per_batch * J_PER_MEV / mass_kg  # per batch: MeV tallied -> Gy/s
    for _ in range(n_batches):
        tally.zero_()
        remaining = per_batch
        while remaining:
            n = min(remaining, CHUNK_DECAYS)
            remaining -= n
            e_out, e_esc = _simulate_chunk(n, source, grid, tables, majorants, src_prob, src_t, tally, gen)
            emitted += e_out
            escaped += e_esc
        deposited += tally.sum()
        batch_dose = tally * gy_s_per_mev
        dose_sum += batch_dose
        dose_sq += batch_dose * batch_dose

    emitted_mev, deposited_mev, escaped_mev = emitted.item(), deposited.item(), escaped.item()
    mismatch = abs(emitted_mev - deposited_mev - escaped_mev)
    if mismatch > ENERGY_BALANCE_TOLERANCE * max(emitted_mev, 1e-300):
        raise RuntimeError(
            f"Monte Carlo energy bookkeeping failed: emitted {emitted_mev:.9g} MeV, deposited "
            f"{deposited_mev:.9g} MeV, escaped {escaped_mev:.9g} MeV (relative mismatch "
            f"{mismatch / emitted_mev:.3g} > {ENERGY_BALANCE_TOLERANCE:g})"
        )
    mean = dose_sum / n_batches
    var_of_mean = (dose_sq / n_batches - mean * mean).clamp(min=0.0) * (n_batches / (n_batches - 1)) / n_batches
    rel = torch.where(mean > 0, torch.sqrt(var_of_mean) / mean.clamp(min=1e-300), torch.full_like(mean, math.nan))
    to_w = a_total / total_decays * J_PER_MEV  # MeV over all decays -> J per second of decays
    return MCResult(
        dose_rate_gy_s=mean.reshape(shape).float().cpu().numpy(),
        relative_uncertainty=rel.reshape(shape).float().cpu().numpy(),
        energy_emitted_j=emitted_mev * to_w,
        energy_deposited_j=deposited_mev * to_w,
        energy_escaped_j=escaped_mev * to_w,
        n_decays=total_decays,
    )


def _simulate_chunk(n: int, source: _Source, grid: Grid, tables: Tables, majorants, src_prob, src_voxels, tally, gen):
    """Simulate ``n`` decays (in expectation); returns (emitted MeV, escaped MeV) as float64 scalars and deposits
    into ``tally``. Decays per source voxel are stratified, floor(n p + u) with u uniform, so their expected number
    is n p exactly without multinomial noise; the caller normalises by ``n``."""
    dev = tally.device
    counts = torch.floor(n * src_prob + torch.rand(src_prob.numel(), generator=gen, device=dev, dtype=torch.float64))
    vox = torch.repeat_interleave(src_voxels, counts.to(torch.int64))
    n_sites = vox.numel()
    nz, ny, nx = grid.shape
    ijk = torch.stack([vox // (ny * nx), (vox // nx) % ny, vox % nx], dim=1).float()
    sites = (ijk + torch.rand(n_sites, 3, generator=gen, device=dev)) * grid.spacing_cm
    # every decay deposits the energy of its sub-cutoff lines on the spot
    emitted = torch.zeros((), dtype=torch.float64, device=dev)
    if source.local_mev_per_decay > 0:
        tally.index_add_(0, vox, torch.full((n_sites,), source.local_mev_per_decay, dtype=torch.float64, device=dev))
        emitted += source.local_mev_per_decay * n_sites
    if n_sites == 0:
        return emitted, torch.zeros((), dtype=torch.float64, device=dev)

    e_energy: list[torch.Tensor] | torch.Tensor  # the energies per line kind, then all of them
    e_counts, e_energy = [], []
    if source.beta_yield > 0:
        n_beta = _line_counts(n_sites, torch.tensor([source.beta_yield], dtype=torch.float64, device=dev), gen)
        e_counts.append(n_beta)
    if source.electron_lines.numel():
        counts = _line_counts(n_sites, source.electron_yields, gen)
        e_counts.append(counts)
        e_energy.append(torch.repeat_interleave(source.electron_lines, counts))
    if e_counts:
        e_site = _systematic_sites(torch.cat(e_counts), n_sites, gen)  # betas first, sorted by site (= by voxel)
        if source.beta_yield > 0:
            beta_voxel = vox[e_site[: int(e_counts[0])]]
            e_energy.insert(0, source.sample_beta(_stratified_quantiles(beta_voxel, gen)))
        e_energy = torch.cat(e_energy)
        e_pos = sites[e_site]
    else:
        e_energy, e_pos = torch.zeros(0, device=dev), torch.zeros(0, 3, device=dev)
    emitted += e_energy.double().sum()
    electrons = Electrons(e_pos, isotropic_directions(e_energy.numel(), gen, dev), e_energy)

    escaped = torch.zeros((), dtype=torch.float64, device=dev)
    if source.photon_lines.numel():
        counts = _line_counts(n_sites, source.photon_yields, gen)
        p_energy = torch.repeat_interleave(source.photon_lines, counts)
        emitted += p_energy.sum()
        p_pos = sites[_systematic_sites(counts, n_sites, gen)]
        esc, recoils = transport_photons(
            p_pos, isotropic_directions(p_energy.numel(), gen, dev), p_energy, grid, tables, majorants, tally, gen
        )
        escaped += esc
        electrons = Electrons(
            torch.cat([electrons.pos, recoils.pos]),
            torch.cat([electrons.dir, recoils.dir]),
            torch.cat([electrons.energy, recoils.energy]),
        )
    escaped += transport_electrons(electrons, grid, tables, tally, gen)
    return emitted, escaped


def dose_rate_mc(activity_bq, density, spacing_mm, **options) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo dose-rate (Gy/s) and its relative uncertainty, float32 (z, y, x) arrays.

    The arguments and ``options`` (nuclide, n_decays, seed, device, emissions, n_batches) and their defaults are
    :func:`run_monte_carlo`'s: activity in Bq per voxel, density g/cm3, spacing mm (z, y, x).
    """
    result = run_monte_carlo(activity_bq, density, spacing_mm, **options)
    return result.dose_rate_gy_s, result.relative_uncertainty
