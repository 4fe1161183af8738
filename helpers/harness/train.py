"""Compile, fit and evaluate a classifier the same way in every notebook.

``train_and_evaluate`` is the one training loop of the book: AdamW (or any
optimizer), optional linear warmup + cosine decay (``WarmupCosineDecay``),
optional label smoothing, top-1 / top-5 accuracy, restore of
the best validation epoch, and a ``TrainResult`` with the numbers every result
record needs. Plain ``model.fit`` keeps it portable across backends.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from keras import ops

from helpers.harness.data import Dataset
from helpers.harness.distribute import replicas
from helpers.harness.feed import ShuffledBatches, resolve_feed
from helpers.harness.resume import CallbackStates, RunLog

SCHEDULES = ("constant", "cosine")


# How AdamW's decoupled weight decay scales, applied to every weight before the Adam step:
#   "lr_scaled": w <- w - learning_rate * weight_decay * w   (Keras 3's and PyTorch's AdamW)
#   "per_step":  w <- w - weight_decay * w                   (TensorFlow Addons' AdamW)
WEIGHT_DECAY_MODES = ("lr_scaled", "per_step")


@keras.saving.register_keras_serializable(package="helpers")
class PerStepAdamW(keras.optimizers.Adam):
    """Adam with decoupled weight decay that is not scaled by the learning rate.

    Each step first shrinks every trained weight by ``weight_decay`` of itself
    (``w <- w - weight_decay * w``), then applies the Adam update computed
    from the gradient: the convention of TensorFlow Addons' ``AdamW``, which
    the Keras 2 examples this book starts from trained with. Keras 3's
    ``AdamW`` multiplies the decay by the current learning rate instead, so
    the same ``weight_decay`` there decays ``1 / learning_rate`` times less
    (1000x at a rate of 1e-3), and under a schedule the decay follows the
    rate down while here it stays constant.
    """

    def __init__(self, learning_rate=1e-3, weight_decay: float = 1e-4, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        # Not ``self.weight_decay``: Keras's base class would apply that one
        # a second time, scaled by the learning rate.
        self.per_step_decay = float(weight_decay)
        self.per_step_exempt: set[int] = set()
        self.per_step_exempt_names: list[str] = []

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Keras's method, honoured by the per-step decay too: the variables of
        ``var_list`` (and those whose name contains one of ``var_names``) keep
        their value apart from the Adam step."""
        super().exclude_from_weight_decay(var_list=var_list, var_names=var_names)
        # By identity: on TensorFlow ``update_step`` receives the backend variable
        # that a Keras variable's ``value`` holds, on JAX and PyTorch the Keras one.
        self.per_step_exempt = {id(v) for variable in var_list or []
                                for v in (variable, variable.value)}
        self.per_step_exempt_names = list(var_names or [])

    def _decays(self, variable) -> bool:
        if id(variable) in self.per_step_exempt:
            return False
        return not any(name in variable.name for name in self.per_step_exempt_names)

    def update_step(self, gradient, variable, learning_rate):
        if self.per_step_decay and self._decays(variable):
            decay = ops.cast(self.per_step_decay, variable.dtype)
            self.assign_sub(variable, variable * decay)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "weight_decay": self.per_step_decay}


def adamw(learning_rate, weight_decay: float, mode: str = "lr_scaled") -> keras.optimizers.Optimizer:
    """AdamW at ``learning_rate`` (a rate or a schedule), its decay scaled as ``mode`` says.

    ``mode="lr_scaled"`` is Keras's ``AdamW``; ``mode="per_step"`` is
    ``PerStepAdamW`` (see ``WEIGHT_DECAY_MODES``). With a constant rate
    ``lr`` the two agree when the ``lr_scaled`` decay is the ``per_step``
    one divided by ``lr``.
    """
    if mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got {mode!r}")
    if mode == "per_step":
        return PerStepAdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)


