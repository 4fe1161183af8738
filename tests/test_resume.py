"""Crash-resume (helpers.harness.resume): a killed run resumes after its last
completed epoch, with its schedule, optimizer and callback counters as they were."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from helpers.harness.resume import backup_dir_for
from helpers.harness.train import (
    LearningRateRecorder,
    set_seed,
    train_and_evaluate,
    warmup_cosine_schedule,
)

from conftest import small_classifier

RESUMABLE_RUN = textwrap.dedent(
    """
    import json, os, sys, time
    import keras
    from helpers.harness.data import load_dataset
    from helpers.harness.train import set_seed, train_and_evaluate

    backup_dir, marks = sys.argv[1], sys.argv[2]

    class Marks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            with open(marks, "a") as f:
                f.write(f"{os.getpid()} {epoch}\\n")
            if epoch == 3 and os.environ.get("HANG_AT_EPOCH_3"):
                time.sleep(300)  # the test kills the process here

    set_seed(0)
    data = load_dataset("digits", n_train=600, n_test=200, validation_split=0.2, seed=0)
    inputs = keras.Input(data.image_shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(data.num_classes)(x))
    result = train_and_evaluate(model, data, epochs=6, batch_size=32, verbose=0,
                                callbacks=[Marks()], backup_dir=backup_dir)
    print(json.dumps({"epochs": result.epochs, "history": result.history,
                      "best_epoch": result.best_epoch, "resumed": result.resumed_epochs,
                      "epoch_seconds": result.epoch_seconds, "top1": result.test_top1}))
    """
)


@pytest.mark.slow  # two training processes, one killed (SIGKILL) mid-run
def test_a_killed_run_resumes_after_its_last_completed_epoch(tmp_path):
    backup, marks = tmp_path / "backup", tmp_path / "marks.txt"
    command = [sys.executable, "-c", RESUMABLE_RUN, str(backup), str(marks)]
    first = subprocess.Popen(command, env={**os.environ, "HANG_AT_EPOCH_3": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (marks.exists() and f"{first.pid} 3" in marks.read_text()):
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the first run never reached epoch 3"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # no chance to clean up, as on a preempted machine
    first.wait()
    assert first.returncode == -signal.SIGKILL
    assert (backup / "run_log.json").exists()

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    result = json.loads(second.stdout.strip().splitlines()[-1])
    epochs_run = [line.split() for line in marks.read_text().splitlines()]
    assert [int(e) for pid, e in epochs_run if int(pid) != first.pid] == [3, 4, 5]
    assert result["epochs"] == 6 and result["resumed"] == 3
    assert all(len(values) == 6 for values in result["history"].values())
    assert len(result["epoch_seconds"]) == 6
    assert 1 <= result["best_epoch"] <= 6
    assert result["history"]["val_accuracy"][result["best_epoch"] - 1] == max(
        result["history"]["val_accuracy"])
    assert result["top1"] > 0.5  # it kept learning after the restart; chance is 0.1
    assert not backup.exists()  # a finished run leaves no backup behind


class Crash(keras.callbacks.Callback):
    """Stands for a dead kernel: raises when ``epoch`` begins, after the backup of the one before."""

    def __init__(self, epoch, watched=()):
        super().__init__()
        self.epoch, self.watched, self.states = epoch, watched, None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.states = [callback_state(c) for c in self.watched]
            raise KeyboardInterrupt("crash")


class Probe(keras.callbacks.Callback):
    """The watched callbacks' state when the first epoch of this run begins."""

    def __init__(self, watched):
        super().__init__()
        self.watched, self.states = watched, None

    def on_epoch_begin(self, epoch, logs=None):
        if self.states is None:
            self.states = [callback_state(c) for c in self.watched]


def callback_state(callback):
    names = ("wait", "best", "best_epoch", "cooldown_counter")
    state = {name: getattr(callback, name) for name in names if hasattr(callback, name)}
    weights = getattr(callback, "best_weights", None)
    if weights is not None:
        state["weights"] = [np.asarray(w).copy() for w in weights]
    return state


def assert_same_states(saved, restored):
    assert len(saved) == len(restored)
    for before, after in zip(saved, restored):
        assert before.keys() == after.keys()
        for key in before:
            if key == "weights":
                assert len(before[key]) == len(after[key])
                for a, b in zip(before[key], after[key]):
                    np.testing.assert_array_equal(a, b)
            else:
                assert after[key] == pytest.approx(before[key]), key


