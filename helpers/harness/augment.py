"""Input pipelines as Keras layers, so they live inside the model.

Inside the model, preprocessing runs on the accelerator, is saved with the
model, and works the same on TensorFlow, JAX and PyTorch. Random layers act
only when ``training=True``; at inference the pipeline is deterministic.

The five notebooks differ only in their choice of steps:

* ViT, SPT+LSA: normalize (adapted), resize, flip, rotate, zoom;
* Perceiver: normalize, resize, flip, zoom;
* CCT: rescale, pad-and-crop, flip;
* ShiftViT: rescale, resize, random crop, flip.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops


def augmentation_pipeline(
    x_train: np.ndarray | None = None,
    *,
    image_size: int | None = None,
    normalize: str = "adapt",
    pad: int = 0,
    crop_size: int | None = None,
    flip: str | None = "horizontal",
    rotation: float = 0.0,
    zoom: float = 0.0,
    seed: int | None = None,
    name: str = "augmentation",
) -> keras.Sequential:
    """Build a ``keras.Sequential`` of preprocessing and random augmentation.

    Args:
        x_train: training images; required when ``normalize="adapt"`` (the
            per-channel mean and variance are computed on them).
        image_size: resize to ``image_size x image_size`` (None: keep size).
        normalize: ``"adapt"`` (standardize with training-set statistics),
            ``"rescale"`` (divide by 255) or ``"none"``.
        pad: zero padding added on each side before a random crop back to
            the (resized) size: the classic CIFAR "pad 4, crop 32"
            (``RandomPadCrop``).
        crop_size: random crop to ``crop_size x crop_size`` after resizing
            (at inference: the centre crop; ``RandomPadCrop``).
        flip: ``"horizontal"``, ``"vertical"``, ``"horizontal_and_vertical"`` or None.
        rotation: maximum rotation as a fraction of a full turn (0: off).
        zoom: maximum zoom in or out as a fraction of the size (0: off).
        seed: seed of the random layers.
    """
    if normalize not in ("adapt", "rescale", "none"):
        raise ValueError(f"normalize must be 'adapt', 'rescale' or 'none', got {normalize!r}")
    if pad and crop_size:
        raise ValueError("use either pad (pad then crop back) or crop_size, not both")

    steps = []
    if normalize == "adapt":
        if x_train is None:
            raise ValueError("normalize='adapt' needs the training images x_train")
        normalization = layers.Normalization(name="normalization")
        normalization.adapt(np.asarray(x_train, dtype="float32"))
        steps.append(normalization)
    elif normalize == "rescale":
        steps.append(layers.Rescaling(1.0 / 255, name="rescaling"))

    if image_size is not None:
        steps.append(layers.Resizing(image_size, image_size, name="resizing"))
    if pad:
        steps.append(RandomPadCrop(pad=pad, seed=seed, name="random_pad_crop"))
    if crop_size:
        steps.append(RandomPadCrop(size=crop_size, seed=seed, name="random_crop"))
    if flip:
        steps.append(layers.RandomFlip(flip, seed=seed, name="random_flip"))
    if rotation or zoom:
        steps.append(RandomRotationZoom(rotation, zoom, seed=seed, name="random_rotation_zoom"))
    return keras.Sequential(steps, name=name)


def _reflect(index, size):
    """Fold integer pixel indices into ``[0, size)`` by half-sample reflection.

    The pattern ``d c b a | a b c d | d c b a``: the image is mirrored about its
    outer edges, as ``fill_mode="reflect"`` of Keras's image layers and SciPy's
    ``mode="reflect"`` extend it.
    """
    period = 2 * size
    index = ops.mod(index, period)  # floor modulo: non-negative on every backend
    return ops.where(index >= size, period - 1 - index, index)


def affine_sample(images, matrices):
    """Resample ``images`` through per-image affine maps, bilinearly, with reflection.

    ``images`` is ``(batch, height, width, channels)``; ``matrices`` is
    ``(batch, 3, 3)`` and maps an output pixel's ``(x, y, 1)`` (column, row) to
    the input position it reads. Each output pixel blends the four input
    pixels around that position; neighbours outside the image come from its
    reflection (``_reflect``). The same four gathers on every backend, so the
    three backends compute the same image (``keras.ops.image.affine_transform``
    differs between them at the borders, and on JAX interpolates in three
    dimensions, channels included, at eight times the gathers).
    """
    batch, height, width, channels = (ops.shape(images)[0], *images.shape[1:])
    rows, cols = ops.meshgrid(ops.arange(height, dtype="float32"),
                              ops.arange(width, dtype="float32"), indexing="ij")
    grid = ops.stack([ops.reshape(cols, (-1,)), ops.reshape(rows, (-1,)),
                      ops.ones((height * width,), "float32")])  # (3, pixels)
    source = ops.einsum("bij,jp->bip", ops.cast(matrices, "float32"), grid)
    x, y = source[:, 0], source[:, 1]  # (batch, pixels)
    x0, y0 = ops.floor(x), ops.floor(y)
    wx, wy = x - x0, y - y0
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    xs = [_reflect(x0, width), _reflect(x0 + 1, width)]
    ys = [_reflect(y0, height), _reflect(y0 + 1, height)]
    # One gather of the four neighbours of every pixel: (batch, 4 * pixels, channels).
    index = ops.concatenate([ys[i] * width + xs[j] for i in (0, 1) for j in (0, 1)], axis=1)
    flat = ops.reshape(images, (batch, height * width, channels))
    corners = ops.take_along_axis(flat, index[:, :, None], axis=1)
    corners = ops.reshape(corners, (batch, 4, height * width, channels))
    wx, wy = ops.cast(wx, images.dtype)[:, :, None], ops.cast(wy, images.dtype)[:, :, None]
    top = corners[:, 0] * (1 - wx) + corners[:, 1] * wx
    bottom = corners[:, 2] * (1 - wx) + corners[:, 3] * wx
    out = top * (1 - wy) + bottom * wy
    return ops.reshape(out, (batch, height, width, channels))


@keras.saving.register_keras_serializable(package="helpers")
class RandomRotationZoom(layers.Layer):
    """Random rotation about the centre, then random zoom, in one resampling.

    The transformations are those of ``keras.layers.RandomRotation(rotation)``
    followed by ``keras.layers.RandomZoom(zoom, zoom)``: an angle uniform in
    ``+-rotation`` of a full turn, then independent horizontal and vertical
    scales uniform in ``[1 - zoom, 1 + zoom]`` (above 1 zooms out), both about
    the image centre, with reflected borders and bilinear interpolation. The
    two maps are composed and the image is interpolated once instead of twice
    (``affine_sample``): a little less blur, and on JAX and PyTorch several
    times faster than the two Keras layers. Identity at inference.
    """

    def __init__(self, rotation=0.0, zoom=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rotation <= 0.5:
            raise ValueError(f"rotation must be a fraction of a turn in [0, 0.5], got {rotation}")
        if not 0 <= zoom < 1:
            raise ValueError(f"zoom must be in [0, 1), got {zoom}")
        self.rotation = rotation
        self.zoom = zoom
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def matrices(self, batch, height, width):
        """Random ``(batch, 3, 3)`` maps from output to input pixel positions."""
        angle = keras.random.uniform((batch,), -self.rotation, self.rotation,
                                     seed=self.seed_generator) * (2 * np.pi)
        zoom_x = keras.random.uniform((batch,), 1 - self.zoom, 1 + self.zoom,
                                      seed=self.seed_generator)
        zoom_y = keras.random.uniform((batch,), 1 - self.zoom, 1 + self.zoom,
                                      seed=self.seed_generator)
        cx, cy = (width - 1) / 2, (height - 1) / 2
        cos, sin = ops.cos(angle), ops.sin(angle)
        zero, one = ops.zeros_like(angle), ops.ones_like(angle)

        def stack(rows):
            return ops.stack([ops.stack(row, axis=-1) for row in rows], axis=-2)

        # Output -> zoomed about the centre -> rotated about the centre -> input.
        zoom = stack([[zoom_x, zero, cx * (1 - zoom_x)],
                      [zero, zoom_y, cy * (1 - zoom_y)],
                      [zero, zero, one]])
        rotate = stack([[cos, -sin, cx - cx * cos + cy * sin],
                        [sin, cos, cy - cx * sin - cy * cos],
                        [zero, zero, one]])
        return ops.matmul(rotate, zoom)

    def call(self, images, training=None):
        if not training:
            return images
        batch = ops.shape(images)[0]
        return affine_sample(images, self.matrices(batch, images.shape[1], images.shape[2]))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "zoom": self.zoom,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="helpers")
class RandomPadCrop(layers.Layer):
    """Zero-pad by ``pad`` pixels, then crop a ``size`` x ``size`` window.

    In training each image gets its own random window; at inference the
    window is the centre one. With the default ``size`` (the input's size)
    this is the CIFAR "pad 4, crop back to 32": a random shift with zeros
    shifted in, and the identity at inference. With ``pad=0`` and a smaller
    ``size`` it is a random crop that centre-crops at inference.
    (``layers.RandomCrop`` is no substitute: at inference it returns a larger
    input at its own size, so training and inference shapes differ.)
    """

    def __init__(self, pad=0, size=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.pad = pad
        self.size = size
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _window(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        out_h = self.size or height
        out_w = self.size or width
        slack_h, slack_w = height + 2 * self.pad - out_h, width + 2 * self.pad - out_w
        if slack_h < 0 or slack_w < 0:
            raise ValueError(
                f"cannot crop {out_h}x{out_w} from {height}x{width} images padded by {self.pad}"
            )
        return out_h, out_w, slack_h, slack_w

    def call(self, images, training=None):
        out_h, out_w, slack_h, slack_w = self._window(images.shape)
        if self.pad:
            pad = self.pad
            images = ops.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        if not training:
            top, left = slack_h // 2, slack_w // 2
            return images[:, top:top + out_h, left:left + out_w, :]
        batch = ops.shape(images)[0]
        top = keras.random.randint((batch, 1), 0, slack_h + 1, seed=self.seed_generator,
                                   dtype="int32")
        left = keras.random.randint((batch, 1), 0, slack_w + 1, seed=self.seed_generator,
                                    dtype="int32")
        rows = top + ops.arange(out_h, dtype="int32")[None, :]  # (batch, out_h)
        cols = left + ops.arange(out_w, dtype="int32")[None, :]  # (batch, out_w)
        picked = ops.take_along_axis(images, rows[:, :, None, None], axis=1)
        return ops.take_along_axis(picked, cols[:, None, :, None], axis=2)

    def compute_output_shape(self, input_shape):
        out_h, out_w, _, _ = self._window(input_shape)
        return (input_shape[0], out_h, out_w, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "pad": self.pad, "size": self.size, "seed": self.seed}
