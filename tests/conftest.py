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


def assert_stops_before_loading_data(notebook, tmp_path, parameters, message):
    """Run ``notebook`` with bad ``parameters``: one ValueError with ``message``,
    raised in the checking cell, before any data was loaded. Returns the executed copy."""
    import nbformat
    import papermill

    output = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters,
                                   kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    assert failure.value.ename == "ValueError"
    assert message in failure.value.evalue
    executed = nbformat.read(output, as_version=4)
    assert not any("load_dataset(" in c.source and c.get("execution_count") for c in executed.cells)
    return executed
