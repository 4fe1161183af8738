"""Sentences that say what one run's figures show, written from the run's numbers.

A page's prose explains what a figure measures and what the papers found with
it; whether this run's model shows the same (local heads, sharper attention)
depends on the run. These functions turn the values a figure plots into the
sentence printed under it, so the words change with the run instead of being
written in advance. Thresholds are parameters with the defaults stated in each
sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def attention_distance_reading(distances, uniform: float, *, model: str = "",
                               tolerance: float = 0.1) -> str:
    """What a mean-attention-distance figure shows for the first and last blocks.

    ``distances``: (blocks, heads) attention-weighted distance in pixels between
    a query patch and the patches it attends to; ``uniform``: the same distance
    for uniform attention over every patch. A head is *local* when it attends
    closer than ``1 - tolerance`` times ``uniform``, *far* when beyond
    ``1 + tolerance`` times it, and otherwise about as spread as uniform
    attention.
    """
    distances = np.asarray(distances, dtype="float64")
    if distances.ndim != 2 or not distances.size:
        raise ValueError(f"distances must be (blocks, heads), got shape {distances.shape}")
    if not uniform > 0:
        raise ValueError(f"uniform must be a positive distance, got {uniform!r}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    blocks, heads = distances.shape
    low, high = (1 - tolerance) * uniform, (1 + tolerance) * uniform
    parts = []
    for block in sorted({0, blocks - 1}):
        row = distances[block]
        local, far = int((row < low).sum()), int((row > high).sum())
        spread = heads - local - far
        kinds = [(local, f"local (closer than {low:.1f} px)"),
                 (spread, "spread about as widely as uniform attention"),
                 (far, f"far (beyond {high:.1f} px)")]
        verdict = ", ".join(f"{_count(n, heads, 'head')} {kind}" for n, kind in kinds if n)
        where = "block 1" if block == 0 else f"block {block + 1}, the last,"
        parts.append(f"In {where} the heads attend at {_values(row, 'px')}: {verdict}.")
    who = f"**{model}.** " if model else ""
    return f"{who}Uniform attention would reach {uniform:.1f} px. " + " ".join(parts)


def temperature_reading(temperatures: Sequence, start: float, *,
                        tolerance: float = 0.02) -> str:
    """Where the learned LSA temperatures ended, against their start ``start``.

    ``temperatures``: one entry per block, a number or one number per head. A
    block whose (head-averaged) temperature ends more than ``tolerance`` of
    ``start`` below it divides the scores by less than plain attention would:
    sharper attention; above it, flatter.
    """
    if not start > 0:
        raise ValueError(f"start must be a positive temperature, got {start!r}")
    if not len(temperatures):
        raise ValueError("temperatures must have one entry per block")
    means = [float(np.mean(t)) for t in temperatures]
    changes = [(mean - start) / start for mean in means]
    per_head = any(np.ndim(t) for t in temperatures)
    sharper = sum(change < -tolerance for change in changes)
    flatter = sum(change > tolerance for change in changes)
    kept = len(means) - sharper - flatter
    moves = ", ".join(f"{100 * change:+.1f}%" for change in changes)
    kinds = [(sharper, "sharper than plain attention (temperature below the start)"),
             (kept, f"within {tolerance:.0%} of the start"),
             (flatter, "flatter than plain attention (temperature above the start)")]
    verdict = ", ".join(f"{_count(n, len(means), 'block')} {kind}" for n, kind in kinds if n)
    mean_of = "head-averaged temperatures" if per_head else "temperatures"
    blocks = "one block" if len(means) == 1 else f"blocks 1 to {len(means)}"
    return (f"The learned {mean_of} ended at {_values(means, digits=3)} ({blocks}) from "
            f"a start of {start:.3f}, {'a change' if len(means) == 1 else 'changes'} of {moves}: "
            f"{verdict}.")


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
