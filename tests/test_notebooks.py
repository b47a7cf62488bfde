"""The course notebooks in ``notebooks/`` run top to bottom without an error.

Marked ``notebooks``: the default run leaves the executions out (they take minutes), CI
runs them in its second step (``python -m pytest -m "notebooks or distributed or
interrupt"``); the cheap checks below stay in the default run. Each notebook is executed in a
fresh kernel with nbclient, from the ``notebooks/`` directory, and must finish every cell
without raising. The kernel runs on the interpreter that runs the tests (a kernel spec
written for this session, not whatever ``python3`` kernel the machine has registered, which
may point at another or a deleted environment), and the checkout's root is put first on its
``PYTHONPATH``, so the notebooks exercise the package under test even without an editable
install.

The notebooks are stored without outputs; :func:`test_notebooks_are_stored_clean` checks it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "fenchel-idl-tests"
CELL_TIMEOUT = 300  # seconds per cell; each notebook is meant to run in under two minutes

_MISSING = ("nbclient is not installed, so the notebooks cannot be executed; install the test "
            "extra: pip install -e '.[test]' (or '.[notebooks]')")


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory) -> str:
    """A JUPYTER_PATH entry holding the kernel spec KERNEL for ``sys.executable``."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (fenchel_idl tests)", "language": "python"}))
    return str(root)


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 6, f"expected the six course notebooks in {NOTEBOOK_DIR}; found {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_stored_clean(path):
    """No outputs or execution counts are committed (they are generated when run)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before saving"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_path, monkeypatch):
    pytest.importorskip("nbclient", reason=_MISSING)
    pytest.importorskip("ipykernel", reason=_MISSING)
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        [kernel_path] + ([os.environ["JUPYTER_PATH"]] if os.environ.get("JUPYTER_PATH") else [])))
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # a kernel starting on a loaded machine may take longer than nbclient's default 60 s
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, startup_timeout=CELL_TIMEOUT,
                            kernel_name=KERNEL,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    # raises nbclient.exceptions.CellExecutionError (with the cell and its traceback) when a
    # cell fails, and a timeout error when a cell runs longer than CELL_TIMEOUT
    client.execute(env=_kernel_env())