def test_a_resumed_run_continues_the_schedule_and_the_early_stopping(digits_split, tmp_path):
    """After a crash the optimizer has its step count and moments back, so the
    warmup-cosine schedule goes on from where it was instead of warming up
    again, and EarlyStopping has the patience counter, best value and best
    weights of the epoch the run resumes from."""
    epochs, batch_size = 6, 32
    steps = math.ceil(len(digits_split.x_train) / batch_size)
    options = dict(epochs=epochs, batch_size=batch_size, schedule="cosine", warmup_fraction=0.5,
                   verbose=0, backup_dir=tmp_path / "backup")

    def watched():
        return [keras.callbacks.EarlyStopping(monitor="val_loss", patience=100,
                                              restore_best_weights=True),
                # min_delta 2: after the first epoch no accuracy counts as better
                keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=100,
                                              min_delta=2.0)]

    set_seed(0)
    first_model, first_callbacks = small_classifier(digits_split), watched()
    recorder, crash = LearningRateRecorder(), Crash(4, first_callbacks)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(first_model, digits_split,
                           callbacks=[recorder, *first_callbacks, crash], **options)
    assert recorder.steps == list(range(4 * steps))
    # Best weights are kept for the last two epochs only, however often they changed.
    assert 1 <= len(list((tmp_path / "backup").glob("callback*.npz"))) <= 2

    set_seed(1)  # another initialization, for the backup to overwrite
    model, callbacks = small_classifier(digits_split), watched()
    resumed, probe = LearningRateRecorder(), Probe(callbacks)
    result = train_and_evaluate(model, digits_split,
                                callbacks=[resumed, *callbacks, probe], **options)

    assert result.resumed_epochs == 4 and result.epochs == epochs
    assert resumed.steps == list(range(4 * steps, epochs * steps))
    schedule = warmup_cosine_schedule(1e-3, epochs * steps, int(epochs * steps * 0.5))
    expected = [float(schedule(step)) for step in resumed.steps]
    np.testing.assert_allclose(resumed.rates, expected, rtol=1e-6)
    assert_same_states(crash.states, probe.states)
    assert crash.states[0]["weights"] and crash.states[1]["wait"] == 3


def test_a_resumed_run_keeps_the_rate_and_counters_of_reduce_lr_on_plateau(
        digits_split, tmp_path):
    options = dict(epochs=5, batch_size=32, verbose=0, backup_dir=tmp_path / "backup",
                   optimizer=lambda rate: keras.optimizers.Adam(rate))

    def plateau():  # min_delta 2: after the first epoch no accuracy counts as better
        return keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", patience=2,
                                                 factor=0.5, min_delta=2.0, cooldown=1)

    set_seed(0)
    first_model, first = small_classifier(digits_split), plateau()
    crash = Crash(3, [first])
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(first_model, digits_split, callbacks=[first, crash], **options)
    cut = float(keras.ops.convert_to_numpy(first_model.optimizer.learning_rate))
    assert cut == pytest.approx(0.5e-3)  # cut once, at the end of the third epoch

    model, again, recorder = small_classifier(digits_split), plateau(), LearningRateRecorder()
    probe = Probe([again])
    train_and_evaluate(model, digits_split, callbacks=[again, recorder, probe], **options)
    assert recorder.rates[0] == pytest.approx(cut)
    assert_same_states(crash.states, probe.states)
    assert crash.states[0]["cooldown_counter"] == 1


def test_each_parameter_set_has_its_own_backup_folder(tmp_path):
    first = backup_dir_for(tmp_path, "vit", {"epochs": 10, "patch_size": 4})
    assert first == backup_dir_for(tmp_path, "vit", {"patch_size": 4, "epochs": 10})
    assert first.parent == tmp_path / "backups" and first.name.startswith("vit-")
    assert first != backup_dir_for(tmp_path, "vit", {"epochs": 10, "patch_size": 8})


def test_a_run_killed_while_writing_its_backup_resumes_from_the_epoch_before(
        digits_split, tmp_path):
    """A SIGKILL in the middle of writing the latest weights leaves a corrupt file:
    the run resumes from the previous epoch's backup instead of failing."""
    backup = tmp_path / "backup"
    options = dict(epochs=5, batch_size=32, verbose=0, backup_dir=backup)
    set_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(small_classifier(digits_split), digits_split,
                           callbacks=[Crash(3)], **options)
    latest = backup / "latest.weights.h5"
    assert latest.is_file() and (backup / "latest.weights.h5.bkp").is_file()
    latest.write_bytes(latest.read_bytes()[:200])  # cut short, as by a kill mid-write
    set_seed(1)
    result = train_and_evaluate(small_classifier(digits_split), digits_split, **options)
    assert result.resumed_epochs == 2  # the backup of epoch 2, not the corrupt one of epoch 3
    assert result.epochs == 5 and len(result.history["loss"]) == 5
    assert result.test_top1 > 0.5
    assert not backup.exists()


def test_a_resumed_run_whose_best_epoch_came_before_the_crash_restores_it(digits_split, tmp_path):
    options = dict(epochs=3, batch_size=32, verbose=0, backup_dir=tmp_path / "backup")

    class CrashBeforeEpoch3(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    class Spoil(keras.callbacks.Callback):  # the resumed epoch cannot beat the earlier ones
        def on_train_batch_begin(self, batch, logs=None):
            self.model.set_weights([np.zeros_like(w) for w in self.model.get_weights()])

    set_seed(0)
    first = small_classifier(digits_split)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(first, digits_split, callbacks=[CrashBeforeEpoch3()], **options)
    best = first.get_weights()  # epoch 2's weights: validation accuracy rose in both epochs

    set_seed(1)
    model = small_classifier(digits_split)
    result = train_and_evaluate(model, digits_split, callbacks=[Spoil()], **options)
    assert result.resumed_epochs == 2 and result.best_epoch in (1, 2)
    assert result.test_top1 > 0.5  # the best epoch's weights, not the spoiled ones
    if result.best_epoch == 2:
        for ours, theirs in zip(model.get_weights(), best):
            np.testing.assert_array_equal(ours, theirs)
    assert not (tmp_path / "backup").exists() or not any((tmp_path / "backup").iterdir())
