"""The models' schematics: five readable PNGs, the same bytes on every run, nothing
drawn off the figure or on top of another label, no wider than the page's column;
ShiftViT's drawn from the run's parameters."""

import itertools

import numpy as np
import pytest
from PIL import Image

from helpers.harness import schematics
from helpers.harness.schematics import (ALT_TEXT, SCHEMATICS, SHIFTVIT_DEFAULTS, content_box, draw,
                                     page_dpi, schematic_png, shiftvit_caption, shiftvit_stages,
                                     write_all)
from helpers.harness.plots import MIN_TEXT_PX, PAGE_WIDTH_PX

pytestmark = pytest.mark.keras_free  # see conftest.py

NAMES = ["vit", "spt_lsa", "perceiver", "cct", "shiftvit"]


def test_every_model_has_a_schematic_and_an_alt_text():
    assert list(SCHEMATICS) == NAMES
    assert list(ALT_TEXT) == NAMES
    for name, alt in ALT_TEXT.items():
        assert len(alt) >= 60, name
    with pytest.raises(KeyError, match="known: vit"):
        draw("resnet")


def test_write_all_gives_one_readable_png_per_model_the_same_bytes_each_time(tmp_path):
    paths = write_all(tmp_path / "a")
    assert [p.name for p in paths] == [f"{name}.png" for name in NAMES]
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"), dtype="float32")
        height, width = pixels.shape
        # as wide as the page's column: shown at the size drawn, not shrunk
        assert PAGE_WIDTH_PX - 2 <= width <= PAGE_WIDTH_PX and height > 150, (path.name, width)
        assert pixels.std() > 20, path.name  # boxes and text, not a blank page
        assert pixels[0, 0] == 255  # white background
    again = write_all(tmp_path / "b")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_entry_point_writes_and_prints_the_paths(tmp_path, capsys):
    assert schematics.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / f"{name}.png") for name in NAMES]
    assert schematics.main([]) == 2


# ShiftViT with the book's cifar10-cpu profile: three stages, as the published run
SMALL_SHIFTVIT = {**SHIFTVIT_DEFAULTS, "image_size": 36, "crop_size": 32,
                  "num_shift_blocks_per_stages": [2, 4, 2]}
FIVE_STAGES = {**SHIFTVIT_DEFAULTS, "image_size": 132, "crop_size": 128,
               "num_shift_blocks_per_stages": [1, 2, 3, 2, 1]}
DRAWINGS = [(name, None) for name in NAMES] + [("shiftvit", SMALL_SHIFTVIT),
                                               ("shiftvit", FIVE_STAGES)]


@pytest.mark.parametrize("name,p", DRAWINGS, ids=lambda v: v if isinstance(v, str) else
                         f"{len(v['num_shift_blocks_per_stages'])}-stages" if v else "defaults")
def test_labels_are_inside_the_figure_apart_and_at_least_9_pt(name, p):
    fig = draw(name, p)
    width, height = fig.get_size_inches()
    box = content_box(fig)
    # everything drawn lies on the canvas: the axes clip what does not, and a
    # tight crop would not bring it back
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, box
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.axes[0].texts if t.get_text()]
    assert all(t.get_fontsize() >= 9 for t in texts)
    extents = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for (a, first), (b, second) in itertools.combinations(extents, 2):
        assert not first.overlaps(second), (a, b)
    # saved at the page's width, its smallest text is still MIN_TEXT_PX pixels tall
    smallest = min(t.get_fontsize() for t in texts)
    assert smallest * page_dpi(fig) / 72 >= MIN_TEXT_PX, (smallest, page_dpi(fig))


def test_the_shiftvit_schematic_draws_the_stages_of_its_parameters():
    for p, sides in ((None, [12, 6, 3, 2]), (SMALL_SHIFTVIT, [8, 4, 2]), (FIVE_STAGES,
                                                                          [32, 16, 8, 4, 2])):
        stages = shiftvit_stages(p)
        assert [side for side, _, _ in stages] == sides
        texts = [t.get_text() for t in draw("shiftvit", p).axes[0].texts]
        titles = sorted(t for t in texts if t.startswith("stage "))
        assert titles == [f"stage {i}" for i in range(1, len(sides) + 1)], titles
        assert texts.count("merge") == len(sides) - 1
        for side, channels, blocks in stages:
            plural = "" if blocks == 1 else "s"
            assert f"{side}×{side}×{channels}\n{blocks} shift block{plural}" in texts
    assert "3 stages, 2 shift blocks on 8×8×96 maps, 4 shift blocks on 4×4×192 maps and 2 " \
           "shift blocks on 2×2×384 maps" in shiftvit_caption(SMALL_SHIFTVIT)


def test_the_shiftvit_schematic_defaults_are_the_notebooks():
    from helpers.papers.shiftvit import DEFAULTS

    assert {name: DEFAULTS[name] for name in SHIFTVIT_DEFAULTS} == SHIFTVIT_DEFAULTS


def test_schematic_png_is_as_wide_as_the_page():
    from io import BytesIO

    with Image.open(BytesIO(schematic_png("shiftvit", SMALL_SHIFTVIT))) as image:
        assert PAGE_WIDTH_PX - 2 <= image.width <= PAGE_WIDTH_PX


def test_each_paper_notebook_embeds_its_schematic_with_the_same_alt_text():
    """The fixed drawings from the Markdown; ShiftViT's drawn in a cell from the run's ``p``."""
    import re

    import nbformat

    from conftest import ROOT

    for name, alt in ALT_TEXT.items():
        nb = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
        figures = [m for c in nb.cells if c.cell_type == "markdown"
                   for m in re.findall(r"```\{figure\} (\S+)\n:alt: (.+)\n", c.source)]
        drawn = [c for c in nb.cells if c.cell_type == "code"
                 and f'schematic_png("{name}", run.p)' in c.source]
        if name == "shiftvit":
            assert figures == [] and len(drawn) == 1, name
            assert drawn[0].metadata["mystnb"]["image"]["alt"] == alt
            assert "hide-input" in drawn[0].metadata["tags"]
        else:
            assert figures == [(f"schematics/{name}.png", alt)] and drawn == [], name
