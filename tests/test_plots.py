import base64

import ipywidgets as widgets
from ipywidgets.widgets.widget_link import Link
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from bs4 import BeautifulSoup  # noqa: E402
import pytest  # noqa: E402

from helpers.harness.explorers import divisors, patch_size_explorer  # noqa: E402
from helpers.harness.plots import (  # noqa: E402
    figure_png,
    patch_mosaic,
    plot_learning_curves,
    plot_patches,
    plot_token_maps,
)


def grid_patches(image, p):
    h, w, c = image.shape
    return np.stack([image[r:r + p, q:q + p].reshape(-1)
                     for r in range(0, h, p) for q in range(0, w, p)])


def test_patch_mosaic_places_each_patch_on_its_grid_cell():
    image = np.random.default_rng(0).integers(0, 256, (12, 12, 3)).astype("uint8")
    mosaic = patch_mosaic(grid_patches(image, 4), 4, gap=2)
    assert mosaic.shape == (3 * 6 - 2, 3 * 6 - 2, 3)
    np.testing.assert_array_equal(mosaic[6:10, 12:16], image[4:8, 8:12])  # patch (1, 2)
    assert (mosaic[4:6] == 255).all()  # the gap between rows 0 and 1


def test_patch_mosaic_rejects_a_non_square_count():
    with pytest.raises(ValueError, match="square grid"):
        patch_mosaic(np.zeros((6, 12)), 2)


def test_learning_curves_draw_train_and_validation_per_metric():
    history = {"loss": [2, 1], "val_loss": [2.1, 1.2], "accuracy": [0.2, 0.5],
               "val_accuracy": [0.2, 0.4]}
    fig = plot_learning_curves(history)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "top-1 accuracy"]
    assert all(len(ax.lines) == 2 for ax in fig.axes)


def test_learning_curves_compare_runs_on_the_same_axes():
    runs = {"ViT": {"loss": [2, 1], "val_loss": [2, 1.5]}, "SL-ViT": {"loss": [2, 0.8]}}
    fig = plot_learning_curves(runs, metrics=("loss",))
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["ViT train", "ViT validation", "SL-ViT train"]


def test_plot_patches_and_png_bytes():
    image = np.random.default_rng(1).uniform(0, 255, (16, 16, 3))
    fig = plot_patches(image, grid_patches(image, 4), 4)
    assert len(fig.axes) == 2
    assert figure_png(fig).startswith(b"\x89PNG")


def test_divisors():
    assert divisors(72) == [2, 3, 4, 6, 8, 9, 12, 18, 24, 36]
    assert divisors(32, smallest=4) == [4, 8, 16]


@pytest.mark.skipif(not hasattr(widgets, "Stack"), reason="ipywidgets 7: no Stack (the fallback)")
def test_explorer_links_its_slider_to_one_picture_per_patch_size():
    image = np.random.default_rng(2).uniform(0, 255, (16, 16, 3))
    box = patch_size_explorer(image, [2, 4, 8], grid_patches, value=4)
    slider, stack = box.children
    assert list(slider.options) == [2, 4, 8] and slider.value == 4
    assert len(stack.children) == 3 and stack.selected_index == 1
    for page, size in zip(stack.children, [2, 4, 8]):
        img = BeautifulSoup(page.value, "html.parser").img
        assert base64.b64decode(img["src"].removeprefix("data:image/png;base64,")).startswith(
            b"\x89PNG")
        grid = 16 // size
        assert f"its {grid}x{grid} grid of {size}x{size}-pixel patches" in img["alt"]
        assert f"its {(16 // size) ** 2} patches" in img["alt"]
    links = [w for w in widgets.Widget.widgets.values() if isinstance(w, Link)]
    assert any(link.source == (slider, "index") and link.target == (stack, "selected_index")
               for link in links)


