# Generated from book/spt_lsa.ipynb by `python -m helpers.book.export`: edit the
# notebook's `# @save` cells, not this file. Each block names the cell it came from.
"""The SPT + LSA notebook's layers and model builder (Lee et al., 2021, "Vision
Transformer for Small-Size Datasets"): shifted patch tokenization, locality
self-attention and ``build_spt_lsa``, the ViT of ``helpers.papers.vit`` with both."""

import math

import keras
from keras import layers, ops

from helpers.papers.vit import PatchEncoder, Patches, build_vit


# book/spt_lsa.ipynb, cell 9 ("Four diagonal shifts")
# Direction -> (rows down, columns right) the content moves, in half patches.
SHIFTS = {
    "left-up": (-1, -1),
    "left-down": (1, -1),
    "right-up": (-1, 1),
    "right-down": (1, 1),
}


def shift_images(images, rows, cols):
    """Move the content of ``images`` (batch, height, width, channels) by ``rows``
    pixels down and ``cols`` pixels right (negative: up, left); zeros fill the gap."""
    height, width = images.shape[1], images.shape[2]
    padding = [[0, 0], [max(rows, 0), max(-rows, 0)], [max(cols, 0), max(-cols, 0)], [0, 0]]
    padded = ops.pad(images, padding)
    top, left = max(-rows, 0), max(-cols, 0)
    return padded[:, top:top + height, left:left + width, :]


# book/spt_lsa.ipynb, cell 15 ("The tokenizer")
@keras.saving.register_keras_serializable(package="helpers")
class ShiftedPatchTokenization(layers.Layer):
    """Tokens that see their patch and its four diagonal half-patch neighbours.

    (batch, image_size, image_size, channels) -> (batch, num_patches, projection_dim).
    The image and its four diagonal shifts by ``patch_size // 2`` pixels (``SHIFTS``)
    are concatenated on the channel axis, cut into patches, flattened,
    layer-normalized and linearly projected; a learned position embedding is
    added. The layer replaces the ViT's ``Patches`` + ``PatchEncoder``.
    """

    def __init__(self, image_size, patch_size, projection_dim, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        if patch_size < 2 or image_size % patch_size:
            raise ValueError(
                f"patch_size must be >= 2 and divide image_size={image_size}, got {patch_size}"
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.projection_dim = projection_dim
        self.epsilon = epsilon
        self.shift = patch_size // 2
        self.num_patches = (image_size // patch_size) ** 2
        self.patches = Patches(patch_size)
        self.layer_norm = layers.LayerNormalization(epsilon=epsilon)
        # Linear projection E_S plus position embedding, as in the ViT.
        self.encoder = PatchEncoder(self.num_patches, projection_dim)

    def shifted_images(self, images):
        """(batch, h, w, c) -> (batch, h, w, 5c): the image, then its shifts in ``SHIFTS`` order."""
        views = [images] + [
            shift_images(images, rows * self.shift, cols * self.shift)
            for rows, cols in SHIFTS.values()
        ]
        return ops.concatenate(views, axis=-1)

    def build(self, input_shape):
        if tuple(input_shape[1:3]) != (self.image_size, self.image_size):
            raise ValueError(
                f"expected {self.image_size}x{self.image_size} images, got {input_shape}"
            )
        patch_dim = self.patch_size**2 * input_shape[-1] * (1 + len(SHIFTS))
        self.layer_norm.build((None, self.num_patches, patch_dim))
        self.encoder.build((None, self.num_patches, patch_dim))

    def call(self, images):
        patches = self.patches(self.shifted_images(images))
        return self.encoder(self.layer_norm(patches))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_patches, self.projection_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "projection_dim": self.projection_dim,
            "epsilon": self.epsilon,
        }


# book/spt_lsa.ipynb, cell 22 ("Locality self-attention")
def diagonal_mask_value(dtype):
    """The score LSA gives a token with itself: -1e9, or -3e4 in float16, whose
    largest finite value is 65504 (-1e9 would become -inf there). Either is far
    enough below every real score that its softmax weight is exactly 0; Keras's
    ``Softmax`` masks with the same two values."""
    return -3e4 if keras.backend.standardize_dtype(dtype) == "float16" else -1e9


@keras.saving.register_keras_serializable(package="helpers")
class LocalitySelfAttention(layers.Layer):
    """Multi-head self-attention with diagonal masking and a learned temperature.

    Per head: softmax(mask(q k^T) / temperature) v, where the mask sets the
    diagonal (a token's score with itself) to a large negative number, so its
    weight is exactly 0, and ``temperature`` is a trainable weight initialised
    to sqrt(key_dim): one scalar shared by the heads (the Keras example's LSA)
    or, with ``temperature_per_head=True``, a ``(num_heads,)`` vector, one
    value per head (as the official code learns). Called like
    ``MultiHeadAttention``: ``layer(query, value)``, with ``training`` and
    ``return_attention_scores``. ``diagonal_mask=False`` and
    ``trainable_temperature=False`` give plain scaled dot-product attention.
    """

    def __init__(self, num_heads, key_dim, dropout=0.0, diagonal_mask=True,
                 trainable_temperature=True, seed=None, temperature_per_head=False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.dropout = dropout
        self.diagonal_mask = diagonal_mask
        self.trainable_temperature = trainable_temperature
        self.seed = seed
        self.temperature_per_head = temperature_per_head
        width = num_heads * key_dim
        self.query_dense = layers.Dense(width, name="query")
        self.key_dense = layers.Dense(width, name="key")
        self.value_dense = layers.Dense(width, name="value")
        self.dropout_layer = layers.Dropout(dropout, seed=seed)

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        if self.diagonal_mask and query_shape[1] != key_shape[1]:
            raise ValueError(
                "the diagonal mask needs as many queries as keys (self-attention), got "
                f"{query_shape[1]} and {key_shape[1]}"
            )
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.value_dense.build(value_shape)
        self.output_dense = layers.Dense(query_shape[-1], name="attention_output")
        self.output_dense.build((*query_shape[:-1], self.num_heads * self.key_dim))
        self.temperature = self.add_weight(
            shape=(self.num_heads,) if self.temperature_per_head else (),
            initializer=keras.initializers.Constant(math.sqrt(self.key_dim)),
            trainable=self.trainable_temperature,
            name="temperature",
        )

    def _split_heads(self, x):
        # (batch, tokens, heads * key_dim) -> (batch, heads, tokens, key_dim)
        x = ops.reshape(x, (-1, x.shape[1], self.num_heads, self.key_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, query, value, key=None, training=None, return_attention_scores=False):
        key = value if key is None else key
        q = self._split_heads(self.query_dense(query))
        k = self._split_heads(self.key_dense(key))
        v = self._split_heads(self.value_dense(value))
        temperature = self.temperature
        if self.temperature_per_head:
            # One value per head, broadcast over that head's (queries, keys) scores.
            temperature = ops.reshape(temperature, (self.num_heads, 1, 1))
        # The queries divided before the product (the Keras example's order): in
        # float16 the undivided scores could pass its largest value, 65504.
        scores = ops.einsum("bhqd,bhkd->bhqk", q / temperature, k)
        if self.diagonal_mask:
            diagonal = ops.cast(ops.eye(scores.shape[-1]), "bool")
            scores = ops.where(diagonal, diagonal_mask_value(scores.dtype), scores)
        weights = ops.softmax(scores, axis=-1)
        mixed = ops.einsum("bhqk,bhkd->bhqd", self.dropout_layer(weights, training=training), v)
        mixed = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)),
                            (-1, mixed.shape[2], self.num_heads * self.key_dim))
        output = self.output_dense(mixed)
        return (output, weights) if return_attention_scores else output

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        return query_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "dropout": self.dropout,
            "diagonal_mask": self.diagonal_mask,
            "trainable_temperature": self.trainable_temperature,
            "seed": self.seed,
            "temperature_per_head": self.temperature_per_head,
        }


