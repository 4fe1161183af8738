"""helpers.harness.readings: the sentences under the figures follow the numbers."""

import numpy as np
import pytest

from helpers.harness.readings import attention_distance_reading, temperature_reading

pytestmark = pytest.mark.keras_free  # see conftest.py


def test_heads_are_called_local_spread_or_far_against_uniform_attention():
    # uniform 10 px, tolerance 10%: below 9 px is local, above 11 px far
    distances = np.array([[4.0, 8.9, 9.5, 11.5], [0, 0, 0, 0], [10.0, 10.5, 9.2, 10.9]])
    text = attention_distance_reading(distances, 10.0, model="ViT")
    assert text.startswith("**ViT.** Uniform attention would reach 10.0 px. ")
    assert ("In block 1 the heads attend at 4.0, 8.9, 9.5 and 11.5 px: 2 of 4 heads local "
            "(closer than 9.0 px), 1 of 4 heads spread about as widely as uniform attention, "
            "1 of 4 heads far (beyond 11.0 px).") in text
    assert ("In block 3, the last, the heads attend at 10.0, 10.5, 9.2 and 10.9 px: all 4 "
            "heads spread about as widely as uniform attention.") in text
    assert "block 2" not in text  # the first and the last block only
    assert "local" not in text.split("In block 3")[1]


def test_one_block_and_two_heads_read_naturally():
    text = attention_distance_reading([[3.0, 4.0]], 10.0)
    assert text == ("Uniform attention would reach 10.0 px. In block 1 the heads attend at "
                    "3.0 and 4.0 px: both heads local (closer than 9.0 px).")
    wider = attention_distance_reading([[3.0, 4.0]], 10.0, tolerance=0.8)
    assert "both heads spread about as widely as uniform attention" in wider


@pytest.mark.parametrize("distances, uniform, message", [
    (np.ones(4), 10.0, "distances must be \\(blocks, heads\\), got shape \\(4,\\)"),
    (np.ones((2, 2)), 0.0, "uniform must be a positive distance, got 0.0"),
])
def test_bad_distance_inputs_are_refused(distances, uniform, message):
    with pytest.raises(ValueError, match=message):
        attention_distance_reading(distances, uniform)


def test_temperatures_below_the_start_are_sharper_and_above_flatter():
    text = temperature_reading([2.0, 2.81, 3.5], 2.828)
    assert text == (
        "The learned temperatures ended at 2.000, 2.810 and 3.500 (blocks 1 to 3) from a "
        "start of 2.828, changes of -29.3%, -0.6%, +23.8%: 1 of 3 blocks sharper than plain "
        "attention (temperature below the start), 1 of 3 blocks within 2% of the start, "
        "1 of 3 blocks flatter than plain attention (temperature above the start).")


def test_temperatures_per_head_are_averaged_per_block():
    text = temperature_reading([[1.0, 2.0], [2.0, 2.0]], 2.0)
    assert text.startswith("The learned head-averaged temperatures ended at 1.500 and 2.000 ")
    assert "1 of 2 blocks sharper" in text and "1 of 2 blocks within 2% of the start" in text
    one = temperature_reading([1.0], 2.0)
    assert "(one block)" in one and "a change of -50.0%: the block sharper" in one


def test_bad_temperature_inputs_are_refused():
    with pytest.raises(ValueError, match="start must be a positive temperature"):
        temperature_reading([1.0], 0)
    with pytest.raises(ValueError, match="one entry per block"):
        temperature_reading([], 1.0)


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
