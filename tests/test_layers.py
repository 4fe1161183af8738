"""helpers.papers.layers: shared layers behave as documented, on the active backend."""

import keras
import numpy as np
import pytest
from keras import ops

from helpers.harness.augment import RandomPadCrop
from helpers.papers.layers import StochasticDepth


def test_stochastic_depth_is_the_identity_at_inference():
    x = np.random.default_rng(0).normal(size=(8, 5, 3)).astype("float32")
    out = ops.convert_to_numpy(StochasticDepth(0.5, seed=1)(x, training=False))
    np.testing.assert_array_equal(out, x)


def test_stochastic_depth_keeps_whole_images_with_probability_one_minus_rate():
    rate, batch = 0.3, 20000
    x = np.ones((batch, 4, 2), dtype="float32")
    out = ops.convert_to_numpy(StochasticDepth(rate, seed=3)(x, training=True))
    per_image = out.reshape(batch, -1)
    # An image's branch is either all dropped or all kept and scaled by 1/(1-rate).
    kept = per_image[:, 0] != 0
    np.testing.assert_allclose(per_image[kept], 1 / (1 - rate), rtol=1e-6)
    np.testing.assert_array_equal(per_image[~kept], 0)
    # Binomial(20000, 0.7): standard deviation of the kept fraction is 0.0032.
    assert abs(kept.mean() - (1 - rate)) < 0.015
    assert abs(per_image.mean() - 1.0) < 0.03  # the expectation is unchanged


def test_stochastic_depth_rejects_a_rate_outside_zero_one():
    with pytest.raises(ValueError, match="rate must be in"):
        StochasticDepth(1.0)


def test_shared_layers_round_trip_through_a_keras_file(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = RandomPadCrop(pad=2, seed=0)(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.Add()([x, StochasticDepth(0.2, seed=0)(x)])
    model = keras.Model(inputs, x)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(images, training=False)),
        ops.convert_to_numpy(model(images, training=False)),
        atol=1e-6,
    )
    assert loaded.layers[-2].rate == 0.2