# book/spt_lsa.ipynb, cell 33 ("The two models")
def build_spt_lsa(p, x_train, num_classes, shifted_patches=True, locality_attention=True,
                  name="spt_lsa_vit"):
    """The ViT of ``helpers.papers.vit`` with SPT tokens and/or LSA in every block (SL-ViT).

    ``p`` holds the notebook's parameters, ``x_train`` the uint8 training images
    (input shape and normalization statistics). ``shifted_patches=False`` keeps
    the ViT's patch encoder and ``locality_attention=False`` its
    ``MultiHeadAttention``: with both off this is the vanilla ViT. Each LSA head
    has key size ``p.projection_dim``, as the ViT's attention heads, and
    ``p.temperature_per_head`` says whether each LSA learns one temperature
    (the Keras example) or one per head (the official code).
    """
    tokenizer = None
    if shifted_patches:
        tokenizer = ShiftedPatchTokenization(p.image_size, p.patch_size, p.projection_dim)
    attention_factory = None
    if locality_attention:
        def attention_factory():
            return LocalitySelfAttention(p.num_heads, p.projection_dim, dropout=p.dropout_rate,
                                         temperature_per_head=p.temperature_per_head)
    return build_vit(p, x_train, num_classes, tokenizer=tokenizer,
                     attention_factory=attention_factory, name=name)


# The values of the parameters cell of book/spt_lsa.ipynb: the full-size recipe.
DEFAULTS = {
    'dataset': 'cifar100',
    'n_train': 0,
    'n_test': 0,
    'validation_split': 0.1,
    'image_size': 72,
    'patch_size': 6,
    'projection_dim': 64,
    'num_heads': 4,
    'transformer_layers': 8,
    'mlp_head_units': [2048, 1024],
    'dropout_rate': 0.1,
    'head_dropout_rate': 0.5,
    'spt': True,
    'lsa': True,
    'temperature_per_head': False,
    'temperature_weight_decay': True,
    'learning_rate': 0.001,
    'weight_decay': 0.0001,
    'weight_decay_mode': 'per_step',
    'lr_schedule': 'cosine',
    'warmup_fraction': 0.1,
    'epochs': 50,
    'train_vanilla': True,
    'batch_size': 256,
    'seed': 42,
    'data_parallel': False,
    'precision': 'float32',
    'results_dir': 'results',
}
