"""The training loop (helpers.harness.train): it learns, restores the best epoch, follows its schedule."""

import math

import keras
import numpy as np
import pytest

from helpers.harness.train import (
    LearningRateRecorder,
    PerStepAdamW,
    adamw,
    decay_only_trajectory,
    set_seed,
    train_and_evaluate,
    warmup_cosine_schedule,
)

from conftest import small_classifier


def test_training_lowers_the_loss_and_beats_chance(digits_split):
    set_seed(0)
    result = train_and_evaluate(small_classifier(digits_split), digits_split, epochs=5,
                                batch_size=32, verbose=0)
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]
    assert result.test_top1 > 0.6  # chance is 0.1
    assert result.test_top5 >= result.test_top1
    assert result.epochs == 5 and len(result.epoch_seconds) == 5
    assert result.train_images_per_second > 0 and result.train_seconds > 0


def test_best_epoch_weights_are_restored(digits_split):
    set_seed(1)
    model = small_classifier(digits_split)
    result = train_and_evaluate(model, digits_split, epochs=6, batch_size=64,
                                learning_rate=3e-2, verbose=0)
    best = int(np.argmax(result.history["val_accuracy"]))
    assert result.best_epoch == best + 1
    val = model.evaluate(digits_split.x_val, digits_split.y_val, verbose=0, return_dict=True)
    assert val["accuracy"] == pytest.approx(result.history["val_accuracy"][best], abs=1e-6)


def test_warmup_cosine_schedule_matches_the_formula():
    peak, total, warmup = 1e-3, 100, 10
    schedule = warmup_cosine_schedule(peak, total, warmup)

    def expected(step):
        if step < warmup:
            return peak * step / warmup
        return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    for step in (0, 5, 10, 40, 75, 100):
        assert float(schedule(step)) == pytest.approx(expected(step), abs=1e-9)


def test_warmup_cosine_schedule_survives_serialization():
    schedule = warmup_cosine_schedule(1e-3, 100, 10)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    for step in (0, 5, 10, 60, 100, 150):
        assert float(again(step)) == pytest.approx(float(schedule(step)), abs=1e-12)
    assert float(schedule(150)) == pytest.approx(0.0, abs=1e-12)  # stays at 0 after the end
    no_warmup = warmup_cosine_schedule(1e-3, 100, 0)
    assert float(no_warmup(0)) == pytest.approx(1e-3)


def test_cosine_schedule_drives_the_optimizer(digits_split):
    set_seed(2)
    model = small_classifier(digits_split)
    train_and_evaluate(model, digits_split, epochs=2, batch_size=96, learning_rate=1e-2,
                       schedule="cosine", verbose=0)
    # After all the steps of the schedule the rate has decayed to 0.
    assert int(model.optimizer.iterations) == 2 * math.ceil(480 / 96)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-8)


def test_the_recorder_sees_the_rate_the_optimizer_applies_at_each_step(digits_split):
    set_seed(4)
    recorder = LearningRateRecorder()
    train_and_evaluate(small_classifier(digits_split), digits_split, epochs=2, batch_size=96,
                       learning_rate=1e-2, schedule="cosine", warmup_fraction=0.2,
                       callbacks=[recorder], verbose=0)
    total = 2 * math.ceil(480 / 96)
    schedule = warmup_cosine_schedule(1e-2, total, int(0.2 * total))
    assert recorder.steps == list(range(total))
    np.testing.assert_allclose(recorder.rates, [float(schedule(s)) for s in range(total)],
                               rtol=1e-6, atol=1e-12)
    assert recorder.rates[0] == 0.0 and max(recorder.rates) == pytest.approx(1e-2)


def test_label_smoothing_and_a_given_optimizer(digits_split):
    set_seed(3)
    made = []

    def lamb(rate):
        made.append(rate)
        return keras.optimizers.Lamb(rate)

    result = train_and_evaluate(small_classifier(digits_split), digits_split, epochs=3,
                                batch_size=32, optimizer=lamb, label_smoothing=0.1,
                                verbose=0)
    assert len(made) == 1 and made[0] == 1e-3
    assert result.test_top1 > 0.3
    # With smoothing the loss cannot reach 0: its floor is the entropy of the smoothed target.
    assert min(result.history["loss"]) > 0.2


def test_bad_options_are_named(digits_split):
    model = small_classifier(digits_split)
    with pytest.raises(ValueError, match="schedule must be one of"):
        train_and_evaluate(model, digits_split, epochs=1, batch_size=8, schedule="linear")
    with pytest.raises(ValueError, match="label_smoothing"):
        train_and_evaluate(model, digits_split, epochs=1, batch_size=8, label_smoothing=1.5)
    with pytest.raises(ValueError, match="pass a callable"):
        train_and_evaluate(model, digits_split, epochs=1, batch_size=8, schedule="cosine",
                           optimizer=keras.optimizers.SGD())


