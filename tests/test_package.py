"""The installed package: import cost, layout of installed modules, editable and wheel installs."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

import lutc

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _run_python(code: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_version_is_the_installed_distribution_version():
    assert lutc.__version__ == PYPROJECT["project"]["version"]


def test_import_is_fast_and_skips_tensor_intrinsics(tmp_path):
    """Importing lutc must not parse TVM's TensorIR intrinsics (~45 s on these machines)."""
    start = time.perf_counter()
    out = _run_python("import sys, lutc; print('tvm.s_tir.tensor_intrin' in sys.modules)", tmp_path)
    assert out.strip() == "False"
    assert time.perf_counter() - start < 10


def test_schedules_and_passes_install_inside_lutc(tmp_path):
    out = _run_python(
        "import importlib.util as u, lutc.schedules, lutc.relay_passes;"
        "print(u.find_spec('schedules'), u.find_spec('relay_passes'))",
        tmp_path,
    )
    assert out.split() == ["None", "None"]


def _package_dirs() -> dict[str, Path]:
    """Every directory with an __init__.py, named as it installs."""
    roots = {"lutc": ROOT / "lutc", "lutc.schedules": ROOT / "schedules", "lutc.relay_passes": ROOT / "relay_passes"}
    found = {}
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found[".".join((name, *rel))] = init.parent
    return found


def test_pyproject_lists_every_package():
    assert sorted(PYPROJECT["tool"]["setuptools"]["packages"]) == sorted(_package_dirs())


@pytest.mark.slow
def test_wheel_holds_lutc_only(tmp_path):
    """A wheel install gets lutc/schedules and lutc/relay_passes, and no top-level modules."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("lutc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"lutc", f"lutc-{lutc.__version__}.dist-info"}
    for module in ("lutc/quant/lut.py", "lutc/schedules/__init__.py", "lutc/relay_passes/__init__.py"):
        assert module in names
