"""End to end: the smoke profile executed and the site built (one build per session)."""

import json
import math
import os
import re
import shutil
import subprocess

import nbformat
import pytest
import yaml
from bs4 import BeautifulSoup
from PIL import Image

from helpers.book import evidence, publish
from helpers.book import runner as book
from helpers.book.colab import BADGE_IMAGE
from helpers import papers
from helpers.papers import MODELS, TITLES
from helpers.harness.records import read_record

from conftest import ROOT, executed_notebook, shown_records

pytestmark = pytest.mark.slow

# Every notebook's smoke run on the 10 digit classes (chance: 10%) must beat this:
# five times chance, which a model that learned nothing cannot reach, and which the
# smoke models pass with room (the ViT's test below wants 60%; after 3 epochs on a
# digits subset every one of them is past 50% validation accuracy on TensorFlow).
SMOKE_TOP1_FLOOR = 0.5


def html(smoke_build, page):
    path = smoke_build["site"] / "_build" / "html" / page
    return BeautifulSoup(path.read_text(), "html.parser")


def test_unknown_parameters_are_rejected_before_anything_runs(tmp_path):
    with pytest.raises(book.BookError,
                       match="unknown parameter\\(s\\) dropout, eppochs: no executed notebook"):
        book.run("smoke", source=ROOT, build_dir=tmp_path, overrides={"eppochs": 1, "dropout": 0.1})
    assert not (tmp_path / "site").exists()


def test_the_runner_rejects_unknown_profiles_and_notebooks(tmp_path):
    with pytest.raises(book.BookError, match="unknown profile 'fast'"):
        book.run("fast", source=ROOT, build_dir=tmp_path)
    with pytest.raises(book.BookError, match="no notebook resnet"):
        book.run("smoke", source=ROOT, build_dir=tmp_path, only=["resnet"])


def test_profiles_only_use_declared_parameters():
    profiles = yaml.safe_load((ROOT / "profiles.yml").read_text())
    assert set(profiles) >= {"smoke", "full"}
    for name in profiles:
        profile = book.load_profile(ROOT, name)
        for notebook in book.toc_notebooks(ROOT):
            declared = book.declared_parameters(ROOT / notebook)
            parameters = book.notebook_parameters(profile, notebook, {}, declared)
            book.check_parameters(ROOT / notebook, parameters)
        # a common value reaches every notebook that trains a model
        for notebook in book.model_notebooks(ROOT):
            assert set(profile["common"]) <= set(book.declared_parameters(ROOT / notebook))


def test_the_build_tree_mirrors_the_source(smoke_build):
    site = smoke_build["site"]
    for notebook in book.toc_notebooks(ROOT):
        assert (site / notebook).is_file()
    assert (site / "_config.yml").read_text() == (ROOT / "_config.yml").read_text()


def test_vit_smoke_run_learns_well_above_chance(smoke_build):
    record = read_record(smoke_build["site"] / "book" / "results" / "vit.json")
    assert record["dataset"] == "digits" and record["backend"] == "tensorflow"
    assert record["epochs"] == record["parameters"]["epochs"] == 10
    # 10 classes: chance is 10%.
    assert record["test_top1"] > 0.6, record["test_top1"]
    assert record["history"]["loss"][-1] < record["history"]["loss"][0]
    assert record["train_images_per_second"] > 0
    print(f"ViT smoke: top-1 {record['test_top1']:.2%}, notebook "
          f"{smoke_build['seconds']['vit']:.0f} s, training {record['train_seconds']:.0f} s")


@pytest.mark.parametrize("name", MODELS)
def test_every_smoke_run_learns_well_above_chance(smoke_build, name):
    """The record each notebook's smoke run wrote: its test top-1 beats the floor."""
    record = read_record(smoke_build["site"] / "book" / "results" / f"{name}.json")
    assert record["notebook"] == name and record["dataset"] == "digits"
    assert record["num_classes"] == 10  # chance is 10%
    assert record["test_top1"] > SMOKE_TOP1_FLOOR, (name, record["test_top1"])


