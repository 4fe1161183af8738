"""Data-flow schematics of the five models, drawn with matplotlib.

One figure per paper (``SCHEMATICS``, keyed by the notebook's name): the
model's layers as labelled boxes joined by arrows, left to right and row
after row, each arrow marked with the symbolic shape of the tensor it carries
(H, W, C the image; P the patch side; N tokens or latents; D the token width;
L blocks). Dashed frames hold the parts that repeat (``× L``) or belong
together, and red boxes mark what a paper changes. ``ALT_TEXT`` describes each
figure in words for the pages' ``alt`` attributes.

Where a model's structure depends on its parameters (ShiftViT's stages: how
many, how many blocks each, at which size), the schematic is drawn from them:
``draw("shiftvit", p)`` with the run's parameters ``p``, which the ShiftViT
notebook does in a cell, so its page shows the stages the run trained. The
other models' drawings are symbolic (``× L`` blocks, ``× num_iterations``) and
hold for any parameters.

The book's runner writes the PNGs into the build tree's ``book/schematics/``
(``write_all``, each model with its notebook's defaults) and the paper pages
embed them from their Markdown; the same files come from
``python -m helpers.harness.schematics OUTDIR``. ``schematic_png`` saves a figure
at the resolution that makes it as wide as the site's content column
(``helpers.harness.plots.PAGE_WIDTH_PX``), so it is shown at the size it is
drawn, its 9-point text at least ``MIN_TEXT_PX`` pixels tall. Nothing here
imports Keras: the figures follow the notebooks' builders (``helpers.papers``)
by hand, so a change of architecture there needs its schematic redrawn here.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.path import Path as LinePath
from matplotlib.transforms import Bbox

from helpers.harness.plots import MIN_TEXT_PX, PAGE_WIDTH_PX

WIDTH = 10.0  # inches; the figures' coordinates are inches from the lower-left corner
FONT = 9.5  # box titles and frame labels; details and shapes are 9 pt
SMALL = 9.0
GAP = 0.26  # least space between two boxes, in inches
PAD = 0.07  # inside a box, around its text
FRAME_PAD = 0.12  # between a dashed frame and the boxes it holds
# The widest drawing whose SMALL text, saved at the page's width, keeps MIN_TEXT_PX
# pixels (less the margins save() leaves): rows that wrap (Sketch.flow) stay within it.
CONTENT_WIDTH = PAGE_WIDTH_PX * SMALL / (72 * MIN_TEXT_PX) - 0.2
INK = "#333333"
COLORS = {  # (fill, edge) of each kind of box
    "data": ("#eeeeee", "#888888"),  # inputs, learned arrays, outputs
    "layer": ("#e3eef9", "#5b84b1"),
    "block": ("#fdebd0", "#c98a2b"),  # what repeats
    "new": ("#f8d4d4", "#c0392b"),  # what the paper changes
}


Chain = list  # an item (Node or Group), then (shape label or None, item) pairs


@dataclass
class Node:
    """A box to draw: a bold title, optional detail lines, a kind of ``COLORS``."""

    title: str
    detail: str = ""
    kind: str = "layer"


@dataclass
class Group:
    """A chain drawn inside a dashed frame, ``label`` above its right corner.

    ``room`` is extra height (inches) kept inside the frame above the boxes,
    for a connection drawn over them.
    """

    chain: Chain
    label: str
    room: float = 0.0


Item = Union[Node, Group]


@dataclass
class Box:
    """A drawn box: centre ``(x, y)`` and size, in inches."""

    x: float
    y: float
    w: float
    h: float

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def right(self) -> float:
        return self.x + self.w / 2

    @property
    def top(self) -> float:
        return self.y + self.h / 2

    @property
    def bottom(self) -> float:
        return self.y - self.h / 2


@dataclass
class Row:
    """What ``Sketch.chain`` drew: its boxes in order and its extent (frames included)."""

    boxes: list
    left: float
    right: float
    top: float
    bottom: float


class Sketch:
    """A ``WIDTH`` x ``height`` inch figure drawn in inches, with boxes, arrows and frames."""

    def __init__(self, height: float):
        self.fig = Figure(figsize=(WIDTH, height), facecolor="white")
        FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, WIDTH)
        self.ax.set_ylim(0, height)
        self.ax.axis("off")
        self.renderer = self.fig.canvas.get_renderer()

    def text(self, x: float, y: float, text: str, **style):
        """Text at ``(x, y)`` inches; returns it and its (width, height) in inches."""
        style = {"fontsize": SMALL, "color": INK, **style}
        artist = self.ax.text(x, y, text, **style)
        extent = artist.get_window_extent(self.renderer)
        return artist, (extent.width / self.fig.dpi, extent.height / self.fig.dpi)

    def measure(self, text: str, **style) -> tuple[float, float]:
        """The (width, height) in inches that ``text`` would take, drawing nothing."""
        artist, size = self.text(0, 0, text, **style)
        artist.remove()
        return size

    def box(self, left: float, y: float, node: Node) -> Box:
        """``node`` as a rounded box, left edge at ``left``, centred on height ``y``."""
        title, (tw, th) = self.text(0, 0, node.title, fontsize=FONT, fontweight="bold",
                                    ha="center", va="top", zorder=3)
        detail, (dw, dh) = None, (0.0, 0.0)
        if node.detail:
            detail, (dw, dh) = self.text(0, 0, node.detail, ha="center", va="top", zorder=3,
                                         linespacing=1.15, multialignment="center")
        w = max(tw, dw, 0.45) + 2 * PAD
        h = th + (dh + 0.03 if detail else 0.0) + 2 * PAD
        box = Box(left + w / 2, y, w, h)
        title.set_position((box.x, box.top - PAD))
        if detail:
            detail.set_position((box.x, box.top - PAD - th - 0.03))
        fill, edge = COLORS[node.kind]
        self.ax.add_patch(FancyBboxPatch(
            (box.left, box.bottom), w, h, boxstyle="round,pad=0,rounding_size=0.07",
            facecolor=fill, edgecolor=edge, linewidth=1.1, zorder=1,
        ))
        return box

    def arrow(self, points: list, label: str | None = None, side: str = "above"):
        """An arrow along the polyline ``points``, ``label`` beside its longest segment."""
        self.ax.add_patch(FancyArrowPatch(
            path=LinePath(points), arrowstyle="-|>,head_length=0.45,head_width=0.22",
            mutation_scale=14, color=INK, linewidth=1.1, shrinkA=0, shrinkB=0, zorder=2,
        ))
        if label:
            segments = list(zip(points, points[1:]))
            (x0, y0), (x1, y1) = max(
                segments, key=lambda s: abs(s[1][0] - s[0][0]) + abs(s[1][1] - s[0][1])
            )
            if y0 == y1:  # horizontal: above or below the middle
                below = side == "below"
                self.text((x0 + x1) / 2, y0 + (-0.04 if below else 0.04), label,
                          ha="center", va="top" if below else "bottom", color="#444444")
            else:  # vertical: right of the middle
                self.text(x0 + 0.06, (y0 + y1) / 2, label, ha="left", va="center",
                          color="#444444")

    def frame(self, left: float, bottom: float, right: float, top: float, label: str):
        """A dashed frame with ``label`` above its right corner; returns the label's top."""
        self.ax.add_patch(Rectangle(
            (left, bottom), right - left, top - bottom, fill=False, linestyle=(0, (4, 3)),
            edgecolor="#777777", linewidth=1.0, zorder=0,
        ))
        _, (_, h) = self.text(right, top + 0.03, label, fontsize=FONT, fontweight="bold",
                              ha="right", va="bottom", color="#555555")
        return top + 0.03 + h

    def chain(self, y: float, chain: Chain, left: float = 0.05) -> Row:
        """Boxes and frames of ``chain`` left to right on height ``y``, joined by arrows.

        ``chain`` is an item (``Node`` or ``Group``), then for each next item its
        incoming arrow's shape label (or ``None``) and the item.
        """
        row = self.item(y, chain[0], left)
        for label, item in zip(chain[1::2], chain[2::2]):
            width = self.measure(label)[0] + 0.12 if label else 0.0
            following = self.item(y, item, row.right + max(GAP, width))
            self.arrow([(row.boxes[-1].right, y), (following.boxes[0].left, y)])
            if label:
                self.text((row.right + following.left) / 2, y + 0.04, label,
                          ha="center", va="bottom", color="#444444")
            row = Row(row.boxes + following.boxes, row.left, following.right,
                      max(row.top, following.top), min(row.bottom, following.bottom))
        return row

    def item(self, y: float, item: Item, left: float) -> Row:
        """One ``Node`` (a box) or ``Group`` (its chain in a frame), left edge at ``left``."""
        if isinstance(item, Node):
            box = self.box(left, y, item)
            return Row([box], box.left, box.right, box.top, box.bottom)
        inner = self.chain(y, item.chain, left + FRAME_PAD)
        bottom, top = inner.bottom - FRAME_PAD, inner.top + FRAME_PAD + item.room
        right = inner.right + FRAME_PAD
        label_top = self.frame(left, bottom, right, top, item.label)
        return Row(inner.boxes, left, right, label_top, bottom)

    def width(self, chain: Chain) -> float:
        """The width, in inches, that ``chain`` of ``Node`` s would take in one row."""
        total = 0.0
        for index, node in enumerate(chain[::2]):
            tw = self.measure(node.title, fontsize=FONT, fontweight="bold")[0]
            dw = self.measure(node.detail, linespacing=1.15)[0] if node.detail else 0.0
            total += max(tw, dw, 0.45) + 2 * PAD
            if index:
                label = chain[2 * index - 1]
                total += max(GAP, self.measure(label)[0] + 0.12 if label else 0.0)
        return total

    def flow(self, top: float, chain: Chain, pitch: float, left: float = 0.05,
             first_width: float = CONTENT_WIDTH) -> list:
        """``chain`` of ``Node`` s left to right in rows ``pitch`` inches apart, from
        height ``top`` down, a new row whenever the next box would pass the
        drawing's widest (``CONTENT_WIDTH``; the first row has ``first_width``); rows are
        joined by ``turn`` arrows. Returns the drawn ``Row`` s."""
        rows, current, limit = [], [chain[0]], first_width
        for label, node in zip(chain[1::2], chain[2::2]):
            if self.width(current + [label, node]) > limit:
                rows.append((current, label))
                current, limit = [node], CONTENT_WIDTH
            else:
                current += [label, node]
        rows.append((current, None))
        drawn = []
        for index, (row, _) in enumerate(rows):
            drawn.append(self.chain(top - index * pitch, row, left))
        for (_, label), upper, lower in zip(rows, drawn, drawn[1:]):
            self.turn(upper.boxes[-1], lower.boxes[0], gap_between(upper, lower), label)
        return drawn

    def turn(self, start: Box, end: Box, y: float, label: str | None = None):
        """An arrow from the bottom of ``start`` down to height ``y``, across, and
        down into the top of ``end`` (from one row to the next)."""
        self.arrow([(start.x, start.bottom), (start.x, y), (end.x, y), (end.x, end.top)], label)

    def legend(self, x: float, y: float, kind: str, text: str):
        """A swatch of ``kind``'s colours and ``text`` after it, from ``(x, y)``."""
        fill, edge = COLORS[kind]
        self.ax.add_patch(FancyBboxPatch(
            (x, y - 0.07), 0.24, 0.14, boxstyle="round,pad=0,rounding_size=0.03",
            facecolor=fill, edgecolor=edge, linewidth=1.1,
        ))
        self.text(x + 0.32, y, text, ha="left", va="center")


