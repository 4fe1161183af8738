"""The site's Sphinx extension (helpers/book/site.py) without a build; tests/test_site_browser.py
checks its effects on the built pages."""

from types import SimpleNamespace

import pytest

from helpers.book import site

pytestmark = pytest.mark.keras_free  # see conftest.py


def script(filename, **attributes):
    return SimpleNamespace(filename=filename, attributes=attributes)


def test_repeated_scripts_are_dropped_and_the_order_kept():
    inline = "const THEBE_JS_URL = 'x'"
    scripts = [script("_static/doctools.js"), script(None, body=inline),
               script("", body=inline), script("_static/require.js"),
               script("_static/require.js", defer="defer"), script("_static/doctools.js")]
    context = {"script_files": scripts}
    site.drop_repeated_scripts(None, "page", "page.html", context, None)
    assert context["script_files"] == [scripts[0], scripts[1], scripts[3], scripts[4]]

