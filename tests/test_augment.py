import numpy as np
import pytest
from keras import ops

from helpers.harness.augment import augmentation_pipeline


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)


def _np(x):
    return ops.convert_to_numpy(x)


def test_resize_gives_the_requested_size_in_training_and_inference(images):
    pipeline = augmentation_pipeline(images, image_size=72, rotation=0.02, zoom=0.2, seed=1)
    for training in (True, False):
        out = pipeline(images[:4].astype("float32"), training=training)
        assert tuple(out.shape) == (4, 72, 72, 3)


def test_adapted_normalization_standardizes_each_channel(images):
    pipeline = augmentation_pipeline(images, normalize="adapt", flip=None)
    out = _np(pipeline(images.astype("float32"), training=False))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-3)


def test_rescale_divides_by_255(images):
    pipeline = augmentation_pipeline(normalize="rescale", flip=None)
    out = _np(pipeline(images.astype("float32"), training=False))
    np.testing.assert_allclose(out, images / 255.0, atol=1e-6)


def test_inference_is_deterministic_and_training_is_random(images):
    pipeline = augmentation_pipeline(images, image_size=40, rotation=0.1, zoom=0.2, seed=3)
    x = images[:8].astype("float32")
    a, b = _np(pipeline(x, training=False)), _np(pipeline(x, training=False))
    np.testing.assert_array_equal(a, b)
    augmented = _np(pipeline(x, training=True))
    assert np.abs(augmented - a).mean() > 0.05


def test_pad_and_crop_is_a_shift_in_training_and_the_identity_at_inference(images):
    pipeline = augmentation_pipeline(images, normalize="none", pad=4, flip=None, seed=0)
    x = images[:6].astype("float32")
    np.testing.assert_array_equal(_np(pipeline(x, training=False)), x)
    out = _np(pipeline(x, training=True))
    assert out.shape == x.shape
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = [(dy, dx) for dy in range(9) for dx in range(9)]
    # Every output is one 32x32 window of the zero-padded image.
    for i in range(len(x)):
        assert any(np.array_equal(out[i], padded[i, dy:dy + 32, dx:dx + 32]) for dy, dx in offsets)


def test_adapt_without_training_images_is_an_error():
    with pytest.raises(ValueError, match="needs the training images"):
        augmentation_pipeline(normalize="adapt")
    with pytest.raises(ValueError, match="normalize must be"):
        augmentation_pipeline(normalize="standard")


def test_crop_size_is_a_random_window_in_training_and_the_centre_at_inference(images):
    pipeline = augmentation_pipeline(normalize="none", crop_size=24, flip=None, seed=0)
    x = images[:6].astype("float32")
    np.testing.assert_array_equal(_np(pipeline(x, training=False)), x[:, 4:28, 4:28])
    out = _np(pipeline(x, training=True))
    assert out.shape == (6, 24, 24, 3)
    for i in range(len(x)):
        assert any(np.array_equal(out[i], x[i, dy:dy + 24, dx:dx + 24])
                   for dy in range(9) for dx in range(9))
    assert pipeline.compute_output_shape((None, 32, 32, 3)) == (None, 24, 24, 3)
