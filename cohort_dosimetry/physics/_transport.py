"""Particle transport on a voxel grid, in torch, vectorised over particle batches (CPU or CUDA).

Geometry: a box of voxels, axes (z, y, x), positions in cm from the grid corner, voxel (i, j, k) covering
[i dz, (i+1) dz) x ... . Energies in MeV. Every transport routine adds the energy it deposits to a float64 tally
(one value per voxel, flattened (z, y, x)) and returns the energy that left the grid, so that
emitted = deposited + escaped holds exactly up to float64 summation (electron energy losses are taken as differences
of float32 energies evaluated in float64, which is exact; photon energies are float64).

Physics (constants cited where defined in :mod:`._materials`):

- Photons: Woodcock (delta) tracking with the majorant of the total (photoelectric + incoherent) attenuation over the
  volume; photoelectric absorption deposits the photon energy locally (photo-electron and fluorescence not
  followed); incoherent scattering by Klein-Nishina sampled with Kahn's rejection method (Kahn, Applications of
  Monte Carlo, AECU-3259, 1956), with the interaction probability from the bound-electron (xraydb/Elam) cross
  section; the recoil electron is transported. Coherent scattering is omitted (no energy transfer, small
  deflections at these energies). Photons below ``PHOTON_CUTOFF_MEV`` deposit locally.
- Electrons: condensed history, class I (Berger, Methods Comput Phys 1:135, 1963): continuous slowing down along
  steps of at most ``STEP_RANGE_FRACTION`` of the residual CSDA range and ``STEP_VOXEL_FRACTION`` of the smallest
  voxel spacing, with the energy loss of a step taken exactly from the CSDA range table of the start voxel's
  material and density, deposited at the step midpoint. After each step the direction is deflected by a multiple
  scattering angle whose width is Lynch & Dahl's improvement of the Highland formula (Nucl Instrum Methods B58:6,
  1991; PDG eq. 34.15), theta0^2 = (13.6 MeV / (beta c p))^2 (s / X0) [1 + 0.088 log10(R / (X0 beta^2))]^2, with
  the logarithmic term taken for the electron's residual CSDA range R rather than for the step s: the variance then
  adds up over steps to the Lynch-Dahl width of the remaining path, independent of the step size.
  1 - cos(theta) is sampled from an exponential with mean theta0^2 truncated to [0, 2], which is the small-angle
  Gaussian and tends to isotropy for large theta0. Electrons whose remaining CSDA range is
  shorter than the distance to the nearest face of their voxel deposit all their energy in it (range rejection:
  exact, since the path length bounds the displacement). Below ``ELECTRON_CUTOFF_MEV`` the energy is deposited on
  the spot. Delta rays and bremsstrahlung are not produced (radiative yield of Lu-177 betas in tissue < 0.1 %).
- Air (rho < 0.1 g/cm3): within a ball that holds only air voxels (radius from a Euclidean distance transform),
  photons fly with the air majorant and stop at the ball's surface (exact, flights are memoryless), and electron
  steps may reach the ball's radius instead of a fraction of a voxel (dose to air is not used). Without this, a
  low-energy photon or an electron leaving the body needs thousands of steps to cross the air around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from ._materials import (
    ELECTRON_MASS_MEV,
    TRANSPORT_MATERIALS,
    csda_range,
    photon_mass_coefficients,
    radiation_length_g_cm2,
)

#: Electrons below this kinetic energy deposit locally: CSDA range in soft tissue 2.5 um (ESTAR water), far
#: below any voxel.
ELECTRON_CUTOFF_MEV = 0.010
#: Photons below this energy deposit locally: mean free path in soft tissue about 0.2 mm (mu/rho 42 cm2/g).
PHOTON_CUTOFF_MEV = 0.005
#: Electron step: at most this fraction of the residual CSDA range ...
STEP_RANGE_FRACTION = 0.2
#: ... and at most this fraction of the smallest voxel spacing.
STEP_VOXEL_FRACTION = 0.25

_TABLE_MIN_MEV = 1e-3
_TABLE_MAX_MEV = 3.0
_N_ENERGY = 1024
_N_RANGE = 2048
_TWO_PI = 2.0 * math.pi
AIR_INDEX = 0  # position of air in TRANSPORT_MATERIALS


@dataclass
class Grid:
    """The voxel grid on a device: per-voxel density (g/cm3) and material index, flattened (z, y, x)."""

    shape: tuple[int, int, int]
    spacing_cm: torch.Tensor  # (3,) float32
    density: torch.Tensor  # (n_voxels,) float32
    material: torch.Tensor  # (n_voxels,) int64
    max_step_cm: float
    safe_cm: torch.Tensor  # (n_voxels,) float32: radius of an all-air ball around any point of the voxel, 0 if none

    def __post_init__(self) -> None:
        self.last_voxel = torch.tensor(self.shape, device=self.density.device) - 1
        self.extent_cm = self.spacing_cm * torch.tensor(self.shape, dtype=torch.float32, device=self.density.device)

    @classmethod
    def build(
        cls, density: np.ndarray, material: np.ndarray, spacing_mm: tuple[float, float, float], device: torch.device
    ) -> Grid:
        """Grid from density (z, y, x) g/cm3, material index (z, y, x) and spacing (mm), on ``device``.

        The all-air radius of an air voxel is its centre's distance to the nearest non-air voxel centre (exact
        Euclidean distance transform) less one voxel diagonal, so that it holds for every point of both voxels."""
        air = material == AIR_INDEX
        safe_mm = np.zeros(density.shape, np.float32)
        if air.any() and not air.all():
            diagonal = float(np.linalg.norm(spacing_mm))
            safe_mm = np.maximum(distance_transform_edt(air, sampling=spacing_mm) - diagonal, 0.0).astype(np.float32)
        elif air.all():
            safe_mm[:] = float(np.linalg.norm(np.multiply(density.shape, spacing_mm)))  # the whole grid is air
        return cls(
            shape=density.shape,
            spacing_cm=torch.tensor([s / 10.0 for s in spacing_mm], dtype=torch.float32, device=device),
            density=torch.as_tensor(density.reshape(-1), dtype=torch.float32, device=device),
            material=torch.as_tensor(material.reshape(-1).astype(np.int64), device=device),
            max_step_cm=STEP_VOXEL_FRACTION * min(spacing_mm) / 10.0,
            safe_cm=torch.as_tensor(safe_mm.reshape(-1) / 10.0, device=device),
        )

    def voxel_index(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer voxel coordinates (n, 3) clamped to the grid, flat (z, y, x) index (n,)) of positions (n, 3) cm.

        Clamping keeps a position that rounds onto the far face of the grid in its last voxel."""
        ijk = torch.minimum(torch.floor(pos / self.spacing_cm).to(torch.int64).clamp(min=0), self.last_voxel)
        return ijk, (ijk[:, 0] * self.shape[1] + ijk[:, 1]) * self.shape[2] + ijk[:, 2]

    def voxel_of(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat index (n,), inside mask (n,)) of positions (n, 3) cm; outside the grid the index is meaningless."""
        inside = ((pos >= 0) & (pos < self.extent_cm)).all(dim=1)
        return self.voxel_index(pos)[1], inside


@lru_cache(maxsize=4)
def tables_on(device: torch.device) -> Tables:
    """The material tables on ``device``, built once per process and device."""
    return Tables(device)


class Tables:
    """Material tables on a device, on uniform log grids so lookups are arithmetic (no search).

    Photon: mass coefficients (cm2/g) photoelectric and incoherent per material on a log-energy grid 1 keV-3 MeV.
    Electron: ln CSDA range (g/cm2) per material on the same grid, and its inverse ln E on a uniform ln-range grid;
    radiation length (g/cm2) per material.
    """

    def __init__(self, device: torch.device):
        self.device = device
        e = np.geomspace(_TABLE_MIN_MEV, _TABLE_MAX_MEV, _N_ENERGY)
        self.ln_e0 = math.log(_TABLE_MIN_MEV)
        self.dln_e = (math.log(_TABLE_MAX_MEV) - self.ln_e0) / (_N_ENERGY - 1)
        pe, inc, ln_r, ln_e_of_r, r0, dr = [], [], [], [], [], []
        for m in TRANSPORT_MATERIALS:
            c = photon_mass_coefficients(m, e)
            pe.append(c["photoelectric"])
            inc.append(c["incoherent"])
            lr = np.log(csda_range(m, e))
            ln_r.append(lr)
            grid = np.linspace(lr[0], lr[-1], _N_RANGE)
            ln_e_of_r.append(np.interp(grid, lr, np.log(e)))
            r0.append(lr[0])
            dr.append((lr[-1] - lr[0]) / (_N_RANGE - 1))

        def t(x, dtype=torch.float32):
            return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)

        self.mu_pe = t(pe)  # (M, N_E) cm2/g
        self.mu_inc = t(inc)
        self.mu_total = self.mu_pe + self.mu_inc
        self.ln_range = t(ln_r).reshape(-1)  # flattened (M * N_E)
        self.ln_e_of_range = t(ln_e_of_r).reshape(-1)  # flattened (M * N_R)
        self.ln_r0 = t(r0)
        self.dln_r = t(dr)
        self.radiation_length = t([radiation_length_g_cm2(m) for m in TRANSPORT_MATERIALS])
        self.range_cutoff = t([float(csda_range(m, ELECTRON_CUTOFF_MEV)) for m in TRANSPORT_MATERIALS])

    def energy_weights(self, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grid cell (n,) int64, weight in the cell (n,)) of energies (n,) MeV on the log-energy grid."""
        f = (torch.log(energy.float()) - self.ln_e0) / self.dln_e
        i = torch.clamp(f.floor(), 0, _N_ENERGY - 2)
        return i.to(torch.int64), (f - i).clamp(0.0, 1.0)

    def range_g_cm2(self, material: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """CSDA range (g/cm2) (n,) of electrons of ``energy`` (n,) MeV in materials (n,)."""
        i, w = self.energy_weights(energy)
        j = material * _N_ENERGY + i
        return torch.exp(torch.lerp(self.ln_range[j], self.ln_range[j + 1], w))

    def energy_at_range(self, material: torch.Tensor, range_g_cm2: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`range_g_cm2`: kinetic energy (n,) MeV with the residual CSDA range (n,) g/cm2."""
        f = (torch.log(range_g_cm2) - self.ln_r0[material]) / self.dln_r[material]
        i = torch.clamp(f.floor(), 0, _N_RANGE - 2)
        w = (f - i).clamp(0.0, 1.0)
        j = material * _N_RANGE + i.to(torch.int64)
        return torch.exp(torch.lerp(self.ln_e_of_range[j], self.ln_e_of_range[j + 1], w))

    def majorants(self, grid: Grid) -> torch.Tensor:
        """Majorant total attenuations (1/cm) on the energy grid, (2, N_E): row 0 over the whole volume (max over
        materials of the largest density of that material times mu/rho), row 1 over its air voxels; both enlarged
        by 1e-4 against float rounding."""
        m = len(TRANSPORT_MATERIALS)
        rho_max = torch.zeros(m, device=self.device).scatter_reduce(0, grid.material, grid.density, "amax")
        per_material = rho_max[:, None] * self.mu_total
        return torch.stack([per_material.amax(dim=0), per_material[AIR_INDEX]]) * 1.0001

    def photon_lookup(self, table: torch.Tensor, row: torch.Tensor, i: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Linear interpolation in a (rows, N_E) table at grid cells ``i`` with weights ``w`` from
        :meth:`energy_weights`; ``row`` picks the table row (material or majorant) per particle."""
        flat = table.reshape(-1)
        j = row * _N_ENERGY + i
        return torch.lerp(flat[j], flat[j + 1], w)


def isotropic_directions(n: int, gen: torch.Generator, device) -> torch.Tensor:
    """(n, 3) unit vectors, isotropic, (z, y, x) components."""
    u = torch.rand(n, 2, generator=gen, device=device)
    cos_t = 2.0 * u[:, 0] - 1.0
    sin_t = torch.sqrt(torch.clamp(1.0 - cos_t * cos_t, min=0.0))
    phi = _TWO_PI * u[:, 1]
    return torch.stack([cos_t, sin_t * torch.cos(phi), sin_t * torch.sin(phi)], dim=1)


def rotate(direction: torch.Tensor, cos_theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Turn unit vectors (n, 3) by polar angle theta (given as cos) and azimuth phi; returns unit vectors (n, 3).

    Direction-cosine update with the first component as polar axis (as in EGS4, Nelson et al., SLAC-265, 1985)."""
    cos_theta = cos_theta.clamp(-1.0, 1.0)
    sin_t = torch.sqrt(1.0 - cos_theta * cos_theta)
    cos_p, sin_p = torch.cos(phi), torch.sin(phi)
    w, u, v = direction.unbind(dim=1)
    s2 = 1.0 - w * w
    polar = s2 < 1e-10
    s = torch.sqrt(torch.where(polar, 1.0, s2))
    a = sin_t / s
    new_u = torch.where(polar, sin_t * cos_p, u * cos_theta + a * (u * w * cos_p - v * sin_p))
    new_v = torch.where(polar, sin_t * sin_p, v * cos_theta + a * (v * w * cos_p + u * sin_p))
    new_w = torch.where(polar, torch.sign(w) * cos_theta, w * cos_theta - sin_t * cos_p * s)
    new = torch.stack([new_w, new_u, new_v], dim=1)
    return new / torch.linalg.vector_norm(new, dim=1, keepdim=True)


def sample_klein_nishina(energy: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Kahn's method: (scattered/incident energy ratio eps (n,), cos theta (n,)) for photons of ``energy`` MeV."""
    k = energy / ELECTRON_MASS_MEV
    inv_ratio = torch.empty_like(k)  # E / E'
    todo = torch.arange(k.numel(), device=k.device)
    while todo.numel():
        kk = k[todo]
        r = torch.rand(todo.numel(), 3, generator=gen, device=k.device, dtype=k.dtype)
        branch1 = r[:, 0] <= (2.0 * kk + 1.0) / (2.0 * kk + 9.0)
        eta1 = 1.0 + 2.0 * kk * r[:, 1]
        eta2 = (2.0 * kk + 1.0) / (1.0 + 2.0 * kk * r[:, 1])
        eta = torch.where(branch1, eta1, eta2)
        cos_t = 1.0 - (eta - 1.0) / kk
        accept = torch.where(
            branch1, r[:, 2] <= 4.0 * (1.0 / eta - 1.0 / eta**2), r[:, 2] <= 0.5 * (cos_t * cos_t + 1.0 / eta)
        )
        inv_ratio[todo[accept]] = eta[accept]
        todo = todo[~accept]
    return 1.0 / inv_ratio, (1.0 - (inv_ratio - 1.0) / k).clamp(-1.0, 1.0)


@dataclass
class Electrons:
    """Electrons to transport: positions (n, 3) cm float32, directions (n, 3), kinetic energies (n,) MeV float32."""

    pos: torch.Tensor
    dir: torch.Tensor
    energy: torch.Tensor


def transport_photons(
    pos,
    direction,
    energy,
    grid: Grid,
    tables: Tables,
    majorants: torch.Tensor,
    tally: torch.Tensor,
    gen: torch.Generator,
) -> tuple[torch.Tensor, Electrons]:
    """Woodcock-track photons (positions (n,3) cm, directions (n,3), energies (n,) MeV float64) to absorption or
    escape, with ``majorants`` from :meth:`Tables.majorants`. Deposits into ``tally`` (float64 (n_voxels,), MeV);
    returns (escaped energy MeV float64 scalar, Compton recoil electrons to transport)."""
    dev = pos.device
    escaped = torch.zeros((), dtype=torch.float64, device=dev)
    rec_pos, rec_dir, rec_e = [], [], []
    flat, _ = grid.voxel_of(pos)
    while energy.numel():
        i, w = tables.energy_weights(energy)
        # inside an all-air ball around the photon the air majorant applies (exact: flights are memoryless)
        safe = grid.safe_cm[flat]
        in_air = safe > 0
        sigma_max = tables.photon_lookup(majorants, in_air.to(torch.int64), i, w)
        u = torch.rand(energy.numel(), 2, generator=gen, device=dev)
        flight = -torch.log1p(-u[:, 0]) / sigma_max
        limited = in_air & (flight > safe)
        pos = pos + direction * torch.where(limited, safe, flight)[:, None]
        flat, inside = grid.voxel_of(pos)
        out = ~inside
        escaped += energy[out].sum()
        inside &= ~limited
        mat, rho = grid.material[flat], grid.density[flat]
        mu_pe = rho * tables.photon_lookup(tables.mu_pe, mat, i, w)
        mu_inc = rho * tables.photon_lookup(tables.mu_inc, mat, i, w)
        xi = u[:, 1] * sigma_max
        photo = inside & (xi < mu_pe)
        compton = inside & ~photo & (xi < mu_pe + mu_inc)
        tally.index_add_(0, flat[photo], energy[photo])
        if compton.any():
            c_pos, c_dir, c_e = pos[compton], direction[compton], energy[compton]
            eps, cos_t = sample_klein_nishina(c_e, gen)
            phi = _TWO_PI * torch.rand(c_e.numel(), generator=gen, device=dev, dtype=torch.float64)
            # recoil electron: kinetic energy (float32, exact bookkeeping: the photon keeps E - T exactly)
            t_e = (c_e * (1.0 - eps)).float()
            new_e = c_e - t_e.double()
            # electron polar angle: cot(theta_e) = (1 + k) tan(theta / 2), azimuth opposite to the photon's
            k = c_e / ELECTRON_MASS_MEV
            tan_half = torch.sqrt((1.0 - cos_t).clamp(min=0.0) / (1.0 + cos_t).clamp(min=1e-12))
            cot_e = (1.0 + k) * tan_half
            cos_e = cot_e / torch.sqrt(1.0 + cot_e * cot_e)
            rec_pos.append(c_pos)
            rec_dir.append(rotate(c_dir, cos_e.float(), (phi + math.pi).float()))
            rec_e.append(t_e)
            c_dir = rotate(c_dir, cos_t.float(), phi.float())
            low = new_e < PHOTON_CUTOFF_MEV
            c_flat = flat[compton]
            tally.index_add_(0, c_flat[low], new_e[low])
            direction = direction.clone()
            energy = energy.clone()
            direction[compton] = c_dir
            energy[compton] = new_e
            compton_idx = torch.nonzero(compton).squeeze(1)
            photo[compton_idx[low]] = True  # absorbed: drop below
        alive = ~out & ~photo
        pos, direction, energy, flat = pos[alive], direction[alive], energy[alive], flat[alive]
    if not rec_e:
        none = torch.zeros(0, 3, device=dev)
        return escaped, Electrons(none, none, torch.zeros(0, device=dev))
    return escaped, Electrons(torch.cat(rec_pos), torch.cat(rec_dir), torch.cat(rec_e))


def transport_electrons(
    electrons: Electrons, grid: Grid, tables: Tables, tally: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Condensed-history transport of electrons to rest or escape; deposits into ``tally`` (float64, MeV).

    Returns the escaped energy (MeV, float64 scalar)."""
    pos, direction, energy = electrons.pos, electrons.dir, electrons.energy
    dev = pos.device
    escaped = torch.zeros((), dtype=torch.float64, device=dev)
    spacing = grid.spacing_cm
    while energy.numel():
        ijk, flat = grid.voxel_index(pos)
        rho, mat = grid.density[flat], grid.material[flat]
        range_g = tables.range_g_cm2(mat, energy)
        range_cut = tables.range_cutoff[mat]
        # Range rejection: an electron whose CSDA range is shorter than the distance to its voxel's nearest face
        # stays in the voxel; so does one at or below the cutoff. Both give all their energy to it (step 0).
        frac = pos / spacing - ijk
        face = (torch.minimum(frac, 1.0 - frac) * spacing).amin(dim=1)
        geometric_range = range_g / rho
        stop_here = (geometric_range <= face) | (range_g <= range_cut)
        # steps: a fraction of the residual range, at most a fraction of a voxel, except inside an all-air ball
        # (dose to air is not reported), where they may reach its radius
        step = torch.minimum(STEP_RANGE_FRACTION * geometric_range, grid.safe_cm[flat].clamp(min=grid.max_step_cm))
        residual = range_g - step * rho
        final = stop_here | (residual <= range_cut)
        step = torch.where(stop_here, 0.0, torch.where(final, (range_g - range_cut) / rho, step))
        new_energy = torch.where(
            final, 0.0, torch.minimum(tables.energy_at_range(mat, torch.maximum(residual, range_cut)), energy)
        )
        loss = energy.double() - new_energy.double()
        mid = pos + direction * (0.5 * step)[:, None]
        mid_flat, mid_inside = grid.voxel_of(mid)
        tally.index_add_(0, mid_flat, torch.where(mid_inside, loss, 0.0))
        escaped += torch.where(mid_inside, 0.0, loss).sum()
        pos = pos + direction * step[:, None]
        out = ~((pos >= 0) & (pos < grid.extent_cm)).all(dim=1) & ~final
        escaped += torch.where(out, new_energy, 0.0).double().sum()
        alive = ~(final | out)
        e_start, e_end, path_ref = energy[alive], new_energy[alive], range_g[alive]
        pos, direction, step, rho, mat = pos[alive], direction[alive], step[alive], rho[alive], mat[alive]
        energy = e_end
        # multiple scattering, Lynch & Dahl (1991) at the mid-step energy:
        # theta0 = 13.6 MeV / (beta c p) sqrt(s/X0) [1 + 0.088 log10(R / (X0 beta^2))], R = residual CSDA range
        t_mid = 0.5 * (e_start + e_end)
        x_over_x0 = step * rho / tables.radiation_length[mat]
        tau = t_mid / ELECTRON_MASS_MEV
        beta2 = tau * (tau + 2.0) / (tau + 1.0) ** 2
        beta_cp = t_mid * (tau + 2.0) / (tau + 1.0)  # beta c p = T (T + 2 m c^2) / (T + m c^2)
        bracket = (1.0 + 0.088 * torch.log10(path_ref / tables.radiation_length[mat] / beta2)).clamp(min=0.0)
        theta0_sq = (13.6 / beta_cp) ** 2 * x_over_x0 * bracket * bracket  # 13.6 MeV, energies in MeV
        u = torch.rand(energy.numel(), 2, generator=gen, device=dev)
        # 1 - cos(theta) ~ exponential of mean theta0^2 truncated to [0, 2]
        one_minus_cos = -theta0_sq * torch.log1p(u[:, 0] * torch.expm1(-2.0 / theta0_sq))
        direction = rotate(direction, 1.0 - one_minus_cos, _TWO_PI * u[:, 1])
    return escaped
