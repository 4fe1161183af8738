"""Interactive explorers that keep working on the static site.

An explorer pre-renders one picture per slider position and links the slider
to a ``Stack`` of pictures with ``jslink``, a link that runs in the browser. The
saved widget state therefore responds on the rendered site, where there is no
Python kernel to call back. Each picture is an ``<img>`` with alt text in an
``HTML`` widget (``ipywidgets.Image`` has no alt attribute).

``Stack`` came with ipywidgets 8. With ipywidgets 7 (what Colab's runtime
ships) an explorer shows the picture of its first value alone, under a line
that says why.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence

import ipywidgets as widgets
import numpy as np

from helpers.harness.plots import figure_png, plot_patches


def divisors(size: int, smallest: int = 2) -> list[int]:
    """Patch sizes that tile a ``size``-pixel image exactly, at least ``smallest``."""
    return [p for p in range(smallest, size) if size % p == 0]


def picture(png: bytes, alt: str) -> widgets.HTML:
    """A PNG as an ``<img>`` with alt text, inside an ``HTML`` widget."""
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return widgets.HTML(
        f'<img src="{source}" alt="{html.escape(alt, quote=True)}" style="max-width: 100%">'
    )


def patch_size_explorer(
    image,
    patch_sizes: Sequence[int],
    extract_patches: Callable[[np.ndarray, int], np.ndarray],
    value: int | None = None,
) -> widgets.VBox:
    """A slider over patch sizes showing the image's patch grid for each.

    Args:
        image: one ``(height, width, channels)`` image.
        patch_sizes: the sizes offered by the slider.
        extract_patches: ``(image, patch_size) -> (num_patches, patch_dim)``,
            normally the notebook's own patch layer.
        value: the size selected at first (default: the middle one).
    """
    patch_sizes = list(patch_sizes)
    if not patch_sizes:
        raise ValueError("patch_sizes is empty")
    first = value if value in patch_sizes else patch_sizes[len(patch_sizes) // 2]

    def page(size):
        patches = np.asarray(extract_patches(image, size))
        fig = plot_patches(image, patches, size)
        height, width = np.shape(image)[:2]
        rows, cols = height // size, width // size
        alt = (f"Left: the {height}x{width} image with its {rows}x{cols} grid of "
               f"{size}x{size}-pixel patches drawn on it. "
               f"Right: its {len(patches)} patches in reading order, each a token of "
               f"{patches.shape[-1]} values; smaller patches mean more, smaller tokens.")
        return picture(figure_png(fig), alt)

    if not hasattr(widgets, "Stack"):
        return widgets.VBox([widgets.HTML(
            f"ipywidgets {widgets.__version__} has no <code>Stack</code> (8.0 and later "
            f"have it): patch size {first} only, without the slider."), page(first)])
    stack = widgets.Stack([page(size) for size in patch_sizes])
    slider = widgets.SelectionSlider(
        options=patch_sizes,
        value=first,
        description="patch size",
        continuous_update=True,
    )
    stack.selected_index = slider.index
    widgets.jslink((slider, "index"), (stack, "selected_index"))
    return widgets.VBox([slider, stack])
