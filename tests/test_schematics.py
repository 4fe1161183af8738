"""The models' schematics: five readable PNGs, the same bytes on every run, nothing
drawn off the figure or on top of another label."""

import itertools

import numpy as np
import pytest
from PIL import Image

from helpers.book import schematics
from helpers.book.schematics import ALT_TEXT, SCHEMATICS, content_box, draw, write_all

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
        assert width > 800 and height > 150, (path.name, width, height)
        assert pixels.std() > 20, path.name  # boxes and text, not a blank page
        assert pixels[0, 0] == 255  # white background
    again = write_all(tmp_path / "b")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_entry_point_writes_and_prints_the_paths(tmp_path, capsys):
    assert schematics.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / f"{name}.png") for name in NAMES]
    assert schematics.main([]) == 2


@pytest.mark.parametrize("name", NAMES)
def test_labels_are_inside_the_figure_apart_and_at_least_9_pt(name):
    fig = draw(name)
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


def test_each_paper_notebook_embeds_its_schematic_with_the_same_alt_text():
    import re

    import nbformat

    from conftest import ROOT

    for name, alt in ALT_TEXT.items():
        nb = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
        figures = [m for c in nb.cells if c.cell_type == "markdown"
                   for m in re.findall(r"```\{figure\} (\S+)\n:alt: (.+)\n", c.source)]
        assert figures == [(f"schematics/{name}.png", alt)], name