def test_without_a_stack_widget_the_explorer_shows_one_picture_and_says_why(monkeypatch):
    """ipywidgets 7 (Colab's runtime) has no ``Stack``."""
    from helpers.harness import explorers

    monkeypatch.delattr(explorers.widgets, "Stack", raising=False)
    image = np.random.default_rng(2).uniform(0, 255, (16, 16, 3))
    extracted = []

    def extract(image, size):
        extracted.append(size)
        return grid_patches(image, size)

    notice, page = patch_size_explorer(image, [2, 4, 8], extract, value=4).children
    assert extracted == [4]  # only the picture it shows is drawn
    assert f"ipywidgets {widgets.__version__} has no <code>Stack</code>" in notice.value
    assert "patch size 4 only" in notice.value
    img = BeautifulSoup(page.value, "html.parser").img
    assert "4x4 grid of 4x4-pixel patches" in img["alt"]
    assert img["src"].startswith("data:image/png;base64,")


def test_token_maps_draw_one_panel_per_map_with_the_query_outlined():
    image = np.random.default_rng(3).uniform(0, 255, (16, 16, 3))
    maps = [np.eye(4), np.ones((4, 4)) / 16]
    fig = plot_token_maps(image, maps, titles=["a", "b"], marks=[(1, 2), None], title="t")
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert len(fig.axes[0].patches) == 1 and len(fig.axes[1].patches) == 0
    assert len(fig.axes[0].images) == 2  # the image and the heatmap over it