def test_executed_notebook_has_its_outputs_and_no_errors_or_native_logs(smoke_build):
    nb = nbformat.read(smoke_build["executed"] / "book" / "vit.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4  # patches, curves, attention x2
    text = "".join(o.get("text", "") for o in outputs)
    assert "Epoch 10/10" in text and "\r" not in text  # verbose=2: one line per epoch
    assert not re.search(r"^[IWE]\d{4} ", text, re.M)
    assert nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def test_site_has_the_vit_page_with_its_figures(smoke_build):
    page = html(smoke_build, "book/vit.html")
    assert "Vision Transformer (ViT) from scratch" in page.title.text
    images = [img for img in page.find_all("img") if "_images/" in img["src"]]
    assert len(images) >= 4
    for img in images:
        with Image.open(smoke_build["site"] / "_build" / "html" / "book" / img["src"]) as picture:
            assert picture.width > 100 and picture.height > 100


def test_every_figure_has_alt_text_on_the_site(smoke_build):
    """A cell that draws a figure carries its alt text (myst-nb's mystnb.image.alt)."""
    figures = 0
    for notebook in book.toc_notebooks(ROOT):
        nb = nbformat.read(smoke_build["site"] / notebook, as_version=4)
        alts = set()
        for cell in nb.cells:
            if cell.cell_type == "markdown":  # a {figure} directive's alt text
                alts.update(re.findall(r"^:alt: (.+)$", cell.source, re.M))
            if cell.cell_type == "code" and any(
                    "image/png" in output.get("data", {}) for output in cell.outputs):
                alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
                assert len(alt) >= 40, f"{notebook}: a figure without alt text: {cell.source[:80]}"
                alts.add(alt)
                figures += 1
        page = html(smoke_build, str(notebook.with_suffix(".html")))
        shown = {img.get("alt") for img in page.find_all("img")
                 if "_images/" in img.get("src", "")}
        assert alts == shown, notebook
    assert figures >= 20


def test_every_paper_page_shows_the_schematic_of_its_model(smoke_build):
    from helpers.harness.plots import PAGE_WIDTH_PX
    from helpers.harness.schematics import ALT_TEXT, PARAMETRIZED

    for name in MODELS:
        page = html(smoke_build, f"book/{name}.html")
        figure = next((img for img in page.find_all("img") if "schematics" in img.get("src", "")
                       or img.get("alt") == ALT_TEXT[name]), None)
        if figure is None:
            # A schematic drawn from the run's own parameters is an output of the run:
            # a published run older than that code does not have it until it is
            # published again. The run this build made draws it.
            assert name in PARAMETRIZED, f"{name}: no schematic on the page"
            assert publish.stale(shown_records(smoke_build)[name], ROOT), name
            executed = executed_notebook(smoke_build, name)
            drawn = [o for c in executed.cells if c.cell_type == "code"
                     and "schematic_png(" in c.source for o in c.outputs
                     if "image/png" in o.get("data", {})]
            assert drawn, f"{name}: the smoke run drew no schematic"
            continue
        assert figure["alt"] == ALT_TEXT[name], name
        with Image.open(smoke_build["site"] / "_build" / "html" / "book" / figure["src"]) as picture:
            # Drawn at the text column's width: shown at the size drawn, never shrunk.
            assert 0.9 * PAGE_WIDTH_PX <= picture.width <= PAGE_WIDTH_PX, (name, picture.width)


def test_site_links_colab_to_the_committed_notebook(smoke_build):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]["url"].removeprefix("https://github.com/")
    expected = (f"{config['launch_buttons']['colab_url']}/github/{repo}/blob/"
                f"{config['repository']['branch']}/book/vit.ipynb")
    links = [a["href"] for a in html(smoke_build, "book/vit.html").find_all("a", href=True)]
    assert expected in links
    assert (ROOT / "book" / "vit.ipynb").is_file()
    assert config["repository"]["url"] in links  # the repository button
    page = html(smoke_build, "book/vit.html")
    assert not page.find("img", src=BADGE_IMAGE)  # the notebook's own badge is not on the site
    assert "COLAB_BACKEND" in page.get_text()  # its Colab setup cell is


def test_site_shows_the_glued_numbers_of_the_run(smoke_build):
    record = shown_records(smoke_build)["vit"]
    text = " ".join(html(smoke_build, "book/vit.html").get_text().split())
    top1 = round(100 * record["test_top1"], 2)
    assert f"reached {top1}% top-1" in text
    assert f"{record['parameter_count']:,} parameters" in text
    # strings without quotes
    assert f"{record['epochs']} epochs on {record['dataset']}, Keras backend tensorflow)" in text


