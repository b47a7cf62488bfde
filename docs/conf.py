"""Sphinx configuration of the fenchel_idl documentation.

Build (warnings are errors, as in CI)::

    python -m pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs /tmp/docs_html

The API pages render the numpydoc docstrings with autodoc and napoleon; the Markdown pages
(the architecture, the measured results) go through myst-parser. The directives and the
docstring adapter are in ``_ext/fenchel_docs.py``: each page lists its package's ``__all__``,
and the top-level page links each name to the layer page that describes it, so no object is
described twice.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fenchel_idl

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "fenchel_idl"
author = "the fenchel_idl authors"
release = fenchel_idl.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
    "fenchel_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext"]
root_doc = "index"

# numpydoc-style docstrings; "Attributes" sections become :ivar: fields so a record's fields are
# described once (autodoc does not document them a second time as attributes).
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True
napoleon_use_rtype = False

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"

myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

html_theme = "alabaster"
html_title = f"fenchel_idl {release}"
html_static_path: list[str] = []
