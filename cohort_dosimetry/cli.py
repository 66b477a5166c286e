"""The ``cohort-dosimetry`` command line.

Each subcommand lives in its own module under :mod:`cohort_dosimetry.commands` and exposes
``add_arguments(parser)``, ``run(args) -> int`` and a one-line module docstring used as its help.
This file only dispatches, so subcommands stay next to nothing but their own argument parsing.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from cohort_dosimetry import __version__, commands


def _subcommands() -> dict[str, object]:
    mods = {}
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        mods[info.name.replace("_", "-")] = f"{commands.__name__}.{info.name}"
    return dict(sorted(mods.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cohort-dosimetry",
        description="Voxel-level Lu-177 dosimetry over multi-timepoint SPECT/CT cohorts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, modname in _subcommands().items():
        mod = importlib.import_module(modname)
        doc = (mod.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None, description=(mod.__doc__ or "").strip())
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