def gap_between(upper: Row, lower: Row) -> float:
    """The height halfway between two rows, for the arrow that ``Sketch.turn`` draws."""
    return (upper.bottom + lower.top) / 2


IMAGE = Node("image", "(H, W, C)", "data")
LOGITS = Node("Dense", "logits:\n(classes)", "data")


def _vit_head(block: Node) -> Chain:
    """The ViT's L blocks (attention ``block``, then the MLP) and its head."""
    return [
        Group([block, "(N, D)",
               Node("x + MLP(LN(x))", "Dense 2D + GELU,\nDense D + GELU", "block")], "× L"),
        "(N, D)", Node("LayerNorm"),
        "(N, D)", Node("Flatten", "all N tokens:\nno class token"),
        "(N·D)", Node("MLP head", "Dense + GELU\n+ dropout"),
        None, LOGITS,
    ]


def vit() -> Figure:
    """The ViT: patches, L pre-norm transformer blocks, flattened tokens, MLP head."""
    s = Sketch(2.75)
    top = s.chain(2.05, [
        IMAGE, "pixels",
        Node("augmentation", "standardize, resize to H×W;\ntraining: flip, rotate, zoom"),
        "(H, W, C)", Node("Patches", "P×P patches,\nN = (H/P)²"),
        "(N, P²C)", Node("PatchEncoder", "Dense → D\n+ learned position\nembedding"),
    ])
    bottom = s.chain(0.45, _vit_head(
        Node("x + MSA(LN(x))", "multi-head\nself-attention", "block")
    ))
    s.turn(top.boxes[-1], bottom.boxes[0], gap_between(top, bottom), "(N, D)")
    return s.fig


