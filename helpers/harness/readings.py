"""Sentences that say what one run's figures show, written from the run's numbers.

A page's prose explains what a figure measures and what the papers found with
it; whether this run's model shows the same (local heads, sharper attention)
depends on the run. These functions turn the values a figure plots into the
sentence printed under it, so the words change with the run instead of being
written in advance.

Every word that compares (local, far, above uniform, on the centre, learned
sharper) is decided against a noise margin, never a fixed percentage: a value
differs from its baseline only when the gap exceeds ``margin`` (2 by default)
standard errors of its mean over the sampled images, or over the seeds when
several are given. Otherwise the sentence says that no effect is visible at
this budget. The baselines are computed, not assumed: uniform attention over
the keys a query may see (``uniform_attention_distance``: every token, or every
other token when the diagonal is masked, as in LSA), the uniform weight
``1 / tokens``, and for a learned scalar under weight decay the value decay
alone would have reached (``helpers.harness.train.decay_only_trajectory``).
"""

from __future__ import annotations


import numpy as np


def _values(numbers, unit: str = "", digits: int = 1) -> str:
    """``1.0, 2.5 and 3.1 px``."""
    text = [f"{value:.{digits}f}" for value in numbers]
    joined = text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]
    return joined + (f" {unit}" if unit else "")


def _count(n: int, total: int, noun: str) -> str:
    if total == 1:
        return f"the {noun}"
    if n == total:
        return f"all {total} {noun}s" if total > 2 else f"both {noun}s"
    return f"{n} of {total} {noun}s"


