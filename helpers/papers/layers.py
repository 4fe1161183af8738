"""Layers shared by several notebooks that are not what their papers are about.

* ``StochasticDepth`` (drop path, Huang et al. 2016): the CCT and ShiftViT
  notebooks drop whole residual branches per image during training.

Every layer is registered for ``.keras`` saving under the ``helpers`` package,
so a saved model loads back once ``helpers.papers.layers`` is imported.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="helpers")
class StochasticDepth(layers.Layer):
    """Drop a residual branch for a random subset of the images of a batch.

    In training, each image's branch output is kept with probability
    ``1 - rate`` and then divided by ``1 - rate`` (so its expectation is
    unchanged), or replaced by zeros; at inference the layer is the identity.
    Use it on the branch, before the residual addition: ``x + drop(f(x))``.
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        # One draw per image, broadcast over all its other axes.
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        draw = keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype)
        mask = ops.cast(draw < keep, x.dtype)
        return x * mask / keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
