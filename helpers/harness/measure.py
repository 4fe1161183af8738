"""Peak accelerator memory of one call, on whichever backend Keras runs.

The Perceiver notebook puts memory next to the time of self- and
cross-attention. Only allocators that keep a peak counter that can be reset
are read, so that the number belongs to the call and to nothing before it:

* PyTorch on a CUDA device (``torch.cuda.max_memory_allocated``);
* TensorFlow on a GPU (``tf.config.experimental.get_memory_info``).

JAX keeps a peak since the process started, with no reset, and CPUs report
nothing: there ``peak_memory_bytes`` returns None rather than a guess.
"""

from __future__ import annotations

from collections.abc import Callable

import keras


def memory_source() -> str | None:
    """What ``peak_memory_bytes`` reads on this backend and machine, or None."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "torch.cuda.max_memory_allocated"
    elif backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return "tf.config.experimental.get_memory_info"
    return None


def peak_memory_bytes(call: Callable[[], object]) -> int | None:
    """Run ``call()`` and return the peak device memory it allocated, in bytes.

    The peak is counted above what was allocated before the call (weights and
    inputs already on the device are not counted). Returns None where the
    backend does not report it (see ``memory_source``); ``call`` still runs.
    """
    source = memory_source()
    if source is None:
        call()
        return None
    if keras.backend.backend() == "torch":
        import torch

        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        call()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
    import tensorflow as tf

    before = tf.config.experimental.get_memory_info("GPU:0")["current"]
    tf.config.experimental.reset_memory_stats("GPU:0")
    call()
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"] - before)
