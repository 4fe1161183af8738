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
  lines, and the results table fits the text column.
"""

from __future__ import annotations

from pathlib import Path

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


def add_static_folder(app) -> None:
    app.config.html_static_path.append(str(STATIC))


def setup(app):
    app.connect("builder-inited", add_static_folder)
    app.add_css_file("book.css")
    # before RequireJS and the widget manager (myst-nb adds them at priority 500)
    app.add_js_file(None, body=WIDGET_ASSETS, priority=400)
    app.add_js_file(None, body=MATHJAX2_QUEUE, priority=400)
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
