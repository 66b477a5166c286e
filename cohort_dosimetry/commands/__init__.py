"""Subcommands of the ``cohort-dosimetry`` CLI, one module each (see cohort_dosimetry.cli)."""
