"""Sphinx helpers of the fenchel_idl documentation.

- ``.. public-names:: package``: a table of ``package.__all__``, each name linked to its entry
  on the page of the layer that defines it, with the first line of its docstring;
- ``.. public-members:: package``: the autodoc entry of each name in ``package.__all__``;
- a docstring adapter: the docstrings are numpydoc whose prose writes formulas as plain text
  (``|x - x0| <= sigma``, ``z_+^2``, indented display lines). Before napoleon reads them, the
  adapter makes each indented display block a literal block and escapes the characters that
  reStructuredText would read as markup (``|``, a trailing ``_``, an unpacking ``*``) outside
  inline code, so the formulas render as written;
- the metadata-routing methods that scikit-learn adds to the estimators (``set_fit_request``,
  ...) are left out: they are scikit-learn's, and documented there.
"""

from __future__ import annotations

import importlib
import inspect
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

# The layer modules whose ``__all__`` the API pages document, lowest layer first; a name of
# ``fenchel_idl.__all__`` links to the first of them that exports it.
LAYERS = ["fenchel_idl.errors", "fenchel_idl.validation", "fenchel_idl.model",
          "fenchel_idl.problem", "fenchel_idl.blocks", "fenchel_idl.drivers",
          "fenchel_idl.analysis"]

# numpydoc sections whose unindented lines are "name : type" items, which napoleon parses.
ITEM_SECTIONS = {"parameters", "other parameters", "returns", "yields", "receives", "raises",
                 "warns", "attributes", "methods", "see also", "keyword arguments"}
CODE = re.compile(r"(:[\w:.+-]+:`[^`]*`|`[^`]*`_{0,2})")
MARKUP = [(re.compile(r"\|"), r"\|"),
          (re.compile(r"(?<=\w)_(?!\w)"), r"\_"),
          (re.compile(r"(?<=[(\[, ])(\*{1,2})(?=[A-Za-z_]\w*\s*[)\],])"),
           lambda match: "\\*" * len(match.group(1)))]
BULLET = re.compile(r"^([-*+]|\d+\.|\(\w\)|\w\))\s+")


def home_of(name: str, value: object) -> str:
    """The documented full name of ``fenchel_idl.<name>``: the first layer exporting it."""
    if inspect.ismodule(value):
        return value.__name__
    for layer in LAYERS:
        if name in getattr(importlib.import_module(layer), "__all__", ()):
            return f"{layer}.{name}"
    raise ValueError(f"fenchel_idl.{name} is exported by no layer module {LAYERS}")


def summary_line(value: object) -> str:
    """The first paragraph of ``value``'s docstring on one line, escaped as prose (empty
    without one); a closing ``::`` (a literal block follows) becomes ``:``."""
    doc = (inspect.getdoc(value) or "").strip()
    first = " ".join(doc.split("\n\n")[0].split())
    return escape(first[:-1] if first.endswith("::") else first)


