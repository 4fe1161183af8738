# Generated from book/shiftvit.ipynb by `python -m helpers.book.export`: edit the
# notebook's `# @save` cells, not this file. Each block names the cell it came from.
"""The ShiftViT notebook's layers and model builder (Wang et al., 2022, "When Shift
Operation Meets Vision Transformer"): the ``Shift`` layer, shift block, patch merging,
the source's augmentation and ``build_shiftvit``."""

import keras
import numpy as np
from keras import layers, ops

from helpers.harness.augment import augmentation_pipeline
from helpers.papers.layers import StochasticDepth


# book/shiftvit.ipynb, cell 9 ("The shift operation")
def _zero_pad(x, axis, before, after):
    """Pad ``x`` with zeros along one axis."""
    widths = [[0, 0] for _ in x.shape]
    widths[axis] = [before, after]
    return ops.pad(x, widths)


@keras.saving.register_keras_serializable(package="helpers")
class Shift(layers.Layer):
    """ShiftViT's partial shift: four groups of channels move, one way each; no weights.

    (batch, height, width, channels) -> the same shape. With
    g = channels // num_div, channels [0, g) move left, [g, 2g) right,
    [2g, 3g) up and [3g, 4g) down by ``shift_pixel`` pixels; the pixels a group
    leaves are zero and those pushed past the border are dropped. Channels from
    4g on pass unchanged: 4/num_div of the channels move. ``shift_pixel=0`` is
    the identity (the no-shift ablation).
    """

    def __init__(self, num_div=12, shift_pixel=1, **kwargs):
        super().__init__(**kwargs)
        for name, value, smallest in (("num_div", num_div, 4), ("shift_pixel", shift_pixel, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value < smallest:
                raise ValueError(f"{name} must be >= {smallest}, got {value!r}")
        self.num_div = int(num_div)
        self.shift_pixel = int(shift_pixel)

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if channels is not None and channels < self.num_div:
            raise ValueError(
                f"num_div={self.num_div} groups need at least {self.num_div} channels, "
                f"got {channels}"
            )
        for side in (height, width):
            if side is not None and self.shift_pixel >= side:
                raise ValueError(
                    f"shift_pixel={self.shift_pixel} must be smaller than the "
                    f"{height}x{width} feature map it shifts"
                )

    def call(self, x):
        s, g = self.shift_pixel, x.shape[-1] // self.num_div
        if s == 0:
            return x
        left = _zero_pad(x[:, :, s:, 0 * g:1 * g], axis=2, before=0, after=s)
        right = _zero_pad(x[:, :, :-s, 1 * g:2 * g], axis=2, before=s, after=0)
        up = _zero_pad(x[:, s:, :, 2 * g:3 * g], axis=1, before=0, after=s)
        down = _zero_pad(x[:, :-s, :, 3 * g:4 * g], axis=1, before=s, after=0)
        return ops.concatenate([left, right, up, down, x[..., 4 * g:]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_div": self.num_div, "shift_pixel": self.shift_pixel}


# book/shiftvit.ipynb, cell 15 ("The shift block")
NORMALIZATIONS = ("layer", "group")


def normalization_layer(kind, epsilon, name):
    """The model's normalization, a learned scale and offset per channel after it.

    ``"layer"``: each pixel's channels are normalized on their own
    (``LayerNormalization``, the Keras example's). ``"group"``: each image is
    normalized over all its channels and positions together
    (``GroupNormalization`` with one group, the official code's ``GroupNorm(1)``).
    """
    if kind == "layer":
        return layers.LayerNormalization(epsilon=epsilon, name=name)
    if kind == "group":
        return layers.GroupNormalization(groups=1, epsilon=epsilon, name=name)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {kind!r}")


def shift_mlp(x, expand_ratio, dropout_rate, name):
    """Dense (expand_ratio x channels, GELU), dropout, dense back to channels, dropout."""
    channels = x.shape[-1]
    x = layers.Dense(expand_ratio * channels, activation="gelu", name=f"{name}_mlp_expand")(x)
    x = layers.Dropout(dropout_rate, name=f"{name}_mlp_dropout1")(x)
    x = layers.Dense(channels, name=f"{name}_mlp_project")(x)
    return layers.Dropout(dropout_rate, name=f"{name}_mlp_dropout2")(x)


def shift_block(x, num_div, shift_pixel, mlp_expand_ratio, mlp_dropout_rate,
                drop_path_rate, epsilon=1e-5, normalization="layer", name="shift_block"):
    """x <- Shift(x), then x + DropPath(MLP(Norm(x))), on (batch, height, width, channels).

    ``normalization`` is ``"layer"`` or ``"group"`` (``normalization_layer``).
    """
    x = Shift(num_div, shift_pixel, name=f"{name}_shift")(x)
    h = normalization_layer(normalization, epsilon, name=f"{name}_norm")(x)
    h = shift_mlp(h, mlp_expand_ratio, mlp_dropout_rate, name)
    h = StochasticDepth(drop_path_rate, name=f"{name}_drop_path")(h)
    return layers.Add(name=f"{name}_add")([x, h])


# book/shiftvit.ipynb, cell 20 ("Patch merging")
def patch_merging(x, epsilon=1e-5, normalization="layer", name="merge"):
    """Normalization (``"layer"`` or ``"group"``), then a 2x2 convolution of stride 2
    without bias: half the side (an odd side is padded first), twice the channels."""
    channels = x.shape[-1]
    x = normalization_layer(normalization, epsilon, name=f"{name}_norm")(x)
    return layers.Conv2D(2 * channels, kernel_size=2, strides=2, padding="same",
                         use_bias=False, name=f"{name}_reduction")(x)


# book/shiftvit.ipynb, cell 26 ("The whole model")
def shiftvit_augmentation(p):
    """The source's input pipeline: pixels rescaled to [0, 1], resized to
    ``p.image_size``, a random ``p.crop_size`` crop (the centre crop at inference)
    and, in training, a random horizontal flip."""
    return augmentation_pipeline(
        normalize="rescale", image_size=p.image_size, crop_size=p.crop_size,
        flip="horizontal", seed=p.seed,
    )


def build_shiftvit(p, x_train, num_classes, name="shiftvit"):
    """The ShiftViT classifier of parameters ``p``: augmentation, patch projection,
    stages of shift blocks with patch merging between them, global average pooling,
    logits. Every normalization is ``p.normalization`` (``"layer"`` or ``"group"``).

    ``x_train`` (uint8 training images) sets the input shape; the pipeline only
    rescales, so its statistics play no part.
    """
    inputs = keras.Input(shape=x_train.shape[1:])
    x = shiftvit_augmentation(p)(inputs)
    x = layers.Conv2D(p.projected_dim, kernel_size=p.patch_size, strides=p.patch_size,
                      padding="same", name="patch_projection")(x)
    stages = p.num_shift_blocks_per_stages
    depth = sum(stages)
    rates = np.linspace(0.0, p.stochastic_depth_rate, depth) if depth > 1 else [0.0]
    block = 0
    for stage, num_blocks in enumerate(stages, start=1):
        for index in range(1, num_blocks + 1):
            x = shift_block(x, p.num_div, p.shift_pixel, p.mlp_expand_ratio,
                            p.mlp_dropout_rate, float(rates[block]), p.epsilon,
                            p.normalization, name=f"stage{stage}_block{index}")
            block += 1
        if stage < len(stages):
            x = patch_merging(x, p.epsilon, p.normalization, name=f"stage{stage}_merge")
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    # float32 logits, whatever the dtype policy: the loss and the metrics read them
    logits = layers.Dense(num_classes, name="classifier", dtype="float32")(x)
    return keras.Model(inputs, logits, name=name)


# The values of the parameters cell of book/shiftvit.ipynb: the full-size recipe.
DEFAULTS = {
    'dataset': 'cifar10',
    'n_train': 0,
    'n_test': 0,
    'validation_split': 0.2,
    'image_size': 52,
    'crop_size': 48,
    'patch_size': 4,
    'projected_dim': 96,
    'num_shift_blocks_per_stages': [2, 4, 8, 2],
    'num_div': 12,
    'shift_pixel': 1,
    'mlp_expand_ratio': 2,
    'mlp_dropout_rate': 0.2,
    'stochastic_depth_rate': 0.2,
    'normalization': 'layer',
    'epsilon': 1e-05,
    'learning_rate': 0.001,
    'weight_decay': 0.0001,
    'weight_decay_mode': 'per_step',
    'lr_schedule': 'cosine',
    'warmup_fraction': 0.15,
    'epochs': 100,
    'batch_size': 256,
    'early_stopping_patience': 5,
    'seed': 42,
    'data_parallel': False,
    'precision': 'float32',
    'results_dir': 'results',
}