def test_predictions_show_each_image_above_its_most_likely_classes():
    from helpers.harness.plots import plot_predictions

    images = np.random.default_rng(4).uniform(0, 255, (4, 8, 8, 3))
    probabilities = np.full((4, 6), 0.02)
    probabilities[np.arange(4), [0, 1, 2, 3]] = 0.9
    fig = plot_predictions(images, probabilities, list("abcdef"), labels=[0, 1, 5, 3], top=3,
                           columns=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "a (90%)\ntrue class: a" and titles[2].startswith("c (90%)")
    bar_axes = [ax for ax in fig.axes if ax.patches]
    assert len(bar_axes) == 4 and all(len(ax.patches) == 3 for ax in bar_axes)
    ticks = {tick.get_position()[1]: tick.get_text() for tick in bar_axes[0].get_yticklabels()}
    assert ticks[max(ticks)] == "a"  # the most likely class on top
    assert not fig.axes[-1].axison  # 4 images in rows of 3: the spare panels are blank


def test_animation_player_is_self_contained():
    from matplotlib import animation

    from helpers.harness.plots import animation_html

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    line, = ax.plot([0, 1], [0, 1])
    movie = animation.FuncAnimation(fig, lambda i: (line.set_ydata([0, i]),), frames=3)
    page = animation_html(movie, alt='A line "rising"', fps=4)
    plt.close(fig)
    assert "font-awesome" in movie.to_jshtml(fps=4)  # what matplotlib itself writes
    assert "<link" not in page and "http" not in page
    assert page.count("data:image/png;base64") == 3 and "fa-play" in page
    assert page.count('<img alt="A line &quot;rising&quot;" id=') == 1


def test_patch_titles_give_the_grid_per_side_and_the_patch_size_apart():
    """A 32 px image in 4 px patches is an 8x8 grid, not a "4x4 grid"."""
    image = np.random.default_rng(5).uniform(0, 255, (32, 32, 3))
    for size, grid in ((4, 8), (16, 2)):
        fig = plot_patches(image, grid_patches(image, size), size)
        assert fig.axes[0].get_title() == (f"32x32 image: {grid}x{grid} grid\n"
                                           f"of {size}x{size} px patches")


def png_width(fig):
    """Width in pixels of ``fig`` as the inline backend saves it (tight box, FIGURE_DPI)."""
    import io

    from PIL import Image

    from helpers.harness.plots import FIGURE_DPI

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    with Image.open(buffer) as image:
        return image.width


def test_figure_size_never_exceeds_the_page():
    from helpers.harness.plots import PAGE_WIDTH, TIGHT_PAD, figure_size

    assert figure_size(3) == (PAGE_WIDTH - 2 * TIGHT_PAD, 3)
    assert figure_size(2, 4.0) == (4.0, 2)
    assert figure_size(2, 3 * PAGE_WIDTH) == (PAGE_WIDTH - 2 * TIGHT_PAD, 2)
    with pytest.raises(ValueError):
        figure_size(0)


def test_a_figure_that_fills_its_canvas_still_fits_the_page():
    import matplotlib.pyplot as plt

    from helpers.harness.plots import PAGE_WIDTH_PX, figure_size

    fig, axes = plt.subplots(2, 6, figsize=figure_size(3), layout="constrained")
    for ax in axes.flat:
        ax.set_title("a title\nof two lines", fontsize="small")
    assert png_width(fig) <= PAGE_WIDTH_PX
    plt.close(fig)


def test_the_inline_backend_draws_at_the_dpi_the_sizes_assume():
    from helpers.harness.plots import FIGURE_DPI

    assert matplotlib.rcParamsDefault["figure.dpi"] == FIGURE_DPI


def test_shared_figures_fit_the_page_with_legible_text():
    """Drawn no wider than the column, so shown unshrunk, every text at least 9 px."""
    from helpers.harness.plots import MIN_FONT_PT, PAGE_WIDTH_PX, plot_predictions

    rng = np.random.default_rng(6)
    image = rng.uniform(0, 255, (32, 32, 3))
    history = {m: [1, 2, 3] for m in ("loss", "val_loss", "accuracy", "val_accuracy",
                                      "top5_accuracy", "val_top5_accuracy")}
    figures = [
        plot_learning_curves(history, title="ViT on CIFAR-10"),
        plot_patches(image, grid_patches(image, 4), 4),
        plot_token_maps(image, [rng.uniform(size=(8, 8))] * 4, titles=["block 1, query (4, 4)"] * 4,
                        title="where two query patches look, on a test image of class airplane"),
        plot_predictions(rng.uniform(0, 255, (6, 32, 32, 3)), rng.dirichlet(np.ones(10), 6),
                         [f"class {i}" for i in range(10)], labels=np.arange(6)),
    ]
    for fig in figures:
        texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
        assert min(t.get_fontsize() for t in texts) >= MIN_FONT_PT
        assert png_width(fig) <= PAGE_WIDTH_PX, fig.axes[0].get_title()


def test_spread_points_give_every_series_its_own_place_and_marker():
    import matplotlib.pyplot as plt

    from helpers.harness.plots import spread_points

    fig, ax = plt.subplots()
    values = np.full((3, 4), 5.0)  # four heads at the same distance: the hidden-head case
    artists = spread_points(ax, [1, 2, 3], values, labels=[f"head {h}" for h in range(4)])
    xs = [a.get_offsets()[:, 0] for a in artists]
    assert len({tuple(x) for x in xs}) == 4  # no two series at the same place
    assert all(np.all(np.abs(x - [1, 2, 3]) <= 0.25 + 1e-9) for x in xs)
    markers = [a.get_paths()[0].vertices.tobytes() for a in artists]
    assert len(set(markers)) == 4
    plt.close(fig)


def test_fit_limits_frame_the_spread_not_zero():
    from helpers.harness.plots import fit_limits

    low, high = fit_limits([[10.0, 11.0], [12.0, 14.0]], margin=0.25)
    assert (low, high) == (9.0, 15.0)
    assert fit_limits([5.0, 5.0]) == (4.25, 5.75)  # one value: a margin around it


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_read_outs_become_float32_numpy_whatever_the_compute_dtype(dtype):
    import keras

    from helpers.harness.plots import to_float32_numpy

    tensor = keras.ops.cast(keras.ops.convert_to_tensor([[0.5, 1.5], [2.0, -1.0]]), dtype)
    out = to_float32_numpy(tensor)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.5, 1.5], [2.0, -1.0]])
    np.testing.assert_array_equal(to_float32_numpy(keras.ops.convert_to_numpy(tensor)), out)
    assert np.isfinite(out.max())  # what failed in matplotlib on bfloat16
