"""The package works when installed from a wheel: the wheel is built from a copy of the
checkout, installed into a fresh virtual environment outside the checkout, and the main job
and the quick experiments run there, from a directory outside the checkout, on the problem
files the wheel ships.

Nothing is downloaded: the wheel is built without build isolation when this environment
can build it (setuptools with ``bdist_wheel``), it is installed with ``--no-deps
--no-index``, and the fresh environment takes the dependencies from this one (a ``.pth``
file naming this environment's site-packages; ``--system-site-packages`` alone reaches only
the base interpreter's packages when this environment is itself a virtual environment).
Marked ``wheel``: left out of the default run, run by CI's second step.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[2]

#: The wheel ships the code and the problem files, not the 42 MB of image archives.
MAX_WHEEL_BYTES = 2_000_000

#: Prints the site-packages directory of the interpreter that runs it.
_SITE = "import sysconfig; print(sysconfig.get_paths()['purelib'])"

#: Prints where fenchel_idl was imported from and where its applications find the problems.
_WHERE = ("import fenchel_idl; from fenchel_idl.apps.common import problems_dir; "
          "print(fenchel_idl.__file__); print(problems_dir())")


def _can_build_without_isolation() -> bool:
    """setuptools from 70.1 builds wheels itself; older ones need the ``wheel`` package."""
    try:
        version = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        return False
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _check(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900
           ) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"{cmd} exited with {proc.returncode}\n--- stdout\n"
                                  f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, fenchel-idl script, environment, work directory) of a fresh virtual
    environment with the wheel installed, all outside the checkout."""
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("fenchel_idl", "problems"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", MPLBACKEND="Agg")
    dist = base / "dist"
    build = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(dist),
             "--quiet"]
    _check(build + (["--no-build-isolation"] if _can_build_without_isolation() else []),
           base, env)
    (wheel,) = dist.glob("fenchel_idl-*.whl")
    assert wheel.stat().st_size < MAX_WHEEL_BYTES, wheel.stat().st_size
    target = base / "venv"
    venv.create(target, system_site_packages=True, with_pip=False, symlinks=True)
    python = target / "bin" / "python"
    site = Path(_check([str(python), "-c", _SITE], base, env).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_fenchel_idl_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    _check([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
            "--no-deps", "--no-index", "--force-reinstall", str(wheel)], base, env)
    work = base / "work"
    work.mkdir()
    return python, target / "bin" / "fenchel-idl", env, work


def test_the_installed_package_is_the_wheel(installed):
    python, _, env, work = installed
    out = _check([str(python), "-c", _WHERE], work, env).stdout.splitlines()
    package, problems = Path(out[0]), Path(out[1])
    venv_dir = python.parents[1]
    assert venv_dir in package.parents and ROOT not in package.parents
    assert problems == package.parent / "_shipped_problems"
    assert (problems / "cosine_regression.toml").is_file()


def test_main_job_from_the_wheel(installed):
    python, tool, env, work = installed
    problems = _check([str(python), "-c", _WHERE], work, env).stdout.splitlines()[1]
    out = work / "cosine"
    proc = _check([str(tool), "run", f"{problems}/cosine_regression.toml", "--out", str(out),
                   "--max-sweeps", "3"], work, env)
    assert "3 sweeps in" in proc.stdout
    for name in ("model.npz", "history.json", "certificate.json", "convergence.png"):
        assert (out / name).is_file(), name


def test_quick_experiment_from_the_wheel(installed):
    _, tool, env, work = installed
    out = work / "experiments"
    _check([str(tool), "--quiet", "experiments", "--quick", "--only", "cosine_regression",
            "--out", str(out)], work, env)
    report = (out / "report.md").read_text()
    assert "cosine_regression" in report and "skipped" not in report
    assert (out / "results.json").is_file()


def test_own_data_example_by_name_from_the_wheel(installed):
    """The shipped CSV example, named without a path: the tool finds the installed problem
    file, whose data path resolves next to it inside the installed package."""
    _, tool, env, work = installed
    out = work / "diabetes"
    proc = _check([str(tool), "--quiet", "run", "diabetes_csv", "--out", str(out),
                   "--max-sweeps", "2"], work, env)
    assert "test: {'rmse'" in proc.stdout
    assert (out / "model.npz").is_file()