def spt_lsa() -> Figure:
    """The ViT with Shifted Patch Tokenization and Locality Self-Attention (red)."""
    s = Sketch(3.05)
    top = s.chain(2.2, [
        IMAGE, None,
        Node("augmentation", "as the ViT"),
        "(H, W, C)",
        Group([
            Node("shift", "image + 4 copies\nshifted diagonally\nby P/2; concatenate", "new"),
            "(H, W, 5C)", Node("Patches", "N = (H/P)²", "new"),
            "(N, 5P²C)", Node("LayerNorm", "then Dense → D\n+ position emb.", "new"),
        ], "Shifted Patch Tokenization"),
    ])
    bottom = s.chain(0.6, _vit_head(
        Node("x + LSA(LN(x))", "learned τ, not √d;\nmasked diagonal:\nno score with itself",
             "new")
    ))
    s.turn(top.boxes[-1], bottom.boxes[0], gap_between(top, bottom), "(N, D)")
    s.legend(0.05, 2.85, "new", "changed from the ViT")
    return s.fig


def perceiver() -> Figure:
    """The Perceiver: a small latent array cross-attends to the inputs, then
    self-attends; the pair repeats with shared weights."""
    s = Sketch(3.5)
    top = s.chain(2.85, [
        IMAGE, None,
        Node("augmentation", "standardize, resize;\ntraining: flip, zoom"),
        "(H, W, C)", Node("Patches", "M = (H/P)² inputs"),
        "(M, P²C)", Node("encoder", "Dense → D + position\n(learned or Fourier)"),
    ])
    bottom = s.chain(1.2, [
        Node("latent array", "learned (N, D),\nN ≪ M", "data"),
        None,
        Group([
            Node("cross-attention", "Q: latents\nK, V: inputs\ncost O(M·N)", "block"),
            "(N, D)", Node("feedforward", "x + MLP(LN(x))", "block"),
            "(N, D)", Node("self-attention", "over N latents\n× blocks", "block"),
        ], "× num_iterations"),
        "(N, D)", Node("LayerNorm", "average of\nthe latents"),
        "(D)", Node("head", "Dense + GELU,\nDense → logits:\n(classes)", "data"),
    ])
    cross, latent = bottom.boxes[1], bottom.boxes[3]
    s.turn(top.boxes[-1], cross, gap_between(top, bottom), "byte array (M, D): keys, values")
    below = bottom.bottom - 0.25
    s.arrow([(latent.x, latent.bottom), (latent.x, below), (cross.x, below),
             (cross.x, cross.bottom)],
            "(N, D): next iteration, the same weights", side="below")
    return s.fig


