"""The site's Sphinx extension (helpers/book/site.py) without a build; tests/test_site_browser.py
checks its effects on the built pages."""

import html
import io
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree

import pytest
import yaml

from helpers.book import runner as book
from helpers.book import site

from conftest import ROOT

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



def bibliography_keys() -> list[str]:
    from pybtex.database import parse_file

    return list(parse_file(ROOT / "references.bib").entries)


def citation_texts(tmp_path, keys: list[str], role: str) -> list[str]:
    """How the site cites each of ``keys`` with ``role`` (``p`` or ``t``): a small Sphinx
    project with the book's bibliography, reference style and site extension, one
    paragraph per key."""
    from sphinx.application import Sphinx

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    source, out = tmp_path / "source", tmp_path / "out"
    source.mkdir()
    shutil.copy2(ROOT / "references.bib", source / "references.bib")
    (source / "conf.py").write_text(
        'extensions = ["sphinxcontrib.bibtex", "helpers.book.site"]\n'
        'bibtex_bibfiles = ["references.bib"]\n'
        f'bibtex_reference_style = {config["sphinx"]["config"]["bibtex_reference_style"]!r}\n')
    paragraphs = "\n\n".join(f":cite:{role}:`{key}`" for key in keys)
    (source / "index.rst").write_text(
        f"Citations\n=========\n\n{paragraphs}\n\n.. bibliography::\n")
    app = Sphinx(str(source), str(source), str(out), str(tmp_path / "doctrees"), "html",
                 status=None, warning=io.StringIO(), freshenv=True)
    app.build()
    page = (out / "index.html").read_text()
    spans = re.findall(r'<span class="bibtex-citation"[^>]*>(.*?)</span>', page, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", span)).strip() for span in spans]


@pytest.mark.parametrize("role", ["p", "t"])
def test_no_two_works_of_the_bibliography_are_cited_alike(tmp_path, role):
    keys = bibliography_keys()
    texts = citation_texts(tmp_path, keys, role)
    assert len(texts) == len(keys)
    alike = {text: [k for k, t in zip(keys, texts) if t == text] for text in texts
             if texts.count(text) > 1}
    assert alike == {}
    # the two Keras examples by one author in one year tell themselves apart by a letter
    cited = dict(zip(keys, texts))
    assert {cited["salama2021vitexample"], cited["salama2021perceiverexample"]} == (
        {"[Salama, 2021a]", "[Salama, 2021b]"} if role == "p" else
        {"Salama [2021a]", "Salama [2021b]"})


def test_a_work_no_other_shares_author_and_year_with_is_cited_without_a_letter(tmp_path):
    assert citation_texts(tmp_path, ["dosovitskiy2021vit", "salama2021vitexample"], "p")[0] \
        == "[Dosovitskiy et al., 2021]"


def test_the_favicon_is_a_square_picture_the_site_build_copies():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    favicon = Path(config["html"]["favicon"])
    assert favicon.suffix == ".svg" and (ROOT / favicon).is_file()
    # the runner builds the site from a copy of book/ and of SITE_FOLDERS
    assert favicon.parts[0] in ("book", *book.SITE_FOLDERS)
    svg = ElementTree.parse(ROOT / favicon).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    _, _, width, height = map(float, svg.get("viewBox").split())
    assert width == height