def test_the_same_seed_gives_the_same_metrics_twice():
    """Shuffling, initial weights, dropout and random augmentation all follow the seed."""
    from helpers.harness.augment import augmentation_pipeline
    from helpers.harness.data import load_dataset

    digits_split = load_dataset("digits", n_train=200, n_test=100, validation_split=0.2, seed=0)
    runs = []
    for _ in range(2):
        set_seed(7)
        augmentation = augmentation_pipeline(normalize="rescale", pad=2, flip="horizontal",
                                             rotation=0.05, zoom=0.1, seed=7)
        inputs = keras.Input(digits_split.image_shape)
        x = keras.layers.Flatten()(augmentation(inputs))
        x = keras.layers.Dropout(0.2)(keras.layers.Dense(32, activation="relu")(x))
        model = keras.Model(inputs, keras.layers.Dense(digits_split.num_classes)(x))
        runs.append(train_and_evaluate(model, digits_split, epochs=2, batch_size=32, verbose=0))
    assert runs[0].history == runs[1].history
    assert runs[0].test_top1 == runs[1].test_top1 and runs[0].test_loss == runs[1].test_loss


def _one_step(optimizer, weight, gradient):
    """Apply one optimizer step to a variable holding ``weight``; return the new weight."""
    variable = keras.Variable(np.array(weight, dtype="float32"))
    optimizer.apply_gradients([(keras.ops.convert_to_tensor(np.array(gradient, "float32")), variable)])
    return keras.ops.convert_to_numpy(variable)


