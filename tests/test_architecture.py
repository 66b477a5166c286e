"""The package's layering, checked on its source: what import-linter enforces between layers (`make lint`), plus the
rule it cannot express: no package imports another package's private module (a ``_name`` module or name path)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _owner(path: Path, root: Path) -> tuple[str, ...]:
    """The package a module belongs to: ("flows",) or ("cohort_dosimetry", "<subpackage or module>")."""
    parts = path.relative_to(root).with_suffix("").parts
    return parts[:1] if parts[0] == "flows" else parts[:2]


def _imported_modules(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def _private_imports_across_packages(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted([*root.joinpath("cohort_dosimetry").rglob("*.py"), *root.joinpath("flows").rglob("*.py")]):
        owner = _owner(path, root)
        for line, module in _imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            parts = module.split(".")
            if parts[0] not in ("cohort_dosimetry", "flows"):
                continue
            private = next(
                (i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")), None
            )
            if private is not None and tuple(parts[:private]) != owner:
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return found


def test_no_package_imports_another_packages_private_module():
    assert _private_imports_across_packages() == []


def test_the_check_sees_a_private_import(tmp_path):
    """The rule above is not vacuous: a private import from another package is found, one from its own is not."""
    package = tmp_path / "cohort_dosimetry" / "io"
    package.mkdir(parents=True)
    (tmp_path / "flows").mkdir()
    (package / "_x.py").write_text(
        "from cohort_dosimetry.physics._dvk import dose_rate_dvk\nfrom cohort_dosimetry.io._volume import Volume\n"
    )
    assert _private_imports_across_packages(tmp_path) == [
        "cohort_dosimetry/io/_x.py:1 imports cohort_dosimetry.physics._dvk.dose_rate_dvk"
    ]
