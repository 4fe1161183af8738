"""helpers.harness.readings: the sentences under the figures follow the numbers."""

import numpy as np
import pytest

from helpers.harness.readings import attention_distance_reading, temperature_reading

pytestmark = pytest.mark.keras_free  # see conftest.py


from helpers.harness.readings import (compare, mean_and_error, pooling_reading,
                                      self_weight_reading, temperature_reading_over_seeds,
                                      uniform_attention_distance)


def images_with(means, spread):
    """(4, *means.shape) values whose mean is ``means`` and whose standard error is
    ``spread``: the four images sit at mean -/+ s, -/+ s with s = spread * 2 / sqrt(4/3)
    (sample std of (-s, s, -s, s) is s * sqrt(4/3), over sqrt(4) images)."""
    means = np.asarray(means, dtype="float64")
    s = spread * 2 / np.sqrt(4 / 3)
    return np.stack([means - s, means + s, means - s, means + s])


def test_mean_and_error_is_the_sample_standard_error():
    mean, error = mean_and_error([1.0, 2.0, 3.0, 6.0])
    # mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14/3, error sqrt(14/3) / 2
    assert mean == 3.0 and error == pytest.approx(np.sqrt(14 / 3) / 2)
    assert mean_and_error([5.0])[1] == 0.0


@pytest.mark.parametrize("mean, error, verdict", [
    (9.0, 0.4, -1),   # 1.0 below: more than 2 x 0.4
    (9.0, 0.5, 0),    # 1.0 below: exactly 2 x 0.5 is not beyond the margin
    (11.5, 0.2, 1),
    (9.0, 0.0, 0),    # one sample: no spread, nothing called
])
def test_a_difference_is_called_only_beyond_two_standard_errors(mean, error, verdict):
    assert compare(mean, error, 10.0) == verdict


def test_heads_are_local_or_far_only_beyond_two_standard_errors_over_the_images():
    # uniform 10 px; block 1: 4 +- 0.5 (local), 9.5 +- 0.5 (within 2 SE: no effect),
    # 10.9 +- 0.3 (far); block 2 (the last): all within the margin.
    distances = images_with([[4.0, 9.5, 10.9], [10.0, 9.2, 10.5]], spread=np.array(
        [[0.5, 0.5, 0.3], [0.1, 0.5, 0.3]]))
    text = attention_distance_reading(distances, 10.0, model="ViT")
    assert text.startswith("**ViT.** Uniform attention would reach 10.0 px. ")
    assert "over 4 images" in text
    assert ("In block 1 the heads attend at 4.0 ± 0.50, 9.5 ± 0.50, 10.9 ± 0.30 px: 1 of 3 heads "
            "local (closer than uniform), 1 of 3 heads not distinguishable from uniform "
            "attention at this budget, 1 of 3 heads farther than uniform.") in text
    assert ("In block 2, the last, the heads attend at 10.0 ± 0.10, 9.2 ± 0.50, 10.5 ± 0.30 px: "
            "all 3 heads not distinguishable from uniform attention at this budget.") in text


def test_a_head_far_from_uniform_in_its_mean_but_noisy_over_images_is_not_called_local():
    # 3 px below uniform, but a standard error of 2 px: 3 < 2 x 2.
    text = attention_distance_reading(images_with([[7.0, 7.0]], 2.0), 10.0)
    assert "both heads not distinguishable from uniform attention at this budget" in text
    assert "local (closer" not in text
    # The same means with a small spread are local.
    assert "both heads local" in attention_distance_reading(images_with([[7.0, 7.0]], 0.5), 10.0)


def test_several_seeds_decide_on_the_spread_of_the_seeds_not_of_the_images():
    # Two seeds, each with tight images, but their means differ widely: 8 and 12.
    seed_a, seed_b = images_with([[8.0]], 0.01), images_with([[12.0]], 0.01)
    text = attention_distance_reading(np.stack([seed_a, seed_b]), 10.0)
    assert "over 2 seeds" in text and "not distinguishable from uniform" in text


