"""The built site in a real browser: headless Chromium driven by Playwright.

The site is served from localhost and every request to another host is
blocked and recorded, so these tests also prove that the pages need no CDN:
the widget manager and MathJax come from the site's own ``_static/vendor/``.
Set ``CHROMIUM`` to the browser's executable when it is not on the PATH as
``chromium``, ``chromium-browser`` or ``google-chrome``.

``BOOK_SITE`` names a build tree to check instead of the smoke build (see
``site``): one whose HTML was rebuilt alone after a change to the site's
configuration or extension, without executing the notebooks again.
"""

import functools
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from helpers.book import runner as book

from conftest import ROOT, shown_records

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.sync_api")


def chromium_executable() -> str | None:
    candidates = [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    for candidate in filter(None, candidates):
        found = shutil.which(candidate)
        if found:
            return found
    return None


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def site(request):
    """The build the tests check: the smoke build, or the build tree ``BOOK_SITE`` names
    (as ``runner.reusable_build`` describes a build)."""
    from helpers.book import publish

    if not os.environ.get("BOOK_SITE"):
        return request.getfixturevalue("smoke_build")
    tree = Path(os.environ["BOOK_SITE"]).resolve()
    manifest = json.loads((tree / book.MANIFEST).read_text())
    return {"site": tree, "index": tree / "_build" / "html" / "index.html",
            "executed": publish.executed_folder(tree) if manifest.get("pages") else tree}


@pytest.fixture(scope="module")
def site_url(site):
    root = site["site"] / "_build" / "html"
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no Chromium found: set CHROMIUM to its executable")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


class Visit:
    """One page load, with everything that went wrong on the way."""

    def __init__(self, browser, site_url, path, width=1280):
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.errors, self.offsite, self.failed = [], [], []
        local = urlparse(site_url).netloc

        def route(request_route):
            url = request_route.request.url
            if urlparse(url).scheme in ("http", "https") and urlparse(url).netloc != local:
                self.offsite.append(url)
                request_route.abort()
            else:
                request_route.continue_()

        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("console", lambda message: message.type == "error"
                     and self.errors.append(f"console: {message.text} ({message.location})"))
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("response", lambda response: response.status >= 400
                     and self.failed.append(f"{response.status} {response.url}"))
        self.page.goto(f"{site_url}/{path}", wait_until="load")
        self.page.wait_for_load_state("networkidle")

    def close(self):
        self.context.close()


@pytest.fixture
def visit(browser, site_url):
    opened = []

    def open_page(path, width=1280):
        opened.append(Visit(browser, site_url, path, width))
        return opened[-1]

    yield open_page
    for page in opened:
        page.close()


def site_pages() -> list[str]:
    """Every page of the table of contents, plus the index, search and general index."""
    pages = [str(notebook.with_suffix(".html")) for notebook in book.toc_notebooks(ROOT)]
    return ["index.html", "book/intro.html", *pages, "book/references.html",
            "search.html", "genindex.html"]


IMAGES = """() => [...document.images].map(img => ({
    src: img.currentSrc.slice(0, 80), complete: img.complete, width: img.naturalWidth,
    alt: img.getAttribute('alt'), content: !!img.closest('article')}))"""


@pytest.mark.parametrize("path", site_pages())
def test_every_page_loads_without_errors_and_needs_no_other_host(visit, path):
    page = visit(path)
    assert page.errors == []
    assert page.failed == []
    assert page.offsite == []


# The notebook pages that draw figures: all but the Performance page, which is tables.
FIGURE_PAGES = [str(n.with_suffix(".html")) for n in book.toc_notebooks(ROOT)
                if n.stem != "performance"]


@pytest.mark.parametrize("path", FIGURE_PAGES)
def test_every_figure_decodes_and_has_alt_text(visit, path):
    page = visit(path)
    images = page.page.evaluate(IMAGES)
    figures = [image for image in images if image["content"]]
    assert figures, "no figures on the page"
    for image in images:  # the theme's own images (the Colab logo) included
        assert image["complete"] and image["width"] > 0, image
        assert image["alt"], image
    for figure in figures:  # the book's figures say what they show
        assert len(figure["alt"]) >= 40, figure


# Elements whose content is wider than their box: a scrollbar hides the rest.
# Collapsed cells are opened first; inline math is left out (MathJax's inline
# boxes overhang their glyphs by a pixel or two without hiding anything).
CLIPPED = """() => {
  document.querySelectorAll('article details').forEach(d => { d.open = true; });
  const selector = 'article pre, article table, article div.cell_output, '
      + 'article mjx-container[display="true"]';
  return [...document.querySelectorAll(selector)]
    .filter(el => el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1)
    .map(el => `${el.tagName.toLowerCase()} ${el.scrollWidth}px in ${el.clientWidth}px: `
               + el.innerText.slice(0, 60).replace(/\\s+/g, ' '));
}"""


@pytest.mark.parametrize("path", ["book/intro.html", *[str(n.with_suffix(".html"))
                                                      for n in book.toc_notebooks(ROOT)]])
def test_no_code_output_table_or_equation_is_clipped_at_1280_pixels(visit, path):
    page = visit(path).page  # 1280 px wide, loaded up to network idle
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    assert page.evaluate(CLIPPED) == []


def test_equations_are_typeset_by_the_sites_own_mathjax(visit):
    page = visit("book/vit.html").page
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    page.evaluate("() => MathJax.startup.promise")
    assert page.evaluate("() => MathJax.version").startswith("3.")
    scripts = page.evaluate("() => [...document.scripts].map(s => s.src).filter(Boolean)")
    assert any(src.split("?")[0].endswith("/_static/mathjax/tex-mml-chtml.js") for src in scripts)
    sources = page.locator(".math").count()
    typeset = page.locator("mjx-container").count()
    assert sources > 0 and typeset >= sources
    assert page.locator("mjx-merror").count() == 0


def visible_patch_picture(page):
    """Alt text of the explorer's picture that the Stack shows now."""
    pictures = page.locator(".jupyter-widgets img[alt*='-pixel patches']")
    shown = [pictures.nth(i) for i in range(pictures.count()) if pictures.nth(i).is_visible()]
    assert len(shown) == 1, f"{len(shown)} explorer pictures visible"
    return shown[0].get_attribute("alt")


# Text a reader sees with TeX's dollar signs still in it ("at $M$ = 2,048"): math
# that was never typeset, such as a Markdown output parsed without MyST's dollar
# math. Code, preformatted text and MathJax's own output aside.
RAW_TEX = """() => {
  const walker = document.createTreeWalker(document.querySelector('article'),
                                           NodeFilter.SHOW_TEXT);
  const found = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement.closest('pre, code, script, style, mjx-container')) continue;
    const match = node.textContent.match(/\\$[^\\s$][^$]*\\$/);
    if (match) found.push(match[0]);
  }
  return found;
}"""


@pytest.mark.parametrize("path", ["book/intro.html", *[str(n.with_suffix(".html"))
                                                      for n in book.toc_notebooks(ROOT)]])
def test_no_page_shows_math_as_dollar_signs(visit, path):
    page = visit(path).page
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    assert page.evaluate(RAW_TEX) == []


def test_the_patch_explorer_renders_and_follows_its_slider(visit):
    page = visit("book/vit.html").page
    handle = page.locator(".jupyter-widgets .noUi-handle")
    handle.wait_for(state="visible", timeout=30_000)
    readout = page.locator(".jupyter-widgets .widget-readout")
    assert "patch size" in page.locator(".jupyter-widgets .widget-label").first.inner_text()
    before_size, before_alt = readout.inner_text(), visible_patch_picture(page)
    assert f"{before_size}x{before_size}-pixel patches" in before_alt
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "(before) => document.querySelector('.jupyter-widgets .widget-readout').innerText !== before",
        arg=before_size)
    after_size, after_alt = readout.inner_text(), visible_patch_picture(page)
    assert int(after_size) > int(before_size)
    assert f"{after_size}x{after_size}-pixel patches" in after_alt and after_alt != before_alt
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(
        "(before) => document.querySelector('.jupyter-widgets .widget-readout').innerText === before",
        arg=before_size)
    assert visible_patch_picture(page) == before_alt