def cct() -> Figure:
    """The CCT: convolutional tokens, L blocks with stochastic depth, sequence pooling."""
    s = Sketch(2.9)
    top = s.chain(2.05, [
        IMAGE, None,
        Node("augmentation", "rescale to [0, 1];\ntraining: pad + crop, flip"),
        "(H, W, C)",
        Group([Node("conv 3×3", "ReLU, no bias,\nthen zero pad 1"), None,
               Node("max-pool 3×3", "stride 2")], "tokenizer: × conv_layers"),
        "(H', W', D)", Node("reshape", "N = H'·W' tokens\n+ position emb.\n(optional)"),
    ])
    bottom = s.chain(0.5, [
        Group([Node("x + SD(MSA(LN(x)))", "SD: stochastic depth", "block"), "(N, D)",
               Node("x + SD(MLP(LN(x)))", "", "block")], "× L"),
        "(N, D)", Node("LayerNorm"),
        "(N, D)", Node("sequence pooling", "g = Dense(x): a score per token\n"
                       "a = softmax of g over tokens\nweighted average aᵀx"),
        "(D)", LOGITS,
    ])
    s.turn(top.boxes[-1], bottom.boxes[0], gap_between(top, bottom), "(N, D)")
    return s.fig


# The ShiftViT notebook's defaults (the Keras example's model), which ``shiftvit``
# draws when given no parameters; tests check them against helpers.papers.shiftvit.
SHIFTVIT_DEFAULTS = {"image_size": 52, "crop_size": 48, "patch_size": 4, "projected_dim": 96,
                     "num_shift_blocks_per_stages": [2, 4, 8, 2], "num_div": 12,
                     "shift_pixel": 1, "mlp_expand_ratio": 2}


