"""Figures shared by the notebooks: learning curves and patch grids, and how big
every figure of the book is drawn.

**Sizes.** A figure in a notebook's output is a PNG drawn at ``FIGURE_DPI``
pixels per inch (matplotlib's default ``figure.dpi``, which the inline backend
uses); the site shows it at its natural width unless the page's content column
is narrower, and then shrinks it, text and all. Every figure of the book is
therefore at most ``PAGE_WIDTH`` inches wide (the column, ``PAGE_WIDTH_PX``
pixels at a 1280 px window), so that it is shown at the size it was drawn and
its smallest text (``MIN_FONT_PT``, 9 px) stays legible. ``figure_size`` gives a
figure's ``figsize``; the schematics (``helpers.harness.schematics``) and the
explorers' pictures (``figure_png``) use the same constants.
"""

from __future__ import annotations

import html
import io
import re

import matplotlib.pyplot as plt
import numpy as np

# Pixels per inch of the PNGs in the notebooks' outputs: matplotlib's default
# figure.dpi, which the inline backend draws at (and figure_png saves at).
FIGURE_DPI = 100
# Width of a figure in a page of the site (sphinx-book-theme) in a 1280 px wide
# browser window, measured on the built site in headless Chromium: the content
# column is 688 px wide (752 px of article less 32 px padding each side) and a
# {figure} directive's image 672 px. A figure drawn wider is shown shrunk.
PAGE_WIDTH_PX = 672
PAGE_WIDTH = PAGE_WIDTH_PX / FIGURE_DPI  # inches at FIGURE_DPI
# The inline backend saves a figure cropped to what it draws plus this margin (inches,
# matplotlib's savefig.pad_inches) on each side: a figure that fills its canvas comes
# out this much wider, so figure_size leaves room for it.
TIGHT_PAD = 0.1
FIGURE_WIDTH = PAGE_WIDTH - 2 * TIGHT_PAD
# The smallest text a figure may hold: 9 px on the page, in points at FIGURE_DPI.
MIN_TEXT_PX = 9
MIN_FONT_PT = MIN_TEXT_PX * 72 / FIGURE_DPI


def figure_size(height: float, width: float = FIGURE_WIDTH) -> tuple[float, float]:
    """``figsize`` (inches) of a figure of the book: ``width`` (the page's, less the
    margins of the saved PNG, by default), never wider, and ``height``."""
    if not height > 0 or not width > 0:
        raise ValueError(f"a figure needs a positive size, got {width!r} x {height!r}")
    return (min(width, FIGURE_WIDTH), height)


def to_float32_numpy(x) -> np.ndarray:
    """Any tensor or array, of any float dtype, as a float32 NumPy array.

    What leaves a model for a picture, a NumPy statistic or a record goes
    through this: under ``precision="mixed_bfloat16"`` layers compute in
    bfloat16, and a bfloat16 tensor cannot become a NumPy array on PyTorch,
    while JAX's bfloat16 arrays break matplotlib and some NumPy functions.
    """
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
        return np.asarray(x).astype(np.float32)
    from keras import ops

    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")))


def spread_points(ax, x, values, labels=None, width: float = 0.5, **style):
    """One series of points per column of ``values`` around each ``x``, side by side.

    ``values``: (len(x), series), e.g. a value per block (x) and head (series).
    Series are offset across ``width`` (in units of x) and each gets its own
    marker, so that no series hides another where their values coincide.
    Returns the scatter artists, one per series.
    """
    values = np.asarray(values, dtype="float64")
    x = np.asarray(x, dtype="float64")
    series = values.shape[1]
    offsets = (np.linspace(-width / 2, width / 2, series) if series > 1 else np.zeros(1))
    markers = "osD^vP*Xph<>"
    artists = []
    for index in range(series):
        artists.append(ax.scatter(
            x + offsets[index], values[:, index], marker=markers[index % len(markers)],
            label=labels[index] if labels is not None else None, **style))
    return artists


def fit_limits(values, margin: float = 0.15) -> tuple[float, float]:
    """Axis limits around ``values`` (any shape, NaNs ignored) with ``margin`` of
    their range on each side, so that their spread fills the axis."""
    values = np.asarray(values, dtype="float64")
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    pad = margin * (high - low) if high > low else max(abs(high), 1.0) * margin
    return low - pad, high + pad