class PublicNames(SphinxDirective):
    """``.. public-names:: package``: a linked table of ``package.__all__``."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        package = importlib.import_module(self.arguments[0])
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "",
                 "   * - name", "     - what it is"]
        for name in package.__all__:
            value = getattr(package, name)
            target = home_of(name, value) if package.__name__ == "fenchel_idl" \
                else f"{package.__name__}.{name}"
            role = "mod" if inspect.ismodule(value) else "obj"
            lines += [f"   * - :py:{role}:`{name} <{target}>`", f"     - {summary_line(value)}"]
        return self.parse(lines)

    def parse(self, lines: list[str]) -> list[nodes.Node]:
        node = nodes.section()
        nested_parse_with_titles(self.state, StringList(lines, source=self.arguments[0]), node)
        return node.children


class PublicMembers(PublicNames):
    """``.. public-members:: package``: the autodoc entry of each name of ``__all__``, in
    order; a submodule named there gets its own section."""

    def run(self) -> list[nodes.Node]:
        package = importlib.import_module(self.arguments[0])
        lines = [f".. py:currentmodule:: {package.__name__}", ""]
        for name in package.__all__:
            value = getattr(package, name)
            if inspect.ismodule(value):
                title = f"``{value.__name__}``"
                lines += [title, "-" * len(title), "", f".. automodule:: {value.__name__}", "",
                          f".. py:currentmodule:: {package.__name__}", ""]
            else:
                kind = ("class" if inspect.isclass(value)
                        else "function" if callable(value) else "data")
                lines += [f".. auto{kind}:: {package.__name__}.{name}", ""]
        return self.parse(lines)


def escape(text: str, in_code: bool = False) -> str:
    """``text`` with the prose characters that reStructuredText reads as markup escaped,
    inline code and roles left as they are. ``in_code``: the line starts inside an inline
    literal opened on the line before (see :func:`opens_code`)."""
    pieces = text.split("``")
    for index, piece in enumerate(pieces):
        if (index % 2 == 0) != in_code:
            parts = CODE.split(piece)
            for part in range(0, len(parts), 2):
                for pattern, replacement in MARKUP:
                    parts[part] = pattern.sub(replacement, parts[part])
            pieces[index] = "".join(parts)
    return "``".join(pieces)


def opens_code(text: str, in_code: bool) -> bool:
    """Whether an inline literal is still open after ``text`` (it spans lines)."""
    return in_code != (text.count("``") % 2 == 1)


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def adapt(lines: list[str]) -> list[str]:
    """The numpydoc ``lines`` with plain-text display blocks made literal and prose escaped.

    A display block is a run of lines indented deeper than the paragraph above it (with or
    without a blank line between): reStructuredText would read it as a block quote or fail
    with "unexpected indentation"; a ``::`` paragraph before it makes it a literal block.
    Doctests, literal blocks, directives and the "name : type" lines of the item sections
    (Parameters, Returns, ...) stay as they are.
    """
    out: list[str] = []
    section = ""
    base = 0              # indent of the current paragraph's text (after a bullet)
    paragraph = False     # whether a prose paragraph is open
    blank = False         # whether the previous line was blank
    literal = None        # a literal block or directive: the lines deeper stay as they are
    doctest = False       # a doctest block, which runs to the next blank line
    in_code = False       # an inline literal continues from the line before
    for index, line in enumerate(lines):
        text, indent = line.strip(), indent_of(line)
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        doctest = doctest and bool(text) or text.startswith(">>>")
        if doctest or not text or (literal is not None and indent > literal):
            blank, paragraph = not text, paragraph and not doctest
            out.append(line)
            continue
        literal = None
        if len(following) >= 3 and set(following) == {"-"}:
            section, paragraph = text.lower(), False
        elif (set(text) == {"-"} and len(text) >= 3) or (section in ITEM_SECTIONS and indent == 0):
            paragraph = False
        elif paragraph and indent > base:
            out += ([] if blank else [""]) + [" " * base + "::", ""]
            literal, paragraph = base, False
        else:
            if not paragraph or blank or indent < base:
                bullet = BULLET.match(text)
                base, paragraph = indent + (bullet.end() if bullet else 0), True
                in_code = False
            if text.startswith(".. "):
                literal, paragraph = indent, False
            else:
                line = line[:indent] + escape(line[indent:], in_code)
                in_code = opens_code(text, in_code)
                if text.endswith("::"):
                    literal, paragraph = base, False
        blank = False
        out.append(line)
    return out


def process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    """autodoc-process-docstring: adapt the docstring; a constant (a dict, a tuple, ...)
    without a docstring of its own shows its value, not its type's docstring."""
    if what in ("data", "attribute") and not inspect.isclass(obj) and not callable(obj):
        own = inspect.getdoc(type(obj)) or ""
        if "\n".join(lines).strip() == own.strip():
            lines[:] = []
            return
    lines[:] = adapt(lines)


def skip_member(app, what, name, obj, skip, options):
    """autodoc-skip-member: leave out scikit-learn's metadata-routing methods."""
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    app.add_directive("public-names", PublicNames)
    app.add_directive("public-members", PublicMembers)
    # before napoleon (priority 500), which turns the numpydoc sections into fields
    app.connect("autodoc-process-docstring", process_docstring, priority=400)
    app.connect("autodoc-skip-member", skip_member)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