@pytest.mark.parametrize("distances, uniform, message", [
    (np.ones(4), 10.0, "distances must be"),
    (np.ones((3, 2, 2)), 0.0, "uniform must be a positive distance, got 0.0"),
])
def test_bad_distance_inputs_are_refused(distances, uniform, message):
    with pytest.raises(ValueError, match=message):
        attention_distance_reading(distances, uniform)


def test_uniform_attention_distance_on_a_two_by_two_grid():
    # Each query: distances 0, 1, 1 and sqrt(2) patches. Plain: mean over the 4 keys;
    # masked diagonal (LSA): over the 3 others, 1/(n - 1) each.
    plain = (0 + 1 + 1 + np.sqrt(2)) / 4
    masked = (1 + 1 + np.sqrt(2)) / 3
    assert uniform_attention_distance(2, 5) == pytest.approx(5 * plain)
    assert uniform_attention_distance(2, 5, masked_diagonal=True) == pytest.approx(5 * masked)
    # The masked baseline is the plain one times n / (n - 1) on any grid.
    assert uniform_attention_distance(6, 4, masked_diagonal=True) == pytest.approx(
        uniform_attention_distance(6, 4) * 36 / 35)


def test_temperature_reading_splits_the_change_into_decay_and_learned_parts():
    # start 8, decay alone 6.71, ended 6.55: -1.45 change, -0.16 learned (11%).
    text = temperature_reading([6.55], 8.0, 6.71, steps=1760)
    assert text.startswith("Weight decay alone would take the temperature from 8.000 to 6.710 "
                           "over 1,760 steps (-1.290).")
    assert "ended at 6.550 (one block)" in text
    assert "the learned part, the end against the decay-only value, is -0.160 of a -1.450 " \
           "change (11%)" in text
    # One seed: no direction is claimed.
    assert "no direction is claimed at this budget" in text and "learned sharper" not in text


def test_a_temperature_above_the_decay_only_value_learned_against_the_decay():
    text = temperature_reading([[7.0, 7.2]], 8.0, 6.5)  # heads averaged: 7.1
    assert "head-averaged temperatures ended at 7.100" in text
    assert "+0.600 of a -0.900 change (against it)" in text


def test_temperatures_exempt_from_decay_are_read_against_their_start():
    text = temperature_reading([8.0, 7.5], 8.0, 8.0)
    assert text.startswith("The temperatures were exempt from weight decay")
    assert "+0.000 of no net change; -0.500 of a -0.500 change (100%)" in text


def test_over_seeds_a_learned_drop_is_called_only_beyond_two_standard_errors():
    # block 1: ends 6.50, 6.45, 6.55 (mean 6.50, SE 0.029): 0.21 below 6.71, sharper;
    # block 2: ends 6.60, 6.90, 6.75 (mean 6.75, SE 0.087): 0.04 above, within 2 SE.
    learned = [[6.50, 6.60], [6.45, 6.90], [6.55, 6.75]]
    text = temperature_reading_over_seeds(learned, 8.0, 6.71)
    assert "mean ± standard error over 3 seeds" in text
    assert ("1 of 2 blocks learned sharper attention (below the decay-only value), 1 of 2 "
            "blocks no learned change beyond 2 standard errors over the seeds.") in text


def test_bad_temperature_inputs_are_refused():
    with pytest.raises(ValueError, match="start must be a positive temperature"):
        temperature_reading([1.0], 0, 0)
    with pytest.raises(ValueError, match="one entry per block"):
        temperature_reading([], 1.0, 1.0)
    with pytest.raises(ValueError, match="margin must be a positive"):
        temperature_reading([1.0], 1.0, 1.0, margin=0)