def decay_only_trajectory(start, weight_decay: float, mode: str, rates) -> np.ndarray:
    """What decoupled weight decay alone does to a weight that starts at ``start``.

    ``rates``: the learning rate of each training step, in order (the rates the
    optimizer applied, or its schedule evaluated step by step). Returns
    ``len(rates) + 1`` values: ``start`` and the value after each step when the
    gradient never moves the weight, with the step semantics of ``adamw``:
    ``"per_step"`` multiplies by ``1 - weight_decay`` at every step,
    ``"lr_scaled"`` by ``1 - rate * weight_decay`` with that step's rate. The
    baseline a learned weight under decay (the LSA temperatures) is read against.
    """
    if mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got {mode!r}")
    rates = np.asarray(rates, dtype="float64")
    factors = (np.full(len(rates), 1.0 - weight_decay) if mode == "per_step"
               else 1.0 - rates * weight_decay)
    return float(start) * np.concatenate([[1.0], np.cumprod(factors)])


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and the Keras backend in one call."""
    keras.utils.set_random_seed(seed)


@dataclasses.dataclass
class TrainResult:
    """What one training run produced.

    ``train_seconds`` and ``epoch_seconds`` count the training batches only
    (validation excluded). ``resumed_epochs`` is the number of epochs restored
    from a backup of an interrupted run (0 for a run done in one go); the
    history and times cover all epochs either way.
    """

    history: dict[str, list[float]]
    test_loss: float
    test_top1: float
    test_top5: float
    epochs: int
    best_epoch: int | None
    parameter_count: int
    train_seconds: float
    train_images_per_second: float
    epoch_seconds: list[float]
    resumed_epochs: int = 0

    def summary(self) -> str:
        best = "" if self.best_epoch is None else f", best epoch {self.best_epoch}"
        if self.resumed_epochs:
            best += f" (resumed after epoch {self.resumed_epochs})"
        return (
            f"test top-1 {self.test_top1:.2%}, top-5 {self.test_top5:.2%} after "
            f"{self.epochs} epochs{best}; {self.train_seconds:.0f} s of training at "
            f"{self.train_images_per_second:.0f} images/s"
        )


@keras.saving.register_keras_serializable(package="helpers")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to ``learning_rate``, then cosine decay to 0.

    The rate rises linearly over ``warmup_steps`` steps, then follows half a
    cosine down to 0 at ``total_steps``, and stays at 0 after that. Keras's
    ``CosineDecay(warmup_target=...)`` computes the same values but chooses
    between warmup and decay with ``ops.cond``; on the JAX backend on CPU
    (jax 0.10.2) that conditional inside the training step made every step of
    the smoke ViT about 10x slower (2.8 s vs 0.27 s). Here both branches are
    computed and ``ops.where`` picks one: no control flow in the step.
    """

    def __init__(self, learning_rate, total_steps, warmup_steps):
        super().__init__()
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        progress = ops.clip(progress, 0.0, 1.0)
        decay = 0.5 * self.learning_rate * (1.0 + ops.cos(math.pi * progress))
        if not self.warmup_steps:
            return decay
        warmup = self.learning_rate * step / self.warmup_steps
        return ops.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