def _numpy_adam_first_step(weight, gradient, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Keras's Adam update at step 1 (bias-corrected moments; epsilon outside the square root)."""
    m = (1 - beta_1) * gradient
    v = (1 - beta_2) * gradient**2
    alpha = lr * math.sqrt(1 - beta_2) / (1 - beta_1)
    return -alpha * m / (np.sqrt(v) + epsilon)


@pytest.mark.parametrize("mode", ["per_step", "lr_scaled"])
def test_one_adamw_step_decays_a_known_weight_as_its_mode_says(mode):
    weight = np.array([[2.0, -1.0], [0.5, 4.0]])
    gradient = np.array([[0.3, -0.2], [0.0, 1.5]])
    lr, decay = 1e-3, 1e-4
    factor = 1 - decay if mode == "per_step" else 1 - lr * decay
    # A zero gradient leaves Adam's update at 0: only the decay moves the weight.
    np.testing.assert_allclose(_one_step(adamw(lr, decay, mode), weight, np.zeros((2, 2))),
                               weight * factor, rtol=1e-6)
    # With a gradient, the decay comes first, then Adam's step (NumPy reference).
    expected = weight * factor + _numpy_adam_first_step(weight, gradient, lr)
    np.testing.assert_allclose(_one_step(adamw(lr, decay, mode), weight, gradient),
                               expected, rtol=1e-5, atol=1e-7)


def test_per_step_decay_ignores_the_learning_rate_and_its_schedule():
    weight = np.full((3,), 1.0)
    for lr in (1e-3, 1e-5, warmup_cosine_schedule(1e-3, 100, 10)):  # step 0 of warmup: rate 0
        np.testing.assert_allclose(_one_step(adamw(lr, 0.01, "per_step"), weight, np.zeros(3)),
                                   weight * 0.99, rtol=1e-6)


def test_per_step_adamw_round_trips_through_its_config():
    optimizer = PerStepAdamW(learning_rate=2e-3, weight_decay=5e-4)
    clone = PerStepAdamW.from_config(optimizer.get_config())
    assert clone.per_step_decay == 5e-4 and clone.weight_decay is None
    assert float(keras.ops.convert_to_numpy(clone.learning_rate)) == pytest.approx(2e-3)


def test_a_bad_weight_decay_mode_is_named():
    with pytest.raises(ValueError, match="weight_decay_mode"):
        adamw(1e-3, 1e-4, "per_epoch")


@pytest.mark.parametrize("mode", ["per_step", "lr_scaled"])
def test_a_weight_excluded_from_decay_keeps_its_value_under_a_zero_gradient(mode):
    kept, decayed = keras.Variable(np.full(2, 3.0, "float32")), keras.Variable(np.ones(2, "float32"))
    optimizer = adamw(1e-2, 1e-2, mode)
    optimizer.exclude_from_weight_decay(var_list=[kept])
    for _ in range(3):
        optimizer.apply([keras.ops.zeros(2), keras.ops.zeros(2)], [kept, decayed])
    factor = (1 - 1e-2) if mode == "per_step" else (1 - 1e-2 * 1e-2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(kept), [3.0, 3.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(decayed), [factor**3] * 2, rtol=1e-6)


def test_train_and_evaluate_exempts_the_variables_it_is_given_from_decay(digits_split):
    set_seed(0)
    model = small_classifier(digits_split)
    model(digits_split.x_train[:1])
    exempt, decayed = model.trainable_variables[-1], model.trainable_variables[-2]
    exempt.assign(np.full(exempt.shape, 5.0, "float32"))
    decayed.assign(np.full(decayed.shape, 5.0, "float32"))
    train_and_evaluate(model, digits_split, epochs=1, batch_size=64, weight_decay=0.5,
                       weight_decay_mode="per_step", verbose=0, restore_best=False,
                       exclude_from_weight_decay=[exempt])
    # Adam alone moves a weight by about the learning rate (1e-3) per step at most;
    # a decay of 0.5 per step would have taken 5 to nearly 0 within a few steps.
    steps = math.ceil(len(digits_split.x_train) / 64)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(exempt), 5.0, atol=1.5e-3 * steps)
    assert np.abs(keras.ops.convert_to_numpy(decayed)).max() < 0.5


def test_decay_only_trajectory_multiplies_step_by_step():
    # per_step: (1 - wd) at every step, whatever the rate.
    np.testing.assert_allclose(decay_only_trajectory(8.0, 0.1, "per_step", [0.0, 5.0, 1.0]),
                               [8.0, 7.2, 6.48, 5.832])
    # lr_scaled: (1 - rate * wd) with each step's own rate.
    np.testing.assert_allclose(decay_only_trajectory(2.0, 0.5, "lr_scaled", [0.0, 0.2, 1.0]),
                               [2.0, 2.0, 1.8, 0.9])
    # The case: 1e-4 per step over 1,760 steps takes 8 to 8 * (1 - 1e-4)**1760.
    assert decay_only_trajectory(8.0, 1e-4, "per_step", np.zeros(1760))[-1] == pytest.approx(
        8 * (1 - 1e-4) ** 1760)
    with pytest.raises(ValueError, match="weight_decay_mode"):
        decay_only_trajectory(1.0, 0.1, "per_epoch", [1.0])


def test_training_with_per_step_decay_learns(digits_split):
    set_seed(0)
    model = small_classifier(digits_split)
    result = train_and_evaluate(model, digits_split, epochs=3, batch_size=64, schedule="cosine",
                                weight_decay=1e-3, weight_decay_mode="per_step", verbose=0)
    assert isinstance(model.optimizer, PerStepAdamW)
    assert result.test_top1 > 0.5  # chance is 0.1


def test_shuffled_batches_cover_every_image_once_per_epoch_in_a_new_seeded_order():
    from helpers.harness.feed import ShuffledBatches

    x = np.arange(23, dtype="float32")[:, None] * np.ones((1, 3), "float32")
    y = np.arange(23)
    batches = ShuffledBatches(x, y, 5, seed=1)
    assert len(batches) == 5

    def epoch():
        parts = [batches[i] for i in range(len(batches))]
        assert [len(b[1]) for b in parts] == [5, 5, 5, 5, 3]
        for images, labels in parts:  # images and labels stay paired
            np.testing.assert_array_equal(images[:, 0], labels)
        return np.concatenate([labels for _, labels in parts])

    first = epoch()
    batches.on_epoch_end()
    second = epoch()
    assert sorted(first) == sorted(second) == list(range(23))
    assert list(first) != list(second)
    twin = ShuffledBatches(x, y, 5, seed=1)  # the same seed, the same order
    np.testing.assert_array_equal(first, np.concatenate([twin[i][1] for i in range(5)]))
    with pytest.raises(IndexError):
        batches[5]


def test_feed_auto_prefetches_except_on_jax_or_several_devices_and_rejects_unknown_names():
    from helpers.harness.feed import resolve_feed

    expected = "arrays" if keras.backend.backend() == "jax" else "prefetch"
    assert resolve_feed("auto") == expected
    assert resolve_feed("prefetch") == "prefetch"
    assert resolve_feed("auto", devices=2) == "arrays"
    if keras.backend.backend() == "tensorflow":
        with pytest.raises(ValueError, match="feed='prefetch' does not train 2 TensorFlow"):
            resolve_feed("prefetch", devices=2)
    with pytest.raises(ValueError, match="feed must be one of"):
        resolve_feed("stream")


@pytest.mark.parametrize("feed", ["arrays", "prefetch"])
def test_training_learns_with_either_feed(digits_split, feed):
    set_seed(0)
    model = small_classifier(digits_split)
    result = train_and_evaluate(model, digits_split, epochs=3, batch_size=64, feed=feed,
                                verbose=0)
    assert result.test_top1 > 0.5  # chance is 0.1
    assert result.epochs == 3
