"""Helpers the applications share: where the problem files are, how a model is scored, the
results document (``docs/results.md``) whose sections the commands rewrite, and the command
line's log handler."""

from __future__ import annotations

import logging
import platform
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from numpy.typing import ArrayLike

from fenchel_idl.problem import prediction_metric

__all__ = ["RESULTS_PATH", "SHIPPED_PROBLEMS", "configure_logging", "machine_line",
           "model_metric", "problems_dir", "read_section", "rmse", "score", "write_section"]

#: The folder inside the installed package that holds the shipped problem files: setuptools'
#: ``package-dir`` (pyproject.toml) installs the top-level ``problems/`` folder there.
SHIPPED_PROBLEMS = "_shipped_problems"

#: The results document of the checkout.
RESULTS_PATH = Path(__file__).resolve().parents[2] / "docs" / "results.md"


def problems_dir(given: str | Path | None = None) -> Path:
    """The directory of the problem files.

    In order: ``given``; the problem files shipped inside the installed package (the
    ``problems/`` folder of the checkout, installed as ``fenchel_idl/_shipped_problems`` by
    a wheel); the ``problems/`` folder of the source checkout holding this package; and
    ``problems/`` of the working directory (returned even when missing, so that the error
    names it).
    """
    if given is not None:
        return Path(given)
    shipped = resources.files("fenchel_idl") / SHIPPED_PROBLEMS
    candidates = [shipped] if isinstance(shipped, Path) else []
    candidates += [Path(__file__).resolve().parents[2] / "problems", Path.cwd() / "problems"]
    for base in candidates:
        if base.is_dir():
            return base
    return Path.cwd() / "problems"


def score(model: Any, U: ArrayLike, target: ArrayLike, task: str, **predict_options: Any
          ) -> float:
    """The one figure of :func:`fenchel_idl.problem.prediction_metric` for ``model`` on the
    inputs ``U`` (columns): accuracy (``task="classification"``, ``target`` labels or one-hot
    columns) or RMSE (``task="regression"``)."""
    (value,) = prediction_metric(model.predict(U, **predict_options), target, task).values()
    return value


def rmse(model: Any, U: ArrayLike, Y: ArrayLike) -> float:
    """Root mean squared error of ``model`` on inputs ``U`` against targets ``Y``."""
    return score(model, U, Y, "regression")


def model_metric(model: Any, ds: Any) -> dict[str, float]:
    """``{"accuracy": ...}`` on a labelled data set, else ``{"rmse": ...}``."""
    target = ds.Y if ds.task == "regression" else ds.labels
    return prediction_metric(model.predict(ds.U), target, ds.task)


# -- the results document -----------------------------------------------------------------------

def _markers(name: str) -> tuple[str, str]:
    return f"<!-- begin results: {name} -->", f"<!-- end results: {name} -->"


def write_section(name: str, text: str, path: str | Path | None = None) -> Path:
    """Put ``text`` between the marker comments of section ``name`` of the results document
    (``path``, default :data:`RESULTS_PATH`), replacing what was there; a section not yet in
    the document is appended, and a missing document is created. Returns the path."""
    path = RESULTS_PATH if path is None else Path(path)
    begin, end = _markers(name)
    block = f"{begin}\n{text.strip()}\n{end}"
    old = path.read_text() if path.is_file() else "# Measured results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _: block, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
    return path


def read_section(name: str, path: str | Path | None = None) -> str | None:
    """The text of section ``name`` of the results document, or None when it has none."""
    path = RESULTS_PATH if path is None else Path(path)
    if not path.is_file():
        return None
    begin, end = _markers(name)
    found = re.search(re.escape(begin) + r"\n(.*?)\n" + re.escape(end), path.read_text(),
                      re.DOTALL)
    return None if found is None else found.group(1)


def machine_line() -> str:
    """The machine and Python version, for a results section."""
    return f"Machine: {platform.platform()}, Python {platform.python_version()}."


#: The logger the library writes to (children such as ``fenchel_idl.drivers`` included).
LOGGER = "fenchel_idl"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record is emitted,
    so that a stderr redirected or captured after the tool started receives the lines."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Formatter(logging.Formatter):
    """The message alone at INFO; other levels say their name first (``warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname.lower()}: {text}"


def configure_logging(verbose: bool = False, quiet: bool = False) -> logging.Logger:
    """Set up the ``fenchel_idl`` logger for the command line and return it.

    Level INFO, WARNING with ``quiet``, DEBUG with ``verbose`` (``verbose`` wins when both
    are given); one plain handler on stderr, replacing the one an earlier call added (so the
    tool can run several times in one process without doubling its lines).
    """
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    return logger