def test_self_weight_is_compared_with_one_over_the_token_count():
    # 64 tokens: uniform 1/64 = 0.015625. Block 1 at 0.025 +- 0.001: above;
    # block 2 at 0.017 +- 0.001: within 2 SE; block 3 at 0.010 +- 0.001: below.
    weights = images_with([0.025, 0.017, 0.010], 0.001)
    text = self_weight_reading(weights, 64, model="ViT")
    assert text.startswith("**ViT.** A token's weight on its own patch is 0.025, 0.017 and "
                           "0.010 in blocks 1 to 3 (mean over 4 images), against 0.016 for "
                           "uniform attention (1/64): 1 of 3 blocks above uniform, 1 of 3 "
                           "blocks not distinguishable from uniform, 1 of 3 blocks below "
                           "uniform by more than 2 standard errors.")
    assert "The largest, block 1's, is 1.60 times uniform, 2.5% of its row." in text


def test_a_masked_diagonal_has_no_self_weight_to_read():
    assert self_weight_reading(np.zeros((4, 2)), 64, masked=True) == (
        "Its diagonal is masked: a token gives its own patch a weight of exactly 0.")


def test_pooling_weights_give_effective_tokens_and_where_the_weight_sits():
    # A 4x4 grid: its centre is the middle 2x2 (tokens 5, 6, 9, 10), 25% of the tokens.
    uniform = np.full((2, 16), 1 / 16)
    text = pooling_reading(uniform, 4, 4)
    # Identical images: no spread, no preference called; 16 effective tokens, 100%.
    assert "16.0 ± 0.0 effective tokens" in text and "100% of them" in text
    assert "The central 4 tokens" in text and "25.0% ± 0.0% of the weight" in text
    assert "no preference for the centre or the border" in text
    # Half the weight on the centre token 5 in each image, the rest spread evenly:
    # exp(entropy) = exp(-(0.5 ln 0.5 + 15 (0.5/15) ln(0.5/15))), centre 0.5 + 3 * 0.5/15.
    centred = np.full((3, 16), 0.5 / 15)
    centred[:, 5] = 0.5
    centred[1] += np.where(np.arange(16) == 5, -0.01, 0.01 / 15)  # a little spread
    entropy = -(centred * np.log(centred)).sum(axis=1)
    expected = np.exp(entropy).mean()
    text = pooling_reading(centred, 4, 4)
    assert f"{expected:.1f} ± " in text
    assert "more of its weight on the centre than a plain average would" in text
    # The same weight on a corner token: on the border.
    cornered = np.roll(centred, -5, axis=1)  # token 5 -> token 0
    assert "more of its weight on the border" in pooling_reading(cornered, 4, 4)


def test_bad_pooling_weights_are_refused():
    with pytest.raises(ValueError, match="weights must be \\(images, 16\\)"):
        pooling_reading(np.ones((2, 15)) / 15, 4, 4)


def test_a_band_at_the_grids_nyquist_frequency_alternates_patch_to_patch():
    from helpers.harness.readings import fourier_band_reading

    text = fourier_band_reading(16, 7.5)  # (16 - 1) / 2
    assert "changes sign from every patch to the next wherever it is not zero" in text
    assert "That is the grid's Nyquist frequency" in text


def test_the_perceivers_highest_band_is_above_nyquist_and_beats():
    """f = grid / 2 (the notebook's highest band) is half a unit above (grid - 1) / 2:
    on 16 positions the cosine keeps its sign once, in the middle, and fades there."""
    from helpers.harness.readings import fourier_band_reading

    x = np.linspace(-1, 1, 16)
    cosine = np.cos(np.pi * 8 * x)
    assert ((cosine[:-1] * cosine[1:]) > 0).sum() == 1 and np.abs(cosine).min() < 0.11
    text = fourier_band_reading(16, 8.0)
    assert "changes sign between 96% of the pairs of neighbouring patches" in text
    assert "Nyquist frequency, (μ − 1)/2 = 7.5, is below it" in text
    assert "swells and fades" in text


def test_a_low_band_is_described_by_its_periods():
    from helpers.harness.readings import fourier_band_reading

    text = fourier_band_reading(16, 1.0)
    assert "is above it: the band completes 1 period across the image." in text
    with pytest.raises(ValueError):
        fourier_band_reading(1, 1.0)