def markdown_outputs(nb) -> str:
    """The Markdown a notebook's code cells displayed, as the site renders it (no **)."""
    return "\n".join(o["data"]["text/markdown"].replace("**", "")
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs
                     if "text/markdown" in o.get("data", {}))


def expected_attention_claims(record) -> list[tuple[str, str]]:
    """(text the page must show, why) for a ViT or SPT + LSA run, worked out here from
    the numbers its record keeps, not by the functions that wrote the page: each
    block's head distances as mean ± standard error, and how many heads the 2-standard-
    error margin lets the page call local or far against the record's own uniform
    baseline; for LSA, the start and decay-only temperatures the reading sets the
    learned one against."""
    means, errors = record["attention_distance_px"], record["attention_distance_standard_error_px"]
    uniform = record["uniform_attention_distance_px"]
    if record["notebook"] == "vit":
        means, errors, uniform = {"": means}, {"": errors}, {"": uniform}
    claims = []
    for label in means:
        blocks = len(means[label])
        for block in sorted({0, blocks - 1}):
            m, e, u = means[label][block], errors[label][block], uniform[label]
            spread = ", ".join(f"{a:.1f} ± {b:.2f}" for a, b in zip(m, e))
            claims.append((f"attend at {spread} px", f"{label} block {block + 1}: numbers"))
            local = sum(a < u - 2 * b for a, b in zip(m, e))
            far = sum(a > u + 2 * b for a, b in zip(m, e))
            heads = len(m)
            for n, word in ((local, "local (closer than uniform)"), (far, "farther than uniform")):
                if n:
                    who = ("the head" if heads == 1 else f"all {heads} heads" if n == heads > 2
                           else "both heads" if n == heads else f"{n} of {heads} heads")
                    claims.append((f"{who} {word}", f"{label} block {block + 1}: verdict"))
        claims.append((f"Uniform attention would reach {uniform[label]:.1f} px", label))
    if record.get("temperature_decay_only_at_kept_step") is not None:
        start = math.sqrt(record["parameters"]["projection_dim"])
        decay_only = record["temperature_decay_only_at_kept_step"]
        claims.append((f"from {start:.3f} to {decay_only:.3f}", "decay-only temperature"))
    return claims


def missing_claims(record, text: str) -> list[str]:
    flat = " ".join(text.replace("**", "").split())
    return [f"{why}: {claim!r}" for claim, why in expected_attention_claims(record)
            if " ".join(claim.split()) not in flat]


@pytest.mark.parametrize("name", ["vit", "spt_lsa"])
def test_the_attention_figures_are_read_from_the_runs_own_numbers(smoke_build, name):
    smoke_record = read_record(smoke_build["site"] / "book" / "results" / f"{name}.json")
    shown = markdown_outputs(executed_notebook(smoke_build, name))
    assert not missing_claims(smoke_record, shown), missing_claims(smoke_record, shown)
    # The page shows the sentences of the run it shows, once that run was made by
    # today's code (a stale published run keeps the old code's sentences).
    record = shown_records(smoke_build)[name]
    if not publish.stale(record, ROOT):
        text = html(smoke_build, f"book/{name}.html").get_text(" ")
        assert not missing_claims(record, text), missing_claims(record, text)


def test_every_paper_page_shows_the_published_run_and_says_if_it_is_stale(smoke_build):
    """The smoke site's paper pages are the published CIFAR-10 runs, each opened by
    a note naming the run; a warning appears exactly when the code has changed."""
    assert smoke_build["executed"] != smoke_build["site"], "no published runs shown"
    for name, record in shown_records(smoke_build).items():
        page = html(smoke_build, f"book/{name}.html")
        text = " ".join(page.get_text(" ").split())
        assert "come from a run of the cifar10-cpu profile on CIFAR-10 (JPEG copy)" in text, name
        assert f"commit {record['published']['commit'][:10]}" in text, name
        warned = page.select("div.admonition.warning")
        changed = publish.stale(record)
        assert bool(warned) == bool(changed), (name, changed)
        if changed:
            assert changed[0] in " ".join(warned[0].get_text(" ").split())
        # the smoke copy that CI executed is kept beside the site
        smoke = nbformat.read(smoke_build["executed"] / "book" / f"{name}.ipynb", as_version=4)
        assert not any("published-run" in c.metadata.get("tags", []) for c in smoke.cells)


