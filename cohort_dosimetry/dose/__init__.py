"""Dose-rate maps of a scan: one module per method (``_dvk``, ``_cnn``, ``_mc``) behind one registry.

:func:`dose_rates` is the entry point; :func:`dose_method` gives a method's store arrays and settings.
"""

from cohort_dosimetry.dose import _cnn, _dvk, _mc  # noqa: F401  (each registers its method)
from cohort_dosimetry.dose._rates import dose_rates
from cohort_dosimetry.dose._registry import REGISTRY, DoseInputs, DoseMethod, dose_arrays, dose_method

__all__ = ["REGISTRY", "DoseInputs", "DoseMethod", "dose_arrays", "dose_method", "dose_rates"]
