"""MC: the Monte Carlo reference of our own engine (``physics.dose_rate_mc``), with its statistical uncertainty."""

from __future__ import annotations

from cohort_dosimetry import physics
from cohort_dosimetry.constants import DOSE_NUCLIDE

from ._registry import DoseInputs, DoseMethod, Maps, register


def _compute(inputs: DoseInputs) -> Maps:
    mc, uncertainty = physics.dose_rate_mc(
        inputs.activity_bq,
        inputs.density,
        inputs.spacing_mm,
        nuclide=DOSE_NUCLIDE,
        n_decays=int(inputs.mc_decays),
        seed=inputs.seed,
        device=inputs.device,
    )
    provenance = {"n_decays": int(inputs.mc_decays), "seed": int(inputs.seed)}
    return {
        "dose_rate_mc": (mc, {"long_name": "dose-rate, Monte Carlo", **provenance}),
        "dose_rate_mc_uncertainty": (
            uncertainty,
            {"long_name": "relative uncertainty (1 sigma) of the MC dose-rate", "units": "1", **provenance},
        ),
    }


def _settings(spacing_mm, mc_decays, seed, **_) -> dict:
    return {
        "engine": "cohort_dosimetry.physics.dose_rate_mc",
        "engine_version": str(physics.ENGINE_VERSION),
        "nuclide": DOSE_NUCLIDE,
        "n_decays": int(mc_decays),
        "seed": int(seed),
    }


MC = register(DoseMethod("mc", ("dose_rate_mc", "dose_rate_mc_uncertainty"), _compute, _settings))
