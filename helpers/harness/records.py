"""Result records: one JSON file per executed notebook, and glued numbers.

Each notebook ends with ``run.finish`` (``helpers.harness.run``), which calls
``write_record``: it writes ``<results_dir>/<notebook>.json`` and glues the
headline numbers (myst-nb ``glue``) so that pages of the site can quote them
from the executed notebook instead of typing them. Used by every notebook.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

import keras

from helpers.harness.data import Dataset
from helpers.harness.train import TrainResult

REQUIRED_FIELDS = (
    "notebook",
    "backend",
    "dataset",
    "epochs",
    "parameter_count",
    "test_top1",
    "test_top5",
    "train_seconds",
    "train_images_per_second",
    "keras_version",
)


def runtime() -> dict:
    """Backend, versions and devices of the running process."""
    backend = keras.backend.backend()
    info = {
        "backend": backend,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    if backend == "tensorflow":
        import tensorflow as tf

        info["backend_version"] = tf.__version__
        info["devices"] = [d.name for d in tf.config.list_logical_devices()]
    elif backend == "jax":
        import jax

        info["backend_version"] = jax.__version__
        info["devices"] = [str(d) for d in jax.devices()]
    elif backend == "torch":
        import torch

        info["backend_version"] = torch.__version__
        info["devices"] = ["cpu"] + [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    else:  # numpy or a future backend
        info["backend_version"] = None
        info["devices"] = []
    return info


def describe_runtime() -> str:
    """One line naming backend, versions and devices, printed by each notebook."""
    env = runtime()
    return (
        f"Keras {env['keras_version']} on {env['backend']} {env['backend_version']} "
        f"(Python {env['python_version']}); devices: {', '.join(env['devices']) or 'none'}"
    )


def write_record(
    results_dir: str | os.PathLike,
    notebook: str,
    result: TrainResult,
    *,
    data: Dataset,
    parameters: dict | None = None,
    extra: dict | None = None,
    glue_prefix: str | None = None,
) -> Path:
    """Write ``<results_dir>/<notebook>.json`` and glue its headline numbers.

    Args:
        results_dir: folder of the records (created if missing).
        notebook: the notebook's name without extension, e.g. ``"vit"``.
        result: what ``train_and_evaluate`` returned.
        data: the dataset the run used (its name, classes and sizes are recorded).
        parameters: the notebook's parameters, stored for reproducibility; their
            ``precision`` (the model's dtype policy, ``"float32"`` if absent) is
            also a field of its own.
        extra: more fields for this notebook's record (e.g. a second run).
        glue_prefix: prefix of the glued names (default: ``notebook``).

    Returns the path of the written file.
    """
    env = runtime()
    record = {
        "notebook": notebook,
        "backend": env["backend"],
        "dataset": data.name,
        "num_classes": data.num_classes,
        "image_shape": list(data.image_shape),
        "n_train": len(data.x_train),
        "n_validation": 0 if data.x_val is None else len(data.x_val),
        "n_test": len(data.x_test),
        "epochs": result.epochs,
        "parameter_count": result.parameter_count,
        "test_top1": result.test_top1,
        "test_top5": result.test_top5,
        "test_loss": result.test_loss,
        "best_epoch": result.best_epoch,
        "resumed_epochs": result.resumed_epochs,
        "train_seconds": result.train_seconds,
        "train_images_per_second": result.train_images_per_second,
        "epoch_seconds": result.epoch_seconds,
        "keras_version": env["keras_version"],
        "backend_version": env["backend_version"],
        "python_version": env["python_version"],
        "devices": env["devices"],
        "precision": (parameters or {}).get("precision", "float32"),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "parameters": parameters or {},
        "history": result.history,
    }
    record.update(extra or {})
    path = Path(results_dir) / f"{notebook}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")

    prefix = glue_prefix or notebook
    glue_values(
        {
            f"{prefix}_test_top1": round(100 * result.test_top1, 2),
            f"{prefix}_test_top5": round(100 * result.test_top5, 2),
            f"{prefix}_parameter_count": result.parameter_count,
            f"{prefix}_epochs": result.epochs,
            f"{prefix}_train_seconds": round(result.train_seconds, 1),
            f"{prefix}_images_per_second": round(result.train_images_per_second, 1),
            f"{prefix}_dataset": data.name,
            f"{prefix}_backend": env["backend"],
        }
    )
    return path


def glue_values(values: dict) -> None:
    """Glue each value under its name for the site (no-op without myst-nb).

    myst-nb is a build dependency of the site, not of the notebooks: on Colab
    or in a bare Jupyter the values are simply not glued. Numbers are cited
    with ``{glue:text}`name```, strings with ``{glue:md}`name```.
    """
    try:
        from myst_nb import glue
    except ImportError:
        return
    for name, value in values.items():
        glue(name, _Text(value) if isinstance(value, str) else value, display=False)


class _Text(str):
    """A string whose repr is itself: ``{glue:text}`` shows it without quotes."""

    def __repr__(self):
        return str(self)


def read_record(path: str | os.PathLike) -> dict:
    """Load a record and check it has every required field."""
    record = json.loads(Path(path).read_text())
    missing = [field for field in REQUIRED_FIELDS if field not in record]
    if missing:
        raise ValueError(f"record {path} lacks {', '.join(missing)}")
    return record


def _jsonable(value):
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)

