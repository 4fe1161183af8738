"""Data-parallel training on every local device, through each backend's own API.

    with data_parallel() as devices:       # JAX or TensorFlow
        model = build_vit(run.p, data.x_train, data.num_classes)
        result = train_and_evaluate(model, data, ...)

or, for a whole notebook whose models are built and trained in later cells,
``devices = use_data_parallel(True)`` once in its setup cell.

Inside the block, a model that is created, compiled and fitted is replicated
on every local accelerator (or every CPU device when there is none); each step
splits the batch across them and averages the gradients, so ``batch_size``
stays the global batch and the result matches single-device training up to
floating-point summation order.

* JAX: ``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``.
* TensorFlow: ``tf.distribute.MirroredStrategy`` over the logical GPUs (or CPUs).
* PyTorch: Keras has no single-process multi-device API for it; ``data_parallel``
  raises a ``ValueError`` that says so (``enabled=False`` always works).

``use_data_parallel`` serves every notebook's ``data_parallel`` parameter. To try it on a CPU,
start Python with two virtual devices: ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
for JAX, or ``tf.config.set_logical_device_configuration`` before TensorFlow
starts (see tests/test_distribute.py).
"""

from __future__ import annotations

import contextlib

import keras


def local_devices() -> list[str]:
    """The devices data-parallel training would use: the accelerators, else the CPUs."""
    backend = keras.backend.backend()
    if backend == "jax":
        return list(keras.distribution.list_devices())
    if backend == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return [device.name for device in devices]
    raise ValueError(
        f"data-parallel training runs on the JAX and TensorFlow backends, not {backend!r}: "
        "set KERAS_BACKEND=jax or tensorflow, or train on one device (data_parallel=False)"
    )


def replicas() -> int:
    """How many devices the current data-parallel block (if any) trains on."""
    backend = keras.backend.backend()
    if backend == "jax":
        distribution = keras.distribution.distribution()
        if distribution is None:
            return 1
        return len(distribution.device_mesh.devices.reshape(-1))
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync
    return 1


@contextlib.contextmanager
def data_parallel(enabled: bool = True):
    """Create, compile and fit models inside this block to train them on every local device.

    Yields the list of device names (one device when ``enabled`` is False).
    """
    if not enabled:
        yield ["default device"]
        return
    devices = local_devices()
    if keras.backend.backend() == "jax":
        distribution = keras.distribution.DataParallel(devices=devices)
        with distribution.scope():
            yield devices
    else:
        import tensorflow as tf

        with tf.distribute.MirroredStrategy(devices).scope():
            yield devices


def use_data_parallel(enabled: bool) -> list[str]:
    """Make data-parallel training the default for the rest of the process.

    For a notebook: every model created and trained after this call is
    replicated on all local devices (``enabled=True``); with ``enabled=False``
    nothing changes. Returns the device names.
    """
    if not enabled:
        return ["default device"]
    devices = local_devices()
    if keras.backend.backend() == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    else:
        import tensorflow as tf

        tf.distribute.experimental_set_strategy(tf.distribute.MirroredStrategy(devices))
    return devices
