"""Compile, fit and evaluate a classifier the same way in every notebook.

``train_and_evaluate`` is the one training loop of the book: AdamW (or any
optimizer), optional linear warmup + cosine decay (``WarmupCosineDecay``),
optional label smoothing, top-1 / top-5 accuracy, restore of
the best validation epoch, and a ``TrainResult`` with the numbers every result
record needs. Plain ``model.fit`` keeps it portable across backends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from keras import ops

from helpers.data import Dataset
from helpers.distribute import replicas

SCHEDULES = ("constant", "cosine")


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
    params: int
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


def backup_dir_for(results_dir: str | os.PathLike, name: str, parameters: dict) -> Path:
    """The backup folder of one run: ``<results_dir>/backups/<name>-<hash>``.

    The hash covers the run's parameters, so a notebook started again after a
    crash finds its own backup, while a run with other parameters starts
    afresh instead of loading weights of another shape or recipe.
    """
    text = json.dumps(parameters, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return Path(results_dir) / "backups" / f"{name}-{digest}"


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
    ``train_and_evaluate``. Used by the SPT + LSA notebook to show that the
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


class _RunLog(keras.callbacks.Callback):
    """Per-epoch metrics and times, the best epoch's weights, and their backup.

    Without ``backup_dir`` everything stays in memory. With it, the log and the
    best weights are written after every epoch, so that a run interrupted and
    started again (with ``keras.callbacks.BackupAndRestore`` restoring the
    model and the epoch counter) ends with the history of all its epochs and
    can still restore a best epoch from before the interruption.
    """

    def __init__(self, monitor: str | None, backup_dir: Path | None):
        super().__init__()
        self.monitor = monitor
        self.backup_dir = backup_dir
        self.epochs: list[dict] = []  # one {"logs": ..., "seconds": ...} per epoch
        self.best_epoch: int | None = None  # 1-based
        self.best_weights = None
        self.resumed_epochs = 0
        self._started = False
        self._batch_start = None
        self._batch_end = None

    @property
    def _log_path(self):
        return self.backup_dir / "run_log.json"

    @property
    def _best_path(self):
        return self.backup_dir / "best.weights.h5"

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._started = True
            if self.backup_dir is not None and epoch > 0 and self._log_path.exists():
                self._resume(epoch)
        self._batch_start = None

    def _resume(self, epoch):
        saved = json.loads(self._log_path.read_text())
        # Epochs logged after the last backup are run again: drop them.
        self.epochs = saved["epochs"][:epoch]
        self.resumed_epochs = len(self.epochs)
        best = saved.get("best_epoch")
        if best is not None and best <= epoch and self._best_path.exists():
            self.best_epoch = best
        if self.monitor and self.epochs:
            # Without the saved weights of a best epoch, later epochs must beat
            # only what is known to be restorable.
            known = self.epochs[: self.best_epoch or 0]
            self.best_weights = "disk" if self.best_epoch else None
            self._best_value = max((e["logs"][self.monitor] for e in known), default=None)

    def on_train_batch_begin(self, batch, logs=None):
        if self._batch_start is None:
            self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._batch_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        if self.backup_dir is not None:
            self.backup_dir.mkdir(parents=True, exist_ok=True)
        self.epochs.append({"logs": logs, "seconds": self._batch_end - self._batch_start})
        if self.monitor and self.monitor in logs:
            best = getattr(self, "_best_value", None)
            if best is None or logs[self.monitor] > best:
                self._best_value = logs[self.monitor]
                self.best_epoch = len(self.epochs)
                self.best_weights = self.model.get_weights()
                if self.backup_dir is not None:
                    self.model.save_weights(self._best_path, overwrite=True)
        if self.backup_dir is not None:
            temporary = self._log_path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"epochs": self.epochs, "best_epoch": self.best_epoch}))
            temporary.replace(self._log_path)  # atomic: a kill never leaves half a log

    def restore_best(self):
        if isinstance(self.best_weights, list):
            self.model.set_weights(self.best_weights)
        elif self.best_weights == "disk":
            self.model.load_weights(self._best_path)

    def on_train_end(self, logs=None):
        if self.backup_dir is not None:
            for path in (self._log_path, self._best_path):
                path.unlink(missing_ok=True)

    def history(self) -> dict[str, list[float]]:
        keys = self.epochs[0]["logs"].keys() if self.epochs else ()
        return {key: [e["logs"].get(key, float("nan")) for e in self.epochs] for key in keys}


class _CallbackStates(keras.callbacks.Callback):
    """Backs up the counters of Keras's stateful callbacks, and restores them on resume.

    ``BackupAndRestore`` brings back the weights, the optimizer (step count,
    moments, a learning rate cut by ``ReduceLROnPlateau``) and the epoch, but a
    callback object starts every ``fit`` afresh. Without this, a resumed run
    would count its early-stopping patience from zero and forget the best
    weights it was to restore. It must come after the callbacks it watches, so
    that it saves their state once they have seen the epoch, and before
    ``BackupAndRestore``, so that no epoch's backup lacks their state; its
    ``restorer`` comes before them, so that they begin the first resumed epoch
    with their state back.
    """

    COUNTERS = {
        keras.callbacks.EarlyStopping: ("wait", "best", "best_epoch"),
        keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
    }

    def __init__(self, callbacks: list, backup_dir: Path):
        super().__init__()
        self.watched = [
            (callback, names)
            for callback in callbacks
            for kind, names in self.COUNTERS.items()
            if isinstance(callback, kind)
        ]
        self.backup_dir = backup_dir
        self._started = False
        self.restorer = keras.callbacks.LambdaCallback(on_epoch_begin=self._restore)

    @property
    def _path(self):
        return self.backup_dir / "callbacks.json"

    def _weights_path(self, index, epoch):
        return self.backup_dir / f"callback{index}-epoch{epoch}.npz"

    def _restore(self, epoch, logs=None):
        if self._started:
            return
        self._started = True
        if epoch > 0 and self._path.exists():
            # The state saved at the end of the epoch the backup resumes after.
            saved = json.loads(self._path.read_text()).get(str(epoch - 1))
            for index, ((callback, names), state) in enumerate(zip(self.watched, saved or [])):
                for name in names:
                    setattr(callback, name, state[name])
                if state.get("weights_epoch") is not None:
                    with np.load(self._weights_path(index, state["weights_epoch"])) as stored:
                        callback.best_weights = [stored[f"w{i}"] for i in range(len(stored))]

    def on_epoch_end(self, epoch, logs=None):
        if not self.watched:
            return
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        states = []
        for index, (callback, names) in enumerate(self.watched):
            state = {name: _plain(getattr(callback, name, None)) for name in names}
            weights = getattr(callback, "best_weights", None)
            if weights is not None:
                # best_weights changes only at a better epoch: store each version once.
                state["weights_epoch"] = callback.best_epoch
                path = self._weights_path(index, callback.best_epoch)
                if not path.exists():
                    temporary = path.with_suffix(".tmp.npz")
                    np.savez(temporary, **{f"w{i}": w for i, w in enumerate(weights)})
                    temporary.replace(path)
            states.append(state)
        saved = json.loads(self._path.read_text()) if self._path.exists() else {}
        # Keep this epoch and the one before: a kill before BackupAndRestore
        # has saved this epoch resumes from the one before.
        saved = {key: value for key, value in saved.items() if int(key) >= epoch - 1}
        saved[str(epoch)] = states
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(json.dumps(saved))
        temporary.replace(self._path)
        # Best weights that neither kept epoch refers to are stale.
        kept = {self._weights_path(index, state["weights_epoch"])
                for kept_states in saved.values()
                for index, state in enumerate(kept_states)
                if state.get("weights_epoch") is not None}
        for path in set(self.backup_dir.glob("callback*-epoch*.npz")) - kept:
            path.unlink()

    def on_train_end(self, logs=None):
        self._path.unlink(missing_ok=True)
        for path in self.backup_dir.glob("callback*-epoch*.npz"):
            path.unlink()


def _plain(value):
    """A callback counter as JSON can hold it (NumPy and backend scalars to float or int)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return np.asarray(ops.convert_to_numpy(value)).item()


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
    optimizer: keras.optimizers.Optimizer | Callable | None = None,
    schedule: str = "constant",
    warmup_fraction: float = 0.1,
    label_smoothing: float = 0.0,
    restore_best: bool = True,
    callbacks: list | None = None,
    backup_dir: str | os.PathLike | None = None,
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
        optimizer: an optimizer instance, or a callable taking the learning
            rate (a float or a schedule) and returning one, e.g.
            ``lambda lr: keras.optimizers.Lamb(lr)``. Default: AdamW.
        schedule: ``"constant"`` or ``"cosine"`` (linear warmup over
            ``warmup_fraction`` of the steps, then cosine decay to 0).
        label_smoothing: in ``[0, 1)``; > 0 trains on smoothed one-hot labels.
        restore_best: with a validation split, end with the weights of the
            epoch of best validation accuracy.
        callbacks: extra Keras callbacks.
        backup_dir: back up the training state there after every epoch
            (``keras.callbacks.BackupAndRestore`` plus this run's log, best
            weights and the counters of ``EarlyStopping`` and
            ``ReduceLROnPlateau`` in ``callbacks``). If the process dies,
            calling this function again with the same model, data and
            options resumes after the last completed epoch. The folder is
            the run's own: a finished run deletes it.
        verbose: ``fit`` verbosity; 2 (one line per epoch) keeps executed
            notebooks readable, since every progress-bar update would be
            stored as an output of its own.

    Inside ``helpers.distribute.data_parallel()`` the model trains on every
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
        optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=weight_decay)
    elif not isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer = optimizer(rate)

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
    run_log = _RunLog(monitor, backup)
    # The log comes first: at the end of an epoch it is written before the
    # Keras backup, so a resumed run never lacks the log of an epoch it skips.
    all_callbacks = [run_log, *(callbacks or [])]
    if backup is not None:
        if not model.built:
            model(data.x_train[:1])  # BackupAndRestore needs the weights to exist
        states = _CallbackStates(callbacks or [], backup)
        all_callbacks[1:1] = [states.restorer]
        all_callbacks += [states, keras.callbacks.BackupAndRestore(str(backup))]

    model.fit(
        data.x_train,
        targets(data.y_train),
        batch_size=batch_size,
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
        params=int(model.count_params()),
        train_seconds=sum(epoch_seconds),
        train_images_per_second=images_per_second,
        epoch_seconds=epoch_seconds,
        resumed_epochs=run_log.resumed_epochs,
    )