def warmup_cosine_schedule(
    learning_rate: float, total_steps: int, warmup_steps: int
) -> WarmupCosineDecay:
    """Linear warmup from 0 to ``learning_rate``, then cosine decay to 0 (``WarmupCosineDecay``)."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}"
        )
    return WarmupCosineDecay(learning_rate, total_steps, warmup_steps)


class LearningRateRecorder(keras.callbacks.Callback):
    """The learning rate the compiled optimizer applies at each training step.

    Before every batch it reads ``model.optimizer.iterations`` and
    ``model.optimizer.learning_rate`` (a schedule is evaluated at the current
    step), so ``steps`` and ``rates`` show the rate the optimizer really used,
    not the one a schedule was meant to give. Pass it in ``callbacks`` of
    ``run.train`` (or ``train_and_evaluate``). Used by the SPT + LSA notebook to show that the
    warmup-cosine schedule drives AdamW.
    """

    def __init__(self):
        super().__init__()
        self.steps: list[int] = []
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.steps.append(int(keras.ops.convert_to_numpy(optimizer.iterations)))
        self.rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))


def _trim_to_multiple(data: Dataset, multiple: int) -> Dataset:
    """``data`` with each split cut to a multiple of ``multiple`` images (drops < multiple each)."""

    def cut(x, y):
        if x is None:
            return x, y
        keep = len(x) - len(x) % multiple
        return x[:keep], y[:keep]

    x_train, y_train = cut(data.x_train, data.y_train)
    x_val, y_val = cut(data.x_val, data.y_val)
    x_test, y_test = cut(data.x_test, data.y_test)
    return dataclasses.replace(data, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                               x_test=x_test, y_test=y_test)


def train_and_evaluate(
    model: keras.Model,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    weight_decay_mode: str = "lr_scaled",
    optimizer: keras.optimizers.Optimizer | Callable | None = None,
    schedule: str = "constant",
    warmup_fraction: float = 0.1,
    label_smoothing: float = 0.0,
    restore_best: bool = True,
    callbacks: list | None = None,
    exclude_from_weight_decay: list | None = None,
    backup_dir: str | os.PathLike | None = None,
    feed: str = "auto",
    seed: int = 0,
    verbose: int = 2,
) -> TrainResult:
    """Compile ``model``, fit it on ``data``, evaluate it on the test set.

    Args:
        model: a classifier that outputs logits, one per class.
        data: a ``Dataset``; its validation split (if any) is used for the
            per-epoch validation metrics and to pick the best epoch.
        epochs, batch_size: the training budget.
        learning_rate: peak learning rate.
        weight_decay: AdamW's decoupled weight decay.
        weight_decay_mode: how that decay scales, ``"lr_scaled"`` (Keras's
            AdamW) or ``"per_step"`` (TensorFlow Addons' AdamW); see
            ``WEIGHT_DECAY_MODES``.
        optimizer: an optimizer instance, or a callable taking the learning
            rate (a float or a schedule) and returning one, e.g.
            ``lambda lr: keras.optimizers.Lamb(lr)``. Default: AdamW.
        schedule: ``"constant"`` or ``"cosine"`` (linear warmup over
            ``warmup_fraction`` of the steps, then cosine decay to 0).
        label_smoothing: in ``[0, 1)``; > 0 trains on smoothed one-hot labels.
        restore_best: with a validation split, end with the weights of the
            epoch of best validation accuracy.
        callbacks: extra Keras callbacks.
        exclude_from_weight_decay: variables of ``model`` that weight decay
            leaves alone (the optimizer's ``exclude_from_weight_decay``; the
            per-step mode honours it too). Default: every trained weight decays.
        backup_dir: back up the training state there after every epoch
            (``keras.callbacks.BackupAndRestore`` plus this run's log, best
            weights and the counters of ``EarlyStopping`` and
            ``ReduceLROnPlateau`` in ``callbacks``). If the process dies,
            calling this function again with the same model, data and
            options resumes after the last completed epoch. The folder is
            the run's own: a finished run deletes it.
        feed: how training batches reach the model (``helpers.harness.feed``):
            ``"arrays"`` (``fit`` on the arrays), ``"prefetch"`` (shuffled
            batches prepared ahead in threads) or ``"auto"`` (the faster one
            on this backend).
        seed: the seed of the batches' order with ``feed="prefetch"``.
        verbose: ``fit`` verbosity; 2 (one line per epoch) keeps executed
            notebooks readable, since every progress-bar update would be
            stored as an output of its own.

    Inside ``helpers.harness.distribute.data_parallel()`` the model trains on every
    local device. On JAX, ``batch_size`` must then be a multiple of the number
    of devices, and each split loses its last few (fewer than that number)
    images so that every batch splits evenly.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(
            f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got {weight_decay_mode!r}"
        )
    devices = replicas()
    feed = resolve_feed(feed, devices)
    if isinstance(optimizer, keras.optimizers.Optimizer) and schedule != "constant":
        raise ValueError(
            "an optimizer instance keeps its own learning rate: to use the "
            f"{schedule!r} schedule, pass a callable that takes the rate instead"
        )

    devices = replicas()
    if devices > 1 and keras.backend.backend() == "jax":
        # JAX shards every batch evenly over the devices, the last one included.
        if batch_size % devices:
            raise ValueError(
                f"batch_size must be a multiple of the {devices} devices of data-parallel "
                f"training, got {batch_size}"
            )
        data = _trim_to_multiple(data, devices)

    steps_per_epoch = math.ceil(len(data.x_train) / batch_size)
    if schedule == "cosine":
        total_steps = epochs * steps_per_epoch
        rate = warmup_cosine_schedule(
            learning_rate, total_steps, int(total_steps * warmup_fraction)
        )
    else:
        rate = learning_rate
    if optimizer is None:
        optimizer = adamw(rate, weight_decay, weight_decay_mode)
    elif not isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer = optimizer(rate)
    if exclude_from_weight_decay:
        optimizer.exclude_from_weight_decay(var_list=list(exclude_from_weight_decay))

    def targets(labels):
        if label_smoothing:
            return keras.utils.to_categorical(labels, data.num_classes)
        return labels

    if label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        )
        metrics = [
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"),
        ]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"),
        ]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)

    validation = None
    if data.validation_data is not None:
        validation = (data.x_val, targets(data.y_val))
    monitor = "val_accuracy" if validation is not None and restore_best else None
    backup = None if backup_dir is None else Path(backup_dir)
    run_log = RunLog(monitor, backup)
    # The log comes first: at the end of an epoch it is written before the
    # Keras backup, so a resumed run never lacks the log of an epoch it skips.
    all_callbacks = [run_log, *(callbacks or [])]
    if backup is not None:
        if not model.built:
            model(data.x_train[:1])  # BackupAndRestore needs the weights to exist
        states = CallbackStates(callbacks or [], backup)
        all_callbacks[1:1] = [states.restorer]
        # double_checkpoint: a kill while the latest weights are being written
        # leaves a corrupt file; the resumed run then starts from the epoch before.
        all_callbacks += [states, keras.callbacks.BackupAndRestore(str(backup),
                                                                   double_checkpoint=True)]

    if feed == "prefetch":
        training = {"x": ShuffledBatches(data.x_train, targets(data.y_train), batch_size, seed=seed)}
    else:
        training = {"x": data.x_train, "y": targets(data.y_train), "batch_size": batch_size}
    model.fit(
        **training,
        epochs=epochs,
        validation_data=validation,
        callbacks=all_callbacks,
        verbose=verbose,
    )
    if monitor is not None:
        run_log.restore_best()

    scores = model.evaluate(
        data.x_test, targets(data.y_test), batch_size=batch_size, verbose=0, return_dict=True
    )
    history = run_log.history()
    epoch_seconds = [e["seconds"] for e in run_log.epochs]
    # The first epoch also traces and compiles the step function; leave it out
    # of the throughput when there are later epochs to measure.
    steady = epoch_seconds[1:] or epoch_seconds
    images_per_second = len(data.x_train) * len(steady) / max(sum(steady), 1e-9)

    return TrainResult(
        history=history,
        test_loss=float(scores["loss"]),
        test_top1=float(scores["accuracy"]),
        test_top5=float(scores["top5_accuracy"]),
        epochs=len(history["loss"]),
        best_epoch=run_log.best_epoch if monitor else None,
        parameter_count=int(model.count_params()),
        train_seconds=sum(epoch_seconds),
        train_images_per_second=images_per_second,
        epoch_seconds=epoch_seconds,
        resumed_epochs=run_log.resumed_epochs,
    )
