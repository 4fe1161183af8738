"""A Sphinx extension with the book site's own fixes (``extra_extensions`` in _config.yml).

- The widget manager (``vendor/html-manager/embed-amd.js``) loads its icon
  fonts from beside the RequireJS module ``@jupyter-widgets/html-manager/dist``,
  which RequireJS would place under the page's own folder. Each page maps that
  module to the site's ``_static/html-manager/`` (RequireJS reads a global
  ``require`` object as its configuration), found from the page's
  ``data-content_root``, so it is right at any depth and under any prefix.
- sphinx-thebe adds its inline configuration script after the HTML builder has
  started, and Sphinx 7 then puts it on every page twice (one copy with the
  filename ``None``, one with ``''``); the second ``const`` declaration is a
  JavaScript error on every page. Repeated scripts are dropped.
- The widget controls typeset their labels through MathJax 2's
  ``MathJax.Hub.Queue`` whenever ``window.MathJax`` exists; the site runs
  MathJax 3, which has no ``Hub``. Pages with both get a small ``Hub.Queue``
  that typesets the element with MathJax 3 instead.
- ``static/book.css``: code and outputs wrap instead of scrolling out of
  view, text outputs are set a little smaller so a Keras summary keeps its
  lines, and tables fit the text column.
- Citations by author and year (``bibtex_reference_style:
  author_year_distinct`` in _config.yml): sphinxcontrib-bibtex's author-year
  style, except that two works whose citations would read the same ("Salama,
  2021") get the letter that tells their bibliography labels apart ("Sal21a",
  "Sal21b"): "Salama, 2021a" and "Salama, 2021b".
"""

from __future__ import annotations

import re
from pathlib import Path

from pybtex.database import Entry
from pybtex.style.template import node
from sphinxcontrib.bibtex.plugin import register_plugin
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

STATIC = Path(__file__).with_name("static")

WIDGET_ASSETS = (
    "var require = {paths: {'@jupyter-widgets/html-manager/dist': new URL("
    "document.documentElement.dataset.content_root + '_static/html-manager', "
    "document.baseURI).href}};"
)

MATHJAX2_QUEUE = (
    "document.addEventListener('DOMContentLoaded', () => {"
    " const mj = window.MathJax;"
    " if (mj && mj.startup && !mj.Hub) {"
    "  mj.Hub = {Queue: (call) => mj.startup.promise.then("
    "   () => mj.typesetPromise([call[call.length - 1]]))};"
    " }"
    "});"
)


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


# pybtex's alpha labels (the bibliography's default) end in the year's last two
# digits, then a letter when two works would otherwise share the label.
_LABEL_LETTER = re.compile(r"\d\d([a-z]+)$")


def year_letter(label: str) -> str:
    """The letter that sets a bibliography label apart from another work's ("Sal21a"
    gives "a"), or "" when the label is unique."""
    found = _LABEL_LETTER.search(label)
    return found.group(1) if found else ""


@node
def with_year_letter(children, data):
    """Formats its one child with the entry's year followed by ``year_letter`` of the
    entry's bibliography label, so every template below it that shows the year
    shows the letter too."""
    (template,) = children
    letter = year_letter(data["formatted_entry"].label)
    entry = data["entry"]
    if letter and entry.fields.get("year"):
        dated = Entry(entry.original_type, fields=entry.fields, persons=entry.persons)
        dated.key = entry.key
        dated.fields["year"] = entry.fields["year"] + letter
        data = {**data, "entry": dated}
    return template.format_data(data)


class DistinctAuthorYearStyle(AuthorYearReferenceStyle):
    """Author-year citations in which distinct works never read the same."""

    def inner(self, role_name: str):
        return with_year_letter[super().inner(role_name)]


def add_static_folder(app) -> None:
    app.config.html_static_path.append(str(STATIC))


def setup(app):
    register_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_distinct",
                    DistinctAuthorYearStyle)
    app.connect("builder-inited", add_static_folder)
    app.add_css_file("book.css")
    # before RequireJS and the widget manager (myst-nb adds them at priority 500)
    app.add_js_file(None, body=WIDGET_ASSETS, priority=400)
    app.add_js_file(None, body=MATHJAX2_QUEUE, priority=400)
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
