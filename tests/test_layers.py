"""The import graph follows DESIGN.md's layers: ``lint-imports`` (import-linter) passes.

The contracts are pyproject's ``[tool.importlinter]``. import-linter finds a package's modules
on disk below its folder, but lutc installs ``schedules/`` and ``relay_passes/`` from the top
of the repository as ``lutc.schedules`` and ``lutc.relay_passes``. So the package is laid out
here as it installs (pyproject's ``package-dir``), in a temporary folder, and checked there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lay_out_installed(dest: Path) -> None:
    """Copy each package of pyproject's ``package-dir`` to where it installs under ``dest``."""
    setuptools = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    for package, source in sorted(setuptools["package-dir"].items()):  # parents before children
        shutil.copytree(
            ROOT / source,
            dest.joinpath(*package.split(".")),
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            dirs_exist_ok=True,
        )


def test_imports_follow_the_layers(tmp_path):
    pytest.importorskip("importlinter", reason="import-linter (the 'test' extra) is not installed")
    _lay_out_installed(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", LINT, str(PYPROJECT), "--no-cache"],
        cwd=tmp_path,  # lint-imports puts the working folder first on sys.path: the copy, not the checkout
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"lint-imports found broken contracts:\n{report}"
    assert "0 broken" in report, report