METRIC_TITLES = {
    "loss": "loss",
    "accuracy": "top-1 accuracy",
    "top5_accuracy": "top-5 accuracy",
}


def plot_learning_curves(histories, metrics=("loss", "accuracy", "top5_accuracy"), title=None):
    """Training (solid) and validation (dashed) curves, one panel per metric.

    Args:
        histories: a history dict (``TrainResult.history``) or a dict of them
            keyed by run label, to compare runs on the same axes.
        metrics: the metrics to draw, those missing from the history are skipped.
    """
    if histories and all(isinstance(v, (list, tuple)) for v in histories.values()):
        histories = {"": histories}
    metrics = [m for m in metrics if any(m in h for h in histories.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=figure_size(2.9), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for index, (label, history) in enumerate(histories.items()):
            color = f"C{index}"
            prefix = f"{label} " if label else ""
            if metric in history:
                epochs = np.arange(1, len(history[metric]) + 1)
                ax.plot(epochs, history[metric], color=color, label=f"{prefix}train")
            if f"val_{metric}" in history:
                epochs = np.arange(1, len(history[f"val_{metric}"]) + 1)
                ax.plot(
                    epochs, history[f"val_{metric}"], "--", color=color,
                    label=f"{prefix}validation",
                )
        ax.set_xlabel("epoch")
        ax.set_title(METRIC_TITLES.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def to_display_image(image) -> np.ndarray:
    """Any float or integer image in [0, 255] as uint8 for ``imshow``."""
    image = np.asarray(image, dtype="float32")
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def patch_mosaic(patches, patch_size: int, gap: int = 1) -> np.ndarray:
    """Lay flattened patches out on their grid with ``gap`` white pixels between.

    Args:
        patches: ``(num_patches, patch_size * patch_size * channels)``, row-major
            over the image, as a patch-extraction layer returns them.
    """
    patches = to_display_image(patches)
    num_patches = patches.shape[0]
    side = int(round(np.sqrt(num_patches)))
    if side * side != num_patches:
        raise ValueError(f"{num_patches} patches do not form a square grid")
    patches = patches.reshape(side, side, patch_size, patch_size, -1)
    channels = patches.shape[-1]
    step = patch_size + gap
    mosaic = np.full((side * step - gap, side * step - gap, channels), 255, np.uint8)
    for row in range(side):
        for col in range(side):
            mosaic[row * step:row * step + patch_size, col * step:col * step + patch_size] = (
                patches[row, col]
            )
    return mosaic


def plot_patches(image, patches, patch_size: int, title: str | None = None):
    """The image with its patch grid drawn on it, beside the patches themselves."""
    image = to_display_image(image)
    height, width = image.shape[:2]
    fig, (left, right) = plt.subplots(1, 2, figsize=figure_size(3.6))
    left.imshow(image.squeeze())
    for edge in range(patch_size, height, patch_size):
        left.axhline(edge - 0.5, color="white", linewidth=0.6)
    for edge in range(patch_size, width, patch_size):
        left.axvline(edge - 0.5, color="white", linewidth=0.6)
    rows, cols = height // patch_size, width // patch_size
    left.set_title(f"{height}x{width} image: {rows}x{cols} grid\nof {patch_size}x{patch_size} px patches",
                   fontsize="medium")
    right.imshow(patch_mosaic(patches, patch_size).squeeze())
    right.set_title(f"{len(patches)} patches\nof {np.asarray(patches).shape[-1]} values each",
                    fontsize="medium")
    for ax in (left, right):
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def figure_png(fig, dpi: int = FIGURE_DPI) -> bytes:
    """A figure as PNG bytes (closing it), e.g. for an ``ipywidgets.Image``; at
    ``FIGURE_DPI``, the resolution of the notebooks' own figures."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def animation_html(movie, alt: str, **to_jshtml) -> str:
    """A matplotlib animation as a self-contained HTML player, with alt text.

    ``Animation.to_jshtml`` links Font Awesome 4 from a CDN for its button
    icons; the link is dropped so the page needs no other host (the book's site
    theme ships its own Font Awesome, which draws the same icons). ``alt``
    describes the animation to screen readers: it goes on the player's image.
    """
    page = movie.to_jshtml(**to_jshtml)
    page = re.sub(r"<link[^>]*font-awesome[^>]*>\s*", "", page)
    return re.sub(r"<img id=", f'<img alt="{html.escape(alt, quote=True)}" id=', page, count=1)


def plot_token_maps(image, maps, titles=None, marks=None, title=None, alpha=0.55, cmap="inferno"):
    """Heatmaps over a grid of tokens, each drawn over the image it came from.

    Args:
        image: ``(height, width, channels)`` image in [0, 255].
        maps: a list of ``(rows, cols)`` arrays, one per panel (attention of a
            query token, pooling weights, ...); each is stretched over the image.
        titles: one title per panel.
        marks: per panel, a ``(row, col)`` token to outline (e.g. the query), or None.
        title: a title over all panels.
    """
    image = to_display_image(image).squeeze()
    height, width = image.shape[:2]
    side = min(2.3, FIGURE_WIDTH / len(maps))  # square panels, all of them on the page
    fig, axes = plt.subplots(1, len(maps), figsize=figure_size(side + 0.9, side * len(maps)),
                             squeeze=False)
    for index, (ax, token_map) in enumerate(zip(axes[0], maps)):
        token_map = np.asarray(token_map, dtype="float32")
        rows, cols = token_map.shape
        ax.imshow(image)
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)
        ax.imshow(token_map, cmap=cmap, alpha=alpha, extent=extent, interpolation="nearest")
        mark = marks[index] if marks else None
        if mark is not None:
            cell_h, cell_w = height / rows, width / cols
            ax.add_patch(plt.Rectangle((mark[1] * cell_w - 0.5, mark[0] * cell_h - 0.5),
                                       cell_w, cell_h, fill=False, edgecolor="cyan", linewidth=2))
        if titles:
            ax.set_title(titles[index], fontsize="small")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


def plot_predictions(images, probabilities, class_names, labels=None, top=5, columns=2,
                     title=None):
    """Images with the predicted class, each beside a bar chart of its top classes.

    Used by the ShiftViT notebook to show what a restored model predicts.

    Args:
        images: ``(n, height, width, channels)`` images in [0, 255].
        probabilities: ``(n, num_classes)`` class probabilities (softmax outputs).
        class_names: one name per class.
        labels: the true classes; when given, a title is green if the
            prediction is right and red if not, and the true class's bar is green.
        top: how many classes each bar chart shows, most likely first.
        columns: images per row.
    """
    probabilities = np.asarray(probabilities, dtype="float32")
    count = len(images)
    rows = -(-count // columns)
    top = min(top, probabilities.shape[-1])
    fig, axes = plt.subplots(
        rows, 2 * columns, figsize=figure_size(2.2 * rows), squeeze=False,
        gridspec_kw={"width_ratios": [1, 1.3] * columns},
    )
    for index in range(rows * columns):
        image_ax = axes[index // columns, 2 * (index % columns)]
        bar_ax = axes[index // columns, 2 * (index % columns) + 1]
        if index >= count:
            image_ax.axis("off")
            bar_ax.axis("off")
            continue
        order = np.argsort(probabilities[index])[::-1][:top]
        predicted = int(order[0])
        image_ax.imshow(to_display_image(images[index]).squeeze(), cmap="gray")
        image_ax.axis("off")
        text = f"{class_names[predicted]} ({probabilities[index, predicted]:.0%})"
        colour = "black"
        if labels is not None:
            truth = int(labels[index])
            colour = "tab:green" if predicted == truth else "tab:red"
            text += f"\ntrue class: {class_names[truth]}"
        image_ax.set_title(text, color=colour, fontsize="small")
        bar_colours = [
            "tab:green" if labels is not None and c == int(labels[index]) else "tab:blue"
            for c in order
        ]
        positions = np.arange(top)[::-1]
        bar_ax.barh(positions, probabilities[index, order], color=bar_colours)
        bar_ax.set_yticks(positions, [class_names[c] for c in order], fontsize="small")
        bar_ax.set_xlim(0, 1)
        bar_ax.set_xlabel("confidence")
        bar_ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
