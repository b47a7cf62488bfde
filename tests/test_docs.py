"""The documentation builds with warnings as errors and documents every public name.

Builds docs/ with Sphinx (``python -m sphinx -W --keep-going -b html``) into a temporary
folder, as CI does, then checks the built pages: one API page per layer, every name of
``fenchel_idl.__all__`` linked from the top-level page, every name of each layer's
``__all__`` described on its layer's page, and the guide pages (how training works, the
architecture, the measured results) present. Needs the ``docs`` extra
(``pip install -e ".[docs]"``); skipped without Sphinx.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import fenchel_idl

pytestmark = pytest.mark.docs

DOCS = Path(__file__).resolve().parents[1] / "docs"
LAYERS = ["errors", "model", "problem", "blocks", "drivers", "analysis"]


def anchor(package: str, name: str) -> str:
    """The HTML id autodoc gives ``package.name`` (a submodule: its module anchor)."""
    value = getattr(importlib.import_module(package), name)
    return f"module-{value.__name__}" if inspect.ismodule(value) else f"{package}.{name}"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx", reason="the docs build needs Sphinx: pip install -e '.[docs]'")
    pytest.importorskip("myst_parser",
                        reason="the docs build needs myst-parser: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("docs_html")
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)],
        check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"sphinx -W failed:\n{run.stdout}\n{run.stderr}"
    return out


def test_api_pages_exist_and_name_the_main_entry_points(built):
    for page in ["index", "fenchel_idl", *LAYERS]:
        assert (built / "api" / f"{page}.html").is_file(), page
    top = (built / "api" / "fenchel_idl.html").read_text()
    assert "solve_bcd" in top and "ImplicitModel" in top
    assert 'id="fenchel_idl.drivers.solve_bcd"' in (built / "api" / "drivers.html").read_text()
    assert 'id="fenchel_idl.model.ImplicitModel"' in (built / "api" / "model.html").read_text()


def test_every_top_level_name_links_to_its_description(built):
    top = (built / "api" / "fenchel_idl.html").read_text()
    pages = {layer: (built / "api" / f"{layer}.html").read_text() for layer in LAYERS}
    for name in fenchel_idl.__all__:
        link = next((f'href="{layer}.html#{anchor(f"fenchel_idl.{layer}", name)}"'
                     for layer in LAYERS
                     if name in importlib.import_module(f"fenchel_idl.{layer}").__all__),
                    None)
        if link is None:  # a module exported at the top (errors): its own module anchor
            link = f'href="{name}.html#module-fenchel_idl.{name}"'
            assert f'id="module-fenchel_idl.{name}"' in pages[name], name
        assert link in top, f"fenchel_idl.{name}: no link {link} on the top-level page"


@pytest.mark.parametrize("layer", LAYERS)
def test_every_public_name_of_a_layer_is_described(built, layer):
    page = (built / "api" / f"{layer}.html").read_text()
    package = f"fenchel_idl.{layer}"
    missing = [name for name in importlib.import_module(package).__all__
               if f'id="{anchor(package, name)}"' not in page]
    assert not missing, f"{package}: not described on api/{layer}.html: {missing}"


def test_guide_pages_carry_the_readme_section_and_the_results(built):
    training = (built / "training.html").read_text()
    assert "Block-coordinate descent" in training and "Certificates" in training
    results = (built / "results.html").read_text()
    assert "Measured results" in results
    assert "Architecture" in (built / "architecture.html").read_text()
