"""Lazy public names for subpackages: ``name -> private module`` resolved on first use.

Importing one part of a subpackage (say ``hu_to_density``) then does not pay for the start-up of another (torch,
matplotlib, highdicom, PyTomography).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, public: Mapping[str, str]) -> tuple[Callable[[str], object], list[str]]:
    """A module ``__getattr__`` and ``__all__`` for ``package`` whose names live in its private modules.

    Usage in a package's ``__init__``: ``__getattr__, __all__ = lazy_exports(__name__, {"name": "_module", ...})``.
    """

    def __getattr__(name: str):
        try:
            module = public[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__, sorted(public)
