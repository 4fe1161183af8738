import json

import keras
import numpy as np
import pytest

from helpers.harness.data import Dataset
from helpers.harness.records import REQUIRED_FIELDS, describe_runtime, read_record, write_record
from helpers.harness.train import TrainResult


def fake_data():
    x = np.zeros((6, 8, 8, 3), np.uint8)
    y = np.arange(6, dtype=np.int32) % 3
    return Dataset("mine.npz", x, y, x[:2], y[:2], ["a", "b", "c"], x_val=x[:1], y_val=y[:1])


def fake_result():
    return TrainResult(
        history={"loss": [2.0, 1.0], "accuracy": [0.3, 0.6]},
        test_loss=1.1, test_top1=0.55, test_top5=0.82, epochs=2, best_epoch=2,
        parameter_count=1234, train_seconds=10.0, train_images_per_second=500.0,
        epoch_seconds=[6.0, 4.0],
    )


def test_record_has_every_required_field(tmp_path):
    path = write_record(tmp_path / "results", "vit", fake_result(), data=fake_data(),
                        parameters={"epochs": 2})
    assert path == tmp_path / "results" / "vit.json"
    record = json.loads(path.read_text())
    assert set(REQUIRED_FIELDS) <= set(record)
    assert record["notebook"] == "vit" and record["dataset"] == "mine.npz"
    assert record["num_classes"] == 3 and record["image_shape"] == [8, 8, 3]
    assert (record["n_train"], record["n_validation"], record["n_test"]) == (6, 1, 2)
    assert record["backend"] == keras.backend.backend()
    assert record["keras_version"] == keras.__version__
    assert record["test_top1"] == 0.55 and record["parameter_count"] == 1234
    assert record["parameters"] == {"epochs": 2}
    assert record["history"]["loss"] == [2.0, 1.0]
    assert read_record(path)["epochs"] == 2


def test_extra_fields_are_kept(tmp_path):
    path = write_record(tmp_path, "spt", fake_result(), data=fake_data(),
                        extra={"runs": {"vanilla": {"test_top1": 0.5}}})
    assert json.loads(path.read_text())["runs"]["vanilla"]["test_top1"] == 0.5


def test_a_record_without_required_fields_is_rejected(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"notebook": "vit"}))
    with pytest.raises(ValueError, match="lacks backend, dataset"):
        read_record(path)


def test_environment_line_names_backend_and_version():
    line = describe_runtime()
    assert keras.backend.backend() in line and keras.__version__ in line