@pytest.mark.parametrize("notebook", book.toc_notebooks(ROOT), ids=lambda n: n.stem)
def test_the_colab_button_opens_the_committed_notebook(visit, notebook):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repository = config["repository"]["url"].removeprefix("https://github.com/")
    folder = config["repository"].get("path_to_book") or ""
    expected = (f"{config['launch_buttons']['colab_url']}/github/{repository}/blob/"
                f"{config['repository']['branch']}/{folder}{notebook.as_posix()}")
    page = visit(str(notebook.with_suffix(".html"))).page
    page.locator("button[aria-label='Launch interactive content']").click()
    # (Bootstrap turns the button's title into a tooltip, so find it by its link)
    button = page.locator(f"a.dropdown-item[href^='{config['launch_buttons']['colab_url']}']")
    button.wait_for(state="visible")
    assert button.get_attribute("href") == expected
    assert (ROOT / notebook).is_file()


def content_pages() -> list[str]:
    """The pages of the table of contents: the intro and the notebooks."""
    return ["book/intro.html", *[str(n.with_suffix(".html")) for n in book.toc_notebooks(ROOT)]]


# The icon a page names (<link rel="icon">): served, and an image the browser decodes.
# (A headless browser does not fetch it by itself, so a missing one shows no failed request.)
FAVICON = """async () => {
  const link = document.querySelector('link[rel~="icon"]');
  if (!link) return null;
  const response = await fetch(link.href);
  const image = new Image();
  image.src = link.href;
  const decoded = await image.decode().then(() => true, () => false);
  return {href: link.href, status: response.status, decoded, width: image.naturalWidth};
}"""


