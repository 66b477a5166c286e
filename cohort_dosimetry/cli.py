"""The ``cohort-dosimetry`` command line.

Each subcommand lives in its own module under :mod:`cohort_dosimetry.commands` and exposes
``add_arguments(parser)``, ``run(args) -> int`` and a module docstring whose first line is its help.
This file only dispatches. Only the chosen subcommand's module is imported; the list of subcommands and their help
lines are read from the modules' source, so ``cohort-dosimetry --help`` answers without importing numpy or torch.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path

from cohort_dosimetry import __version__

_COMMANDS_DIR = Path(__file__).parent / "commands"


def _subcommands() -> dict[str, tuple[str, str]]:
    """Command name -> (module name, module docstring), read from the source without importing it."""
    found = {}
    for path in sorted(_COMMANDS_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        found[path.stem.replace("_", "-")] = (f"cohort_dosimetry.commands.{path.stem}", doc.strip())
    return found


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; the arguments of a subcommand are added when it is the one named in ``argv``."""
    argv = sys.argv[1:] if argv is None else argv
    commands = _subcommands()
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="cohort-dosimetry", description="Voxel-level Lu-177 dosimetry over multi-timepoint SPECT/CT cohorts."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (modname, doc) in commands.items():
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc)
        if name == chosen:
            mod = importlib.import_module(modname)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
