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


def _bilinear_reflect_reference(images, matrices):
    """A loop over pixels: ``affine_sample``'s definition, written plainly."""

    def fold(i, n):
        i = i % (2 * n)
        return 2 * n - 1 - i if i >= n else i

    batch, height, width, _ = images.shape
    out = np.zeros(images.shape, "float64")
    for b in range(batch):
        for r in range(height):
            for c in range(width):
                x, y, _ = matrices[b] @ np.array([c, r, 1.0])
                x0, y0 = int(np.floor(x)), int(np.floor(y))
                for dy, wy in ((0, 1 - (y - y0)), (1, y - y0)):
                    for dx, wx in ((0, 1 - (x - x0)), (1, x - x0)):
                        out[b, r, c] += wy * wx * images[b, fold(y0 + dy, height), fold(x0 + dx, width)]
    return out


def _random_matrices(rng, batch, size, spread):
    """Affine maps with shears, zooms in and out and shifts far past the border."""
    matrices = np.tile(np.eye(3), (batch, 1, 1))
    matrices[:, :2, :2] += rng.uniform(-spread, spread, (batch, 2, 2))
    matrices[:, :2, 2] = rng.uniform(-2 * size, 2 * size, (batch, 2))
    return matrices


def test_affine_sample_matches_a_pixel_loop_and_scipys_reflect_mode():
    from scipy import ndimage

    from helpers.harness.augment import affine_sample

    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (3, 7, 9, 2))
    matrices = _random_matrices(rng, 3, 9, 0.6)
    out = _np(affine_sample(images.astype("float32"), matrices.astype("float32")))
    np.testing.assert_allclose(out, _bilinear_reflect_reference(images, matrices), rtol=1e-4, atol=1e-2)
    for b in range(3):  # SciPy's order-1 spline with mode="reflect" is the same extension
        rows, cols = np.mgrid[0:7, 0:9]
        x, y, _ = np.einsum("ij,jhw->ihw", matrices[b], np.stack([cols, rows, np.ones_like(rows)]))
        for ch in range(2):
            expected = ndimage.map_coordinates(images[b, :, :, ch], [y, x], order=1, mode="reflect")
            np.testing.assert_allclose(out[b, :, :, ch], expected, rtol=1e-4, atol=1e-2)


def test_affine_sample_agrees_with_keras_affine_transform_inside_the_image():
    from helpers.harness.augment import affine_sample

    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    angle = np.array([0.3, -0.2])
    scale = np.array([0.8, 1.1])
    c = 7.5
    matrices = np.zeros((2, 3, 3))
    matrices[:, 0, 0] = matrices[:, 1, 1] = scale * np.cos(angle)
    matrices[:, 0, 1], matrices[:, 1, 0] = -scale * np.sin(angle), scale * np.sin(angle)
    matrices[:, :2, 2] = c - matrices[:, :2, :2] @ np.array([c, c])
    matrices[:, 2, 2] = 1
    ours = _np(affine_sample(images, matrices.astype("float32")))
    theirs = _np(ops.image.affine_transform(images, matrices.reshape(2, 9)[:, :8].astype("float32"),
                                            interpolation="bilinear", fill_mode="reflect"))
    # Keras's backends extend the border differently from one another; compare
    # the pixels whose four neighbours are all inside the image.
    rows, cols = np.mgrid[0:16, 0:16]
    source = np.einsum("bij,jhw->bihw", matrices, np.stack([cols, rows, np.ones_like(rows)]))
    inside = np.all((source[:, :2] >= 0) & (source[:, :2] <= 15), axis=1)
    assert inside.mean() > 0.6
    np.testing.assert_allclose(ours[inside], theirs[inside], rtol=1e-4, atol=1e-2)


def test_a_quarter_turn_about_the_centre_is_rot90():
    from helpers.harness.augment import affine_sample

    images = np.random.default_rng(5).uniform(0, 255, (1, 6, 6, 3)).astype("float32")
    c = 2.5  # a quarter turn of the pixel grid about its centre: no interpolation
    quarter = np.array([[[0, -1, 2 * c], [1, 0, 0], [0, 0, 1]]], "float32")
    out = _np(affine_sample(images, quarter))
    np.testing.assert_allclose(out[0], np.rot90(images[0], k=1, axes=(0, 1)), atol=1e-4)


def test_rotation_zoom_draws_the_keras_layers_ranges_about_the_centre():
    from helpers.harness.augment import RandomRotationZoom

    layer = RandomRotationZoom(rotation=0.02, zoom=0.2, seed=7)
    matrices = _np(layer.matrices(2000, 32, 24))
    centre = np.array([(24 - 1) / 2, (32 - 1) / 2, 1.0])
    np.testing.assert_allclose(matrices @ centre, np.tile(centre, (2000, 1)), atol=1e-4)
    linear = matrices[:, :2, :2]  # rotate(angle) @ diag(zoom_x, zoom_y)
    zoom_x, zoom_y = np.linalg.norm(linear[:, :, 0], axis=1), np.linalg.norm(linear[:, :, 1], axis=1)
    angle = np.arctan2(linear[:, 1, 0], linear[:, 0, 0])
    for values, low, high in ((zoom_x, 0.8, 1.2), (zoom_y, 0.8, 1.2),
                              (angle, -0.04 * np.pi, 0.04 * np.pi)):
        assert low - 1e-5 <= values.min() and values.max() <= high + 1e-5
        assert values.min() < low + 0.05 * (high - low) and values.max() > high - 0.05 * (high - low)
    assert abs(np.corrcoef(zoom_x, zoom_y)[0, 1]) < 0.1  # independent, as width_factor=zoom draws
    np.testing.assert_allclose(linear[:, 0, 1], -np.sin(angle) * zoom_y, atol=1e-5)


def test_rotation_zoom_is_the_identity_at_inference_and_without_range(images):
    from helpers.harness.augment import RandomRotationZoom

    x = images[:4].astype("float32")
    np.testing.assert_array_equal(_np(RandomRotationZoom(0.1, 0.3, seed=0)(x, training=False)), x)
    np.testing.assert_allclose(_np(RandomRotationZoom(0.0, 0.0, seed=0)(x, training=True)), x,
                               atol=1e-4)
    moved = _np(RandomRotationZoom(0.1, 0.3, seed=0)(x, training=True))
    assert moved.shape == x.shape and np.abs(moved - x).mean() > 1
    with pytest.raises(ValueError, match="zoom"):
        RandomRotationZoom(0.1, 1.5)