def test_every_page_names_a_favicon_that_loads(visit):
    for path in [p for p in site_pages() if p != "index.html"]:  # index.html only redirects
        icon = visit(path).page.evaluate(FAVICON)
        assert icon is not None, f"{path} names no icon"
        assert icon["status"] == 200 and icon["decoded"] and icon["width"] >= 16, (path, icon)


# Each in-text citation: the work it links to (the bibliography entry's address) and
# what it reads, brackets and commas left out ("[Salama, 2021a]" and "Salama [2021a]"
# both read "Salama 2021a"). A citation of several works reads as each link does.
CITATIONS = """() => {
  const words = el => el.innerText.replace(/[\\[\\]();,]/g, ' ').replace(/\\s+/g, ' ').trim();
  return [...document.querySelectorAll('article span.bibtex-citation')].flatMap(span => {
    const links = [...span.querySelectorAll('a[href]')];
    return links.map(a => ({work: a.href, reads: links.length === 1 ? words(span) : words(a)}));
  });
}"""


def test_distinct_works_are_never_cited_alike(visit):
    works_read_as = {}
    for path in content_pages():
        for citation in visit(path).page.evaluate(CITATIONS):
            works_read_as.setdefault(citation["reads"], set()).add(citation["work"])
    assert len(works_read_as) >= 10, works_read_as  # the pages cite the papers and examples
    alike = {reads: sorted(works) for reads, works in works_read_as.items() if len(works) > 1}
    assert alike == {}


def test_the_keras_examples_by_one_author_in_one_year_are_told_apart(visit):
    page = visit("book/results.html").page
    reads = {c["reads"] for c in page.evaluate(CITATIONS)}
    assert {"Salama 2021a", "Salama 2021b"} <= reads


