"""Shared fixtures. The tests run offline on the CPU, TensorFlow backend by default."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def digits():
    from helpers.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory):
    """The whole book executed with the smoke profile and built, once per session."""
    from helpers import book

    build_dir = tmp_path_factory.mktemp("book")
    return book.run("smoke", source=ROOT, build_dir=build_dir)