def test_the_results_page_tables_every_record_and_plots_it(smoke_build):
    records = shown_records(smoke_build)
    page = html(smoke_build, "book/results.html")
    text = " ".join(page.get_text(" ").split())
    assert "profile cifar10-cpu" in text and "tensorflow" in text
    assert "CIFAR-10 (JPEG copy)" in text and "cores" in text  # dataset and machine
    # The single runs the pages show have a table of their own; until the equal-budget
    # runs are published, the page says so instead of ranking them; once some are,
    # their table ranks those and names the models still to run.
    plan = evidence.read_plan(ROOT / "evidence.yml")
    equal = [name for name in MODELS if evidence.read_records(
        ROOT / "runs" / "evidence", name, plan.full_arm(name).name)]
    if not equal:
        assert "The equal-budget runs have not been published yet" in text
    else:
        rows = page.find("table", class_="equal-budget").find("tbody").find_all("tr")
        assert [row.find("a")["href"] for row in rows] == [f"{name}.html" for name in equal]
        assert "Highest mean top-1" in text
        missing = [TITLES[name] for name in MODELS if name not in equal]
        if missing:
            assert "Not run yet at this budget, so not ranked here: " + ", ".join(missing) in text
        assert "These single runs trained for different budgets" in text
    table = page.find("table", class_="single-runs")
    rows = table.find("tbody").find_all("tr")
    assert [row.find("a")["href"] for row in rows] == [f"{name}.html" for name in MODELS]
    for row, (name, record) in zip(rows, records.items()):
        cells = [td.get_text(strip=True) for td in row.find_all("td")]
        assert cells[0] == TITLES[name]
        assert cells[1] == str(record["epochs"])
        assert cells[2] == f"{record['parameter_count']:,}"
        if cells[3] == "–":  # the build ran without JAX, which counts the FLOPs (XLA)
            assert "FLOPs are counted by XLA through JAX, which this environment lacks" in text
        else:
            assert float(cells[3].replace(",", "")) > 0  # MFLOPs, counted from the model
        assert cells[5] == f"{record['published']['notebook_seconds'] / 60:.1f} min"
        assert cells[6] == f"{100 * record['test_top1']:.2f}%"
        assert cells[7] == f"{100 * record['test_top5']:.2f}%"
        assert len(cells) == 8  # no column of the sources' numbers beside the runs' own
    # The sources' numbers sit in one table per dataset, never CIFAR-100 beside CIFAR-10.
    for table in page.find_all("table"):
        head = table.find("thead")
        if head and "reported by" in head.get_text():
            before = table.find_previous(["p", "strong"]).get_text()
            assert before.strip() in ("CIFAR-10", "CIFAR-100", "ImageNet"), before
    # the reading is computed from the records: without equal-budget runs, the best
    # single run is named (with them, the equal-budget table ranks, checked above)
    best = max(records, key=lambda n: records[n]["test_top1"])
    assert (f"The most accurate model here is {TITLES[best]}" in text) == (not equal)
    images = [img for img in page.find_all("img") if "_images/" in img["src"]]
    assert images
    with Image.open(smoke_build["site"] / "_build" / "html" / "book" / images[0]["src"]) as picture:
        assert picture.width > 500 and picture.height > 200
    # the page cites the papers whose numbers it quotes
    cited = {a.get_text() for a in page.select("a.reference.internal[href^='references.html#']")}
    assert {"Dosovitskiy et al., 2021", "Lee et al., 2021", "Jaegle et al., 2021",
            "Hassani et al., 2021", "Wang et al., 2022"} <= cited


def test_the_papers_builders_make_the_models_the_notebooks_trained(smoke_build):
    """The record's parameter count is that of the model ``helpers.papers.build``
    remakes from the record's parameters, so the results page's FLOP column
    describes the model the notebook trained."""
    import numpy as np

    smoke = {name: read_record(smoke_build["site"] / "book" / "results" / f"{name}.json")
             for name in MODELS}
    for kind, records in (("smoke", smoke), ("shown", shown_records(smoke_build))):
        for name, record in records.items():
            images = np.zeros((2, *record["image_shape"]), "uint8")
            model = papers.build(name, record["parameters"], images, record["num_classes"])
            assert model.count_params() == record["parameter_count"], (kind, name)


def test_site_embeds_the_widget_state(smoke_build):
    page = html(smoke_build, "book/vit.html")
    state = page.find("script", type="application/vnd.jupyter.widget-state+json")
    models = json.loads(state.string)["state"].values()
    names = {m["model_name"] for m in models}
    assert {"SelectionSliderModel", "StackModel", "HTMLModel", "LinkModel"} <= names
    assert page.find("script", type="application/vnd.jupyter.widget-view+json")