# Tables of the page's text column wider than the column (the column: the article
# without its padding). Collapsed cells are opened first.
WIDE_TABLES = """() => {
  document.querySelectorAll('article details').forEach(d => { d.open = true; });
  const article = document.querySelector('article.bd-article');
  const style = getComputedStyle(article);
  const box = article.getBoundingClientRect();
  const left = box.left + parseFloat(style.paddingLeft);
  const right = box.right - parseFloat(style.paddingRight);
  return [...article.querySelectorAll('table')]
    .filter(table => table.offsetParent !== null)
    .map(table => [table, table.getBoundingClientRect()])
    .filter(([table, t]) => t.left < left - 0.5 || t.right > right + 0.5)
    .map(([table, t]) => `table ${Math.round(t.width)}px wide in a ${Math.round(right - left)}px `
         + `column: ` + table.innerText.slice(0, 60).replace(/\\s+/g, ' '));
}"""


@pytest.mark.parametrize("width", [1280, 800])
@pytest.mark.parametrize("path", content_pages())
def test_every_table_fits_the_text_column(visit, path, width):
    page = visit(path, width).page
    wide = page.evaluate(WIDE_TABLES)
    assert not wide, "\n".join(wide)


# The pictures of the text column (figures, schematics, the explorers' visible
# pictures; icons under 40 px left out), each loaded, with the width it is shown at
# and the width it was drawn at.
PICTURES = """async () => {
  document.querySelectorAll('article details').forEach(d => { d.open = true; });
  const images = [...document.querySelectorAll('article img')];
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return images.filter(img => img.offsetParent !== null && img.naturalWidth >= 40)
    .map(img => ({picture: (img.getAttribute('alt') || img.currentSrc).slice(0, 70),
                  file: img.currentSrc.startsWith('data:') ? 'an inline picture'
                        : img.currentSrc.split('/').pop().slice(0, 40),
                  drawn: img.naturalWidth, shown: img.getBoundingClientRect().width,
                  output: img.closest('.cell_output') !== null}));
}"""


@pytest.mark.parametrize("path", FIGURE_PAGES)
def test_every_figure_is_shown_at_nine_tenths_of_its_drawn_width_or_more(visit, path):
    """A figure drawn wider than the column is scaled down, and its text with it: at
    1280 px, shown at 0.9 of its width or more, 9-point text stays about 9 px tall."""
    page = visit(path).page
    pictures = page.evaluate(PICTURES)
    assert pictures, "no pictures on the page"
    # A published page whose code has changed since its run (its note says so) still
    # shows that run's outputs, drawn by the old code: those wait for the run to be
    # published again. What the build draws itself (schematics, the page's own
    # figures) and every output of a current page must pass.
    stale = page.locator(".admonition.warning", has_text="The code has changed").count() > 0
    waiting = [p for p in pictures if stale and p["output"]]
    checked = [p for p in pictures if p not in waiting]
    shrunk = [f"{p['shown'] / p['drawn']:.2f}: shown {p['shown']:.0f} px of {p['drawn']} px, "
              f"{p['file']}: {p['picture']}" for p in checked if p["shown"] < 0.9 * p["drawn"]]
    assert not shrunk, (f"{len(shrunk)} of {len(checked)} pictures scaled down:\n"
                        + "\n".join(shrunk))
    if waiting:
        print(f"{path}: {len(waiting)} outputs of a stale published run not checked")


def test_a_published_page_gives_the_whole_dataset_digest_on_hover(visit, site):
    records = {name: r for name, r in shown_records(site).items() if "published" in r}
    if not records:
        pytest.skip("the site shows no published run")
    for name, record in records.items():
        digest = record["published"]["dataset"]["sha256"]
        assert re.fullmatch("[0-9a-f]{64}", digest), (name, digest)
        page = visit(f"book/{name}.html").page
        note = page.locator("article .admonition.note", has_text="The outputs on this page")
        digest_on_hover = note.locator(f'abbr[title="SHA-256 {digest}"]')
        assert digest_on_hover.count() == 1, name
        assert digest_on_hover.inner_text() == digest[:12] + "…"