def mean_and_error(samples, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean over ``axis`` and its standard error (sample std / sqrt(n)); error 0 for n = 1."""
    samples = np.asarray(samples, dtype="float64")
    n = samples.shape[axis]
    if n < 1:
        raise ValueError("need at least one sample to average")
    mean = samples.mean(axis=axis)
    if n == 1:
        return mean, np.zeros_like(mean)
    return mean, samples.std(axis=axis, ddof=1) / np.sqrt(n)


def compare(mean: float, error: float, baseline: float, margin: float = 2.0) -> int:
    """-1 below ``baseline``, +1 above, 0 when the gap is within ``margin`` standard errors.

    With no spread (``error`` 0: one sample) nothing is called: 0.
    """
    if not error > 0:
        return 0
    gap = mean - baseline
    if abs(gap) <= margin * error:
        return 0
    return 1 if gap > 0 else -1


def _check_margin(margin: float) -> None:
    if not margin > 0:
        raise ValueError(f"margin must be a positive number of standard errors, got {margin!r}")


def uniform_attention_distance(grid_size: int, patch_size: float, *,
                               masked_diagonal: bool = False) -> float:
    """Attention distance in pixels of uniform attention on a ``grid_size`` x ``grid_size`` grid.

    Each query spreads its weight evenly over every token (``1 / n``), or, when
    the diagonal is masked as in LSA, over every other token (``1 / (n - 1)``):
    the distance-0 term of a query's own patch then drops out, which raises the
    baseline by ``n / (n - 1)``. Patches are ``patch_size`` pixels apart.
    """
    if grid_size < 1 or (masked_diagonal and grid_size * grid_size < 2):
        raise ValueError(f"grid_size {grid_size!r} leaves no key to attend to")
    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)
    distance = np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]) * patch_size
    keys = grid_size * grid_size - (1 if masked_diagonal else 0)
    return float((distance.sum(axis=1) / keys).mean())


def _per_image(values, name: str, trailing: int):
    """(images, ...) values, or (seeds, images, ...): the per-sample values a mean and
    its error come from (per-seed means of the images when there are several seeds)."""
    values = np.asarray(values, dtype="float64")
    if values.ndim == trailing + 2:
        if values.shape[0] > 1:
            return values.mean(axis=1), "seeds"
        values = values[0]
    if values.ndim != trailing + 1 or not values.size:
        raise ValueError(f"{name} must be (images, ...) or (seeds, images, ...) with "
                         f"{trailing} trailing axes, got shape {values.shape}")
    return values, "images"


def attention_distance_reading(distances, uniform: float, *, model: str = "",
                               margin: float = 2.0) -> str:
    """What a mean-attention-distance figure shows for the first and last blocks.

    ``distances``: (images, blocks, heads) attention-weighted distance in pixels
    between a query patch and the patches it attends to, one value per sampled
    image (or (seeds, images, blocks, heads)); ``uniform``: the same distance
    for uniform attention over the keys a query may see
    (``uniform_attention_distance``). A head is *local* when its mean is below
    ``uniform`` by more than ``margin`` standard errors over the images (over
    the seeds, when there are several), *far* when above by as much; otherwise
    no difference from uniform attention is visible at this budget.
    """
    _check_margin(margin)
    if not uniform > 0:
        raise ValueError(f"uniform must be a positive distance, got {uniform!r}")
    samples, over = _per_image(distances, "distances", 2)
    mean, error = mean_and_error(samples)
    blocks, heads = mean.shape
    parts = []
    for block in sorted({0, blocks - 1}):
        verdicts = [compare(m, e, uniform, margin) for m, e in zip(mean[block], error[block])]
        local, far = verdicts.count(-1), verdicts.count(1)
        kinds = [(local, "local (closer than uniform)"),
                 (verdicts.count(0), "not distinguishable from uniform attention at this "
                                     "budget"),
                 (far, "farther than uniform")]
        verdict = ", ".join(f"{_count(n, heads, 'head')} {kind}" for n, kind in kinds if n)
        where = "block 1" if block == 0 else f"block {block + 1}, the last,"
        spread = ", ".join(f"{m:.1f} ± {e:.2f}" for m, e in zip(mean[block], error[block]))
        parts.append(f"In {where} the heads attend at {spread} px: {verdict}.")
    who = f"**{model}.** " if model else ""
    n = len(samples)
    return (f"{who}Uniform attention would reach {uniform:.1f} px. Each distance is the mean "
            f"± its standard error over {n} {over}; a head is called local or far only when "
            f"it differs from uniform by more than {margin:g} standard errors. "
            + " ".join(parts))


def temperature_reading(learned, start: float, decay_only: float, *, steps: int | None = None,
                        margin: float = 2.0) -> str:
    """Where the learned LSA temperatures ended, against what weight decay alone gives.

    ``learned``: per block, a number or one number per head (one seed), or
    (seeds, blocks[, heads]) for several seeds; ``start``: the initial value;
    ``decay_only``: the value weight decay alone would have reached over the
    same steps (``start`` when the temperatures were exempt from decay). The
    change a block's (head-averaged) temperature made splits into the decay's
    part, ``decay_only - start``, and the learned part, ``ended - decay_only``.
    Whether the learned part made attention sharper (below 0) or flatter is
    called only across seeds, beyond ``margin`` standard errors; one seed
    gives no spread to call it against.
    """
    _check_margin(margin)
    if not len(learned):
        raise ValueError("temperatures must have one entry per block")
    values = [np.asarray(t, dtype="float64") for t in learned]
    per_head = any(v.ndim for v in values)
    means = np.array([[v.mean() for v in values]])
    return _temperature_sentence(means, start, decay_only, steps, margin, per_head)


def temperature_reading_over_seeds(learned, start: float, decay_only: float, *,
                                   steps: int | None = None, margin: float = 2.0) -> str:
    """``temperature_reading`` for several seeds: ``learned`` is (seeds, blocks) or
    (seeds, blocks, heads) (heads averaged per block)."""
    _check_margin(margin)
    values = np.asarray(learned, dtype="float64")
    if values.ndim not in (2, 3) or not values.size:
        raise ValueError(f"learned must be (seeds, blocks[, heads]), got shape {values.shape}")
    per_head = values.ndim == 3
    means = values.mean(axis=2) if per_head else values
    return _temperature_sentence(means, start, decay_only, steps, margin, per_head)


def _temperature_sentence(means, start, decay_only, steps, margin, per_head) -> str:
    """``means``: (seeds, blocks) head-averaged temperatures."""
    if not start > 0:
        raise ValueError(f"start must be a positive temperature, got {start!r}")
    seeds, blocks = means.shape
    ended, ended_error = mean_and_error(means)
    learned_part = ended - decay_only
    change = ended - start
    over = f" over {steps:,} steps" if steps else ""
    if abs(decay_only - start) < 1e-12 * start:
        decay = (f"The temperatures were exempt from weight decay, so the whole change from "
                 f"the start of {start:.3f} is learned.")
    else:
        decay = (f"Weight decay alone would take the temperature from {start:.3f} to "
                 f"{decay_only:.3f}{over} ({decay_only - start:+.3f}).")
    mean_of = "head-averaged temperatures" if per_head else "temperatures"
    which = "one block" if blocks == 1 else f"blocks 1 to {blocks}"
    if seeds > 1:
        ends = ", ".join(f"{m:.3f} ± {e:.3f}" for m, e in zip(ended, ended_error))
        ended_text = f"ended at {ends} ({which}; mean ± standard error over {seeds} seeds)"
    else:
        ended_text = f"ended at {_values(ended, digits=3)} ({which})"
    shares = []
    for part, total in zip(learned_part, change):
        if abs(total) < 1e-9:
            shares.append(f"{part:+.3f} of no net change")
        elif part * total > 0:
            shares.append(f"{part:+.3f} of a {total:+.3f} change ({abs(part) / abs(total):.0%})")
        else:
            shares.append(f"{part:+.3f} of a {total:+.3f} change (against it)")
    text = (f"{decay} The learned {mean_of} {ended_text}: the learned part, the end against "
            f"the decay-only value, is {'; '.join(shares)}.")
    if seeds == 1:
        return (text + " With one seed there is no spread to call the learned part sharper or "
                       "flatter against: no direction is claimed at this budget.")
    verdicts = [compare(m, e, decay_only, margin) for m, e in zip(ended, ended_error)]
    kinds = [(verdicts.count(-1), "learned sharper attention (below the decay-only value)"),
             (verdicts.count(0), f"no learned change beyond {margin:g} standard errors over "
                                 f"the seeds"),
             (verdicts.count(1), "learned flatter attention (above the decay-only value)")]
    return text + " " + ", ".join(f"{_count(n, blocks, 'block')} {kind}"
                                  for n, kind in kinds if n) + "."


def self_weight_reading(self_weights, tokens: int, *, masked: bool = False,
                        model: str = "", margin: float = 2.0) -> str:
    """How much weight a token gives its own patch, per block, against uniform attention.

    ``self_weights``: (images, blocks) mean diagonal attention weight (over
    heads and queries) per sampled image; ``tokens``: the sequence length, so
    uniform attention gives each key, a token's own included, ``1 / tokens``.
    A masked diagonal (LSA) has no self weight to read. A block's self weight
    is above (below) uniform when it differs by more than ``margin`` standard
    errors over the images; the largest block mean is also given as a share
    of the row, which a weight that dominated its row would push towards 1.
    """
    _check_margin(margin)
    who = f"**{model}.** " if model else ""
    if masked:
        return (f"{who}Its diagonal is masked: a token gives its own patch a weight of "
                f"exactly 0.")
    samples, over = _per_image(self_weights, "self_weights", 1)
    mean, error = mean_and_error(samples)
    uniform = 1.0 / tokens
    verdicts = [compare(m, e, uniform, margin) for m, e in zip(mean, error)]
    blocks = len(mean)
    kinds = [(verdicts.count(1), "above uniform"),
             (verdicts.count(0), "not distinguishable from uniform"),
             (verdicts.count(-1), "below uniform")]
    verdict = ", ".join(f"{_count(n, blocks, 'block')} {kind}" for n, kind in kinds if n)
    top = int(np.argmax(mean))
    return (f"{who}A token's weight on its own patch is {_values(mean, digits=3)} in blocks 1 "
            f"to {blocks} (mean over {len(samples)} {over}), against {uniform:.3f} for uniform "
            f"attention (1/{tokens}): {verdict} by more than {margin:g} standard errors. The "
            f"largest, block {top + 1}'s, is {mean[top] / uniform:.2f} times uniform, "
            f"{mean[top]:.1%} of its row.")


def central_mask(rows: int, cols: int) -> np.ndarray:
    """(rows * cols,) booleans in row-major order: the tokens of the middle half of each side
    (rows ``rows // 4`` to ``rows - rows // 4``, the same for columns), the rest the border."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    return ((r >= rows // 4) & (r < rows - rows // 4)
            & (c >= cols // 4) & (c < cols - cols // 4))


def pooling_reading(weights, rows: int, cols: int, *, margin: float = 2.0) -> str:
    """What sequence-pooling weights over a ``rows`` x ``cols`` token grid show.

    ``weights``: (images, tokens), each row summing to 1. The effective number
    of tokens of an image is the exponential of its weights' entropy (``n`` for
    a plain average, 1 when one token takes everything); the centre is
    ``central_mask``'s middle half of each side. The weight on the centre is
    called more (less) than a plain average gives it when its mean over the
    images differs from the centre's share of the tokens by more than
    ``margin`` standard errors.
    """
    _check_margin(margin)
    weights = np.asarray(weights, dtype="float64")
    n = rows * cols
    if weights.ndim != 2 or weights.shape[1] != n or not len(weights):
        raise ValueError(f"weights must be (images, {n}), got shape {weights.shape}")
    entropy = -(weights * np.log(np.maximum(weights, 1e-30))).sum(axis=1)
    effective, effective_error = mean_and_error(np.exp(entropy))
    centre = central_mask(rows, cols)
    share = centre.mean()
    on_centre, centre_error = mean_and_error(weights[:, centre].sum(axis=1))
    peak, _ = mean_and_error(weights.max(axis=1) * n)
    where = {1: "more of its weight on the centre than a plain average would",
             -1: "more of its weight on the border than a plain average would",
             0: "no preference for the centre or the border beyond "
                f"{margin:g} standard errors"}[compare(on_centre, centre_error, share, margin)]
    images = len(weights)
    return (f"Over {images} test images the pooling averages over {effective:.1f} ± "
            f"{effective_error:.1f} effective tokens (the exponential of the weights' entropy; "
            f"mean ± standard error) of the {n} a plain average would use equally, "
            f"{effective / n:.0%} of them; an image's largest weight is on average "
            f"{peak:.1f} times the uniform 1/{n}. The central {int(centre.sum())} tokens "
            f"(the middle half of each side of the {rows}×{cols} grid, {share:.0%} of the "
            f"tokens) receive {on_centre:.1%} ± {centre_error:.1%} of the weight: {where}.")


def fourier_band_reading(grid_size: int, frequency: float) -> str:
    """What the Fourier band ``frequency`` looks like on a grid of ``grid_size`` positions.

    The Perceiver notebook's features are sin(pi f x) and cos(pi f x) at the
    positions x = -1 ... 1 of the grid, ``grid_size`` of them evenly spaced, so
    the grid's Nyquist frequency (a wave that changes sign from each position to
    the next) is f = (grid_size - 1) / 2. The sentence says, from the sampled
    values, how often the band changes sign between neighbouring positions and
    how its size varies across the grid.
    """
    if grid_size < 2:
        raise ValueError(f"grid_size must be at least 2, got {grid_size!r}")
    if not frequency > 0:
        raise ValueError(f"frequency must be positive, got {frequency!r}")
    x = np.linspace(-1.0, 1.0, grid_size)
    waves = np.stack([np.sin(np.pi * frequency * x), np.cos(np.pi * frequency * x)])
    # Sign changes between neighbouring positions, over the sine and the cosine,
    # leaving out the pairs where either value is zero (no sign to change).
    nonzero = np.abs(waves) > 1e-9
    counted = nonzero[:, :-1] & nonzero[:, 1:]
    pairs = int(counted.sum())
    flips = int((((waves[:, :-1] * waves[:, 1:]) < 0) & counted).sum())
    nyquist = (grid_size - 1) / 2
    if flips == pairs:
        sign = "changes sign from every patch to the next wherever it is not zero"
    elif flips == 0:
        sign = "keeps its sign from one patch to the next"
    else:
        sign = (f"changes sign between {flips / pairs:.0%} of the pairs of neighbouring "
                f"patches")
    small, large = float(np.abs(waves).min()), float(np.abs(waves).max())
    text = (f"On this {grid_size}-position grid (x from -1 to 1 in steps of "
            f"{2 / (grid_size - 1):.3g}) the highest band, f = {frequency:.3g}, {sign}. ")
    if frequency > nyquist:
        text += (f"The grid's Nyquist frequency, (μ − 1)/2 = {nyquist:.3g}, is below it, "
                 f"so the samples drift out of step with the wave: in its panels the "
                 f"pattern's strength swells and fades across the grid (magnitudes from "
                 f"{small:.2f} to {large:.2f}) instead of alternating evenly.")
    elif frequency == nyquist:
        text += "That is the grid's Nyquist frequency, the finest pattern the grid can hold."
    else:
        text += (f"The grid's Nyquist frequency, (μ − 1)/2 = {nyquist:.3g}, is above it: the "
                 f"band completes {frequency:.3g} "
                 f"{'period' if frequency == 1 else 'periods'} across the image.")
    return text
