"""cohort-dosimetry: voxel-level Lu-177 dosimetry over multi-timepoint cohorts."""

__version__ = "0.1.0"
