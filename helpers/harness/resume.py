"""Crash-resume machinery of the training loop: a run backs itself up every epoch.

``train_and_evaluate`` (``helpers.harness.train``) is given a ``backup_dir``
(``backup_dir_for``: one folder per notebook and parameter set). After every
epoch three things are written there: Keras's ``BackupAndRestore`` state (the
weights, the optimizer with its step count and moments, the epoch), this
module's ``RunLog`` (the metrics and times of every epoch so far and the best
epoch's weights) and ``CallbackStates`` (the counters and best weights of
``EarlyStopping`` and ``ReduceLROnPlateau``). If the process dies, the same
call again resumes after the last completed epoch, and the result still holds
every epoch. A finished run deletes its backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops


def backup_dir_for(results_dir: str | os.PathLike, name: str, parameters: dict) -> Path:
    """The backup folder of one run: ``<results_dir>/backups/<name>-<hash>``.

    The hash covers the run's parameters, so a notebook started again after a
    crash finds its own backup, while a run with other parameters starts
    afresh instead of loading weights of another shape or recipe.
    """
    text = json.dumps(parameters, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return Path(results_dir) / "backups" / f"{name}-{digest}"


class RunLog(keras.callbacks.Callback):
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
                    # Written aside, then renamed: a kill never leaves half a file.
                    temporary = self.backup_dir / "best.tmp.weights.h5"
                    self.model.save_weights(temporary, overwrite=True)
                    temporary.replace(self._best_path)
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
            if self.best_weights == "disk":
                # The best epoch came before a resume: keep its weights in memory,
                # since the folder goes now and restore_best comes after.
                current = self.model.get_weights()
                self.model.load_weights(self._best_path)
                self.best_weights = self.model.get_weights()
                self.model.set_weights(current)
            for path in (self._log_path, self._best_path):
                path.unlink(missing_ok=True)

    def history(self) -> dict[str, list[float]]:
        keys = self.epochs[0]["logs"].keys() if self.epochs else ()
        return {key: [e["logs"].get(key, float("nan")) for e in self.epochs] for key in keys}


class CallbackStates(keras.callbacks.Callback):
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
