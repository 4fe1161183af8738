"""How training batches reach the model: Keras's own array feeding, or batches prepared ahead.

``model.fit(x, y)`` on NumPy arrays slices each batch in the training loop,
between two steps. On PyTorch it goes through a ``DataLoader`` that indexes and
converts every batch in line with the steps, about 20 ms a batch on two CPU
cores: enough to starve any GPU. On TensorFlow Keras builds a ``tf.data``
pipeline; on two cores, at the sizes of the ``cifar10-cpu`` profile, it left the
CCT at 250-300 images/s where prepared batches gave 340-440 (the benchmark,
runs of one session). On JAX the slicing costs about a millisecond a step.
``ShuffledBatches`` prepares the next batches in worker threads while the
current step runs, on every backend (on JAX its threads cost more than they
save). ``python -m helpers.book.bench --feed`` prints the share of each step
spent outside the compiled step with either.

``train_and_evaluate(feed=...)`` picks one of ``FEEDS``: ``"auto"`` is
``"prefetch"`` on PyTorch and TensorFlow and ``"arrays"`` on JAX, and
``"arrays"`` in data-parallel training. Under TensorFlow's ``MirroredStrategy``
two replicas fed a ``PyDataset`` do not train as one device does (their losses
part from one device's within the first epoch, even when the batches divide
evenly; tests/test_distribute.py), so ``"prefetch"`` is refused there.
"""

from __future__ import annotations

import math

import keras
import numpy as np

FEEDS = ("auto", "arrays", "prefetch")


def resolve_feed(feed: str, devices: int = 1) -> str:
    """``"arrays"`` or ``"prefetch"``: what ``feed`` means on the current backend,
    training on ``devices`` replicas."""
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {FEEDS}, got {feed!r}")
    parallel_tf = devices > 1 and keras.backend.backend() == "tensorflow"
    if feed == "auto":
        return "arrays" if keras.backend.backend() == "jax" or devices > 1 else "prefetch"
    if feed == "prefetch" and parallel_tf:
        raise ValueError(
            f"feed='prefetch' does not train {devices} TensorFlow replicas the way one device "
            "trains: use feed='arrays' (or 'auto') in data-parallel training"
        )
    return feed


class ShuffledBatches(keras.utils.PyDataset):
    """Mini-batches of in-memory arrays in a fresh random order every epoch.

    ``workers`` threads prepare up to ``max_queue_size`` batches ahead of the
    training step (Keras's ``PyDataset`` machinery; threads, not processes:
    slicing NumPy arrays releases the GIL). Every image is seen once per
    epoch; the last batch is smaller when ``batch_size`` does not divide the
    data, as with ``fit(x, y, batch_size=...)``. The order comes from
    ``seed``, so two runs with the same seed see the same batches.
    """

    def __init__(self, x, y, batch_size: int, *, seed: int = 0, workers: int = 2,
                 max_queue_size: int = 8):
        super().__init__(workers=workers, use_multiprocessing=False,
                         max_queue_size=max_queue_size)
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        picked = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.x[picked], self.y[picked]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))