def test_site_has_the_bibliography_of_the_five_papers(smoke_build):
    text = html(smoke_build, "book/references.html").get_text(" ").lower()
    for title in ("An Image is Worth 16x16 Words", "Vision Transformer for Small-Size Datasets",
                  "Perceiver: General Perception with Iterative Attention",
                  "Escaping the Big Data Paradigm with Compact Transformers",
                  "When Shift Operation Meets Vision Transformer"):
        assert title.lower() in text


def test_the_site_build_fails_on_a_warning(smoke_build, tmp_path):
    """Warnings are errors: a page citing an unknown paper breaks the build."""
    site = tmp_path / "site"
    shutil.copytree(smoke_build["site"], site, ignore=shutil.ignore_patterns("_build"))
    intro = site / "book" / "intro.md"
    intro.write_text(intro.read_text() + "\nSee {cite}`no_such_paper`.\n")
    with pytest.raises(subprocess.CalledProcessError):
        book.build_html(site)


# The other backends' runs: the same notebooks and smoke models for 3 epochs instead of
# 10 (JAX trains them several times slower than TensorFlow on a CPU). On TensorFlow
# every smoke model is past 50% validation accuracy after 3 epochs; the floor is 3x chance.
OTHER_BACKEND_EPOCHS = 3
OTHER_BACKEND_TOP1_FLOOR = 0.3
# Digits subsets whose splits are whole batches of the smoke profile's 64: 1,152 or
# 1,024 training, 128 or 256 validation (the notebooks hold out 10% or 20%) and 320
# test images. On JAX a smaller last batch is a new shape, which XLA compiles again
# for the training, validation and test steps: the whole digits set made these runs
# a quarter longer (the five notebooks and the results page: 381 s against 306 s).
OTHER_BACKEND_SUBSETS = {"n_train": 1280, "n_test": 320}


def assert_every_notebook_ran_and_learned(result, backend, overrides):
    """Each model notebook of a runner's ``result`` trained on ``backend`` with the
    ``overrides``, its loss fell, it beat the floor, and it named the backend."""
    for notebook in book.model_notebooks(ROOT):
        record = read_record(result["site"] / "book" / "results" / f"{notebook.stem}.json")
        assert record["backend"] == backend
        assert record["history"]["loss"][-1] < record["history"]["loss"][0], notebook
        assert {k: record["parameters"][k] for k in overrides} == overrides
        assert record["test_top1"] > OTHER_BACKEND_TOP1_FLOOR, (notebook, record["test_top1"])
        executed = nbformat.read(result["site"] / notebook, as_version=4)
        text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                       for o in c.outputs)
        assert f"on {backend} " in text  # the setup cell names the active backend
        print(f"{notebook.stem} on {backend}, {record['parameters']['precision']}: top-1 "
              f"{record['test_top1']:.2%}, {result['seconds'][notebook.stem]:.0f} s")


# Every notebook runs end to end in every precision on every backend: float32 on
# TensorFlow is the smoke build itself; JAX and PyTorch run the notebooks under
# mixed_bfloat16, whose every layer also runs (in float32) in the cross-backend
# checks of test_backends.py; TensorFlow runs them under mixed_bfloat16 once more,
# at the size of the other backends' runs. A read-out that hands a bfloat16 tensor
# to matplotlib or NumPy (a picture, a statistic, a record) fails these runs.
MIXED = {"precision": "mixed_bfloat16"}


@pytest.mark.parametrize("backend", ["jax", "torch", "tensorflow"])
def test_every_notebook_runs_and_learns_in_mixed_bfloat16_on_each_backend(tmp_path, backend):
    """Every notebook of the smoke profile, unchanged but for fewer epochs, whole
    batches of digits and ``precision=mixed_bfloat16``, on each backend."""
    before = os.environ.get("KERAS_BACKEND")
    overrides = {"epochs": OTHER_BACKEND_EPOCHS, **OTHER_BACKEND_SUBSETS, **MIXED}
    result = book.run("smoke", source=ROOT, build_dir=tmp_path, backend=backend, html=False,
                      overrides=overrides)
    assert os.environ.get("KERAS_BACKEND") == before  # the runner leaves the caller's backend
    assert_every_notebook_ran_and_learned(result, backend, overrides)
