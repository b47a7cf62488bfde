"""The course notebooks in ``notebooks/`` are stored with their outputs, and they run.

Stored state (default run, cheap): each notebook is committed as one fresh kernel executed
it top to bottom, so a reader on a code-hosting site sees the printed results and the
figures. Its code cells carry execution counts 1, 2, ..., k in order, no cell has an error
output, every cell that draws with matplotlib has a PNG output, no output names a path of
the machine that made it, and the file stays small enough to open in a browser.

Execution (marked ``notebooks``): the default run leaves these out (they take minutes); CI
runs them in its second step (``python -m pytest -m "notebooks or distributed or
interrupt"``). Each notebook is executed in a fresh kernel with nbclient, from the
``notebooks/`` directory, and must finish every cell without raising; the stored outputs are
not compared (timings and solver iterates differ from machine to machine). The kernel runs
on the interpreter that runs the tests (a kernel spec written for this session, not
whatever ``python3`` kernel the machine has registered, which may point at another or a
deleted environment), and the checkout's root is put first on its ``PYTHONPATH``, so the
notebooks exercise the package under test even without an editable install.

Refreshing the stored outputs after a notebook or the package changes::

    python tests/test_notebooks.py                      # all six, one after the other
    python tests/test_notebooks.py 03_training_by_bcd   # or some of them

executes each notebook the same way and writes it back with its outputs.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "fenchel-idl-tests"
CELL_TIMEOUT = 300  # seconds per cell; each notebook is meant to run in under two minutes
MAX_BYTES = 1_000_000  # a stored notebook, outputs included; lower figsize/dpi to stay below
# the kernel spec the notebooks are stored with, so any front end opens them in its default kernel
STORED_KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
# fragments of machine paths (installed packages, home and temporary folders, this checkout)
# that a stored output must not show: they mean nothing to a reader elsewhere
_PATHS = re.compile("|".join(
    [r"site-packages", r"dist-packages", r"/home/", r"/Users/", r"[A-Za-z]:\\"]
    + [re.escape(str(p)) for p in (ROOT, Path(sys.prefix))]))

_MISSING = ("nbclient is not installed, so the notebooks cannot be executed; install the test "
            "extra: pip install -e '.[test]' (or '.[notebooks]')")


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _write_kernel_spec(root: Path) -> None:
    """Write the kernel spec KERNEL for ``sys.executable`` under the JUPYTER_PATH entry root."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (fenchel_idl tests)", "language": "python"}))


def _jupyter_path(root: Path) -> str:
    extra = [os.environ["JUPYTER_PATH"]] if os.environ.get("JUPYTER_PATH") else []
    return os.pathsep.join([str(root)] + extra)


def execute(path: Path):
    """Run the notebook at path in a fresh KERNEL (on JUPYTER_PATH) and return it executed.

    Raises nbclient.exceptions.CellExecutionError (with the cell and its traceback) when a
    cell fails, and a timeout error when a cell runs longer than CELL_TIMEOUT.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # a kernel starting on a loaded machine may take longer than nbclient's default 60 s
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, startup_timeout=CELL_TIMEOUT,
                            kernel_name=KERNEL, record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute(env=_kernel_env())
    return nb


def _code_cells(nb: dict) -> list[dict]:
    return [cell for cell in nb["cells"] if cell["cell_type"] == "code"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def _output_texts(cell: dict) -> list[str]:
    """Every text an output of cell shows: streams, plain/HTML reprs and tracebacks."""
    texts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            texts.append(out["text"] if isinstance(out["text"], str) else "".join(out["text"]))
        for mime in ("text/plain", "text/html"):
            value = out.get("data", {}).get(mime)
            if value is not None:
                texts.append(value if isinstance(value, str) else "".join(value))
        texts.extend(out.get("traceback", []))
    return texts


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory) -> str:
    """A JUPYTER_PATH entry holding the kernel spec KERNEL for ``sys.executable``."""
    root = tmp_path_factory.mktemp("jupyter")
    _write_kernel_spec(root)
    return str(root)


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 6, f"expected the six course notebooks in {NOTEBOOK_DIR}; found {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_stored_executed(path):
    """Stored as one fresh run left them: counts 1..k, no errors, figures, no machine paths."""
    refresh = f"refresh it with: python tests/test_notebooks.py {path.stem}"
    assert path.stat().st_size <= MAX_BYTES, (
        f"{path.name} is {path.stat().st_size} bytes (limit {MAX_BYTES}); make its figures "
        f"smaller (figsize, dpi), then {refresh}")
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = _code_cells(nb)
    counts = [cell.get("execution_count") for cell in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(cells)} in order; {refresh}")
    errors = [i for i, cell in enumerate(cells)
              if any(out.get("output_type") == "error" for out in cell.get("outputs", []))]
    assert not errors, f"{path.name}: code cells {errors} stored an error output; {refresh}"
    no_figure = [i for i, cell in enumerate(cells) if "plt." in _source(cell)
                 and not any("image/png" in out.get("data", {}) for out in cell["outputs"])]
    assert not no_figure, f"{path.name}: code cells {no_figure} draw but store no PNG; {refresh}"
    paths = sorted({m.group(0) for cell in cells for text in _output_texts(cell)
                    for m in _PATHS.finditer(text)})
    assert not paths, f"{path.name}: outputs show machine paths {paths}; remove what prints them"
    assert nb["metadata"].get("kernelspec") == STORED_KERNELSPEC, (
        f"{path.name}: stored kernel spec {nb['metadata'].get('kernelspec')} is not "
        f"{STORED_KERNELSPEC}; {refresh}")


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_path, monkeypatch):
    pytest.importorskip("nbclient", reason=_MISSING)
    pytest.importorskip("ipykernel", reason=_MISSING)
    monkeypatch.setenv("JUPYTER_PATH", _jupyter_path(Path(kernel_path)))
    execute(path)


def _refresh(names: list[str]) -> None:
    """Execute the named notebooks (all when none) and write each back with its outputs."""
    import nbformat

    paths = [p for p in NOTEBOOKS if not names or p.stem in names or p.name in names]
    unknown = set(names) - {p.stem for p in paths} - {p.name for p in paths}
    if unknown:
        raise SystemExit(f"no notebook named {sorted(unknown)} in {NOTEBOOK_DIR}")
    with tempfile.TemporaryDirectory() as tmp:
        _write_kernel_spec(Path(tmp))
        os.environ["JUPYTER_PATH"] = _jupyter_path(Path(tmp))
        for path in paths:
            start = time.perf_counter()
            nb = execute(path)
            nb.metadata["kernelspec"] = dict(STORED_KERNELSPEC)
            nbformat.write(nb, path)
            print(f"{path.name}: {time.perf_counter() - start:.0f} s, "
                  f"{path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    _refresh(sys.argv[1:])