def _parameter(p: Any, name: str):
    """``p.name`` or ``p[name]``: a notebook's ``Parameters`` or a plain dict."""
    return p[name] if isinstance(p, dict) else getattr(p, name)


def shiftvit_stages(p: Any = None) -> list[tuple[int, int, int]]:
    """``(side, channels, blocks)`` of each stage of the ShiftViT that ``p`` builds:
    the crop cut into patches, then halved (rounded up) and doubled per merge."""
    p = SHIFTVIT_DEFAULTS if p is None else p
    side, channels = _parameter(p, "crop_size") // _parameter(p, "patch_size"), _parameter(
        p, "projected_dim")
    stages = []
    for blocks in _parameter(p, "num_shift_blocks_per_stages"):
        stages.append((side, channels, int(blocks)))
        side, channels = -(-side // 2), 2 * channels
    return stages


def _blocks(n: int) -> str:
    return f"{n} shift block" + ("" if n == 1 else "s")


def shiftvit(p: Any = None) -> Figure:
    """ShiftViT as the parameters ``p`` build it (the notebook's defaults without):
    its stages of shift blocks (no attention), patch merging between them, and
    one shift block in detail."""
    p = SHIFTVIT_DEFAULTS if p is None else p
    stages = shiftvit_stages(p)
    patch, crop = _parameter(p, "patch_size"), _parameter(p, "crop_size")
    num_div, shift_pixel = _parameter(p, "num_div"), _parameter(p, "shift_pixel")
    ratio = _parameter(p, "mlp_expand_ratio")
    s = Sketch(3.0 + 1.3 * (2 * len(stages) + 4))
    top = s.ax.get_ylim()[1] - 0.55
    chain: Chain = [
        Node("image", "(H, W, 3)", "data"), None,
        Node("augmentation", f"rescale, resize to {_parameter(p, 'image_size')},\n"
             f"crop {crop}; training: flip"),
        f"({crop}, {crop}, 3)",
        Node("patch embedding", f"conv {patch}×{patch}, stride {patch}"),
    ]
    for index, (side, channels, blocks) in enumerate(stages, start=1):
        if index > 1:
            chain += [None, Node("merge", "LN, conv 2×2,\nstride 2")]
        chain += [f"({side}, {side}, {channels})" if index == 1 else None,
                  Node(f"stage {index}", f"{side}×{side}×{channels}\n{_blocks(blocks)}",
                       "block")]
    chain += [None, Node("global average", "pooling"), f"({stages[-1][1]})", LOGITS]
    rows = s.flow(top, chain, pitch=1.3)
    y = rows[-1].bottom - 1.25
    moved = "4 channel groups" if num_div == 4 else f"4 of {num_div} channel\ngroups"
    block = s.chain(y, [
        Group([
            Node("shift", f"{moved} move {shift_pixel} px:\n"
                 "← → ↑ ↓, no parameters", "new") if shift_pixel else
            Node("no shift", "shift_pixel = 0:\nthe identity", "new"),
            None, Node("LayerNorm"), None,
            Node("MLP", f"Dense to {ratio}·c, GELU,\nDense to c"),
            "drop path", Node("+", "", "data"),
        ], "one shift block on (h, w, c), in every stage", room=0.3),
    ], left=0.6)
    shift, plus = block.boxes[0], block.boxes[-1]
    x = shift.right + GAP / 2
    s.arrow([(x, shift.y), (x, shift.top + 0.2), (plus.x, shift.top + 0.2), (plus.x, plus.top)],
            "residual: x")
    s.legend(block.right + 0.2, y, "new", "replaces attention")
    return s.fig


def shiftvit_caption(p: Any = None) -> str:
    """One sentence on the stages ``shiftvit(p)`` draws, from the same parameters."""
    stages = shiftvit_stages(p)
    described = [f"{_blocks(blocks)} on {side}×{side}×{channels} maps"
                 for side, channels, blocks in stages]
    joined = (described[0] if len(described) == 1
              else ", ".join(described[:-1]) + " and " + described[-1])
    count = "one stage" if len(stages) == 1 else f"{len(stages)} stages"
    return (f"The data flow of this run's ShiftViT, drawn from its parameters by the book "
            f"(`helpers/harness/schematics.py`): {count}, {joined}, with patch merging "
            f"between them; below, one shift block.")


SCHEMATICS: dict[str, Callable[..., Figure]] = {
    "vit": vit,
    "spt_lsa": spt_lsa,
    "perceiver": perceiver,
    "cct": cct,
    "shiftvit": shiftvit,
}

ALT_TEXT: dict[str, str] = {
    "vit": "Data flow of the ViT: image (H, W, C), augmentation, cut into N patches of "
           "P·P·C values, Dense projection to D plus a learned position embedding, L pre-norm "
           "transformer blocks (x + MSA(LN(x)), x + MLP(LN(x))), LayerNorm, flatten the N "
           "tokens (no class token), MLP head, Dense logits",
    "spt_lsa": "Data flow of the ViT with SPT and LSA: the image and four copies shifted "
               "diagonally by half a patch are concatenated (5C channels), cut into patches, "
               "layer-normalized and projected to D (Shifted Patch Tokenization); the L blocks "
               "use Locality Self-Attention (learned temperature, diagonal masked); the rest "
               "as the ViT",
    "perceiver": "Data flow of the Perceiver: image cut into M patches, projected to D with "
                 "position features (the byte array); a learned latent array of N much smaller "
                 "than M cross-attends to it (cost M·N), then a feedforward and a latent "
                 "transformer over the N latents; repeated num_iterations times with shared "
                 "weights; LayerNorm, average of the latents, Dense head, logits",
    "cct": "Data flow of the Compact Convolutional Transformer: image, convolutional "
           "tokenizer (conv 3×3, ReLU, max-pool stride 2, per conv layer), reshape to N tokens "
           "of width D with an optional position embedding, L transformer blocks with "
           "stochastic depth, LayerNorm, sequence pooling (softmax of a Dense score per token, "
           "weighted average), Dense logits",
    "shiftvit": "Data flow of ShiftViT as the run's parameters build it: image, patch "
                "embedding convolution, then the run's stages of shift blocks, each box giving "
                "its feature map (side × side × channels) and number of blocks, patch merging "
                "(halving the map, doubling the channels) between stages, global average "
                "pooling, Dense logits; below, one shift block: 4 channel groups move left, "
                "right, up and down (no parameters), then x + drop path(MLP(LayerNorm(x)))",
}


def content_box(fig: Figure) -> Bbox:
    """The extent of everything drawn on a schematic, in inches (figure coordinates)."""
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    extents = [artist.get_window_extent(renderer) for artist in [*ax.patches, *ax.texts]]
    return Bbox.union(extents).transformed(fig.dpi_scale_trans.inverted())


# Models whose drawing depends on their parameters: draw(name, p) passes them on.
PARAMETRIZED = ("shiftvit",)


def draw(name: str, p: Any = None) -> Figure:
    """The schematic of model ``name`` (a key of ``SCHEMATICS``); for a model of
    ``PARAMETRIZED``, as the parameters ``p`` build it (its notebook's defaults
    when ``p`` is None)."""
    if name not in SCHEMATICS:
        raise KeyError(f"no schematic {name!r}; known: {', '.join(SCHEMATICS)}")
    return SCHEMATICS[name](p) if name in PARAMETRIZED else SCHEMATICS[name]()


def page_dpi(fig: Figure, pad: float = 0.05) -> float:
    """The resolution at which the schematic ``fig`` (cropped to its drawing,
    ``pad`` inches around) is exactly as wide as the site's content column."""
    return PAGE_WIDTH_PX / content_box(fig).padded(pad).width


def save(fig: Figure, target, pad: float = 0.05) -> None:
    """Save ``fig`` as PNG to ``target`` (a path or a binary file), cropped to its
    drawing and at the page's width (``page_dpi``); the same bytes every time."""
    fig.savefig(target, format="png", dpi=page_dpi(fig, pad),
                bbox_inches=content_box(fig).padded(pad), facecolor="white",
                metadata={"Software": None})


def schematic_png(name: str, p: Any = None) -> bytes:
    """``draw(name, p)`` as PNG bytes at the page's width, for a notebook to show."""
    buffer = io.BytesIO()
    save(draw(name, p), buffer)
    return buffer.getvalue()


def write_all(folder: Path) -> list[Path]:
    """Write ``<folder>/<name>.png`` for every model (the same bytes every time)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SCHEMATICS:
        path = folder / f"{name}.png"
        save(draw(name), path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m helpers.harness.schematics OUTDIR", file=sys.stderr)
        return 2
    for path in write_all(Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
