"""Shared fixtures. The tests run offline on the CPU, TensorFlow backend by default."""

import os
import re
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ["KERAS_BACKEND"] == "jax" and "xla_backend_optimization_level" not in \
        os.environ.get("XLA_FLAGS", ""):
    # The tests' models are tiny: on JAX most of a test is XLA compiling each new
    # operation, not running it. The lowest backend optimization level compiles in
    # about half the time (tests/test_cct.py: 57 s -> 32 s on 2 cores). Set before
    # JAX starts; a session on another backend leaves the notebooks it runs on JAX alone.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    # pytest -n N: N test processes share the CPU's cores, and so do the notebook
    # kernels they start (which inherit this environment). OpenMP, under PyTorch's
    # CPU kernels and NumPy's BLAS, starts a thread per core that spins while it
    # waits: two such processes on two cores spend their time waiting on each other
    # (the five notebooks on PyTorch beside the five on JAX, 2 cores: 545 s with a
    # thread per core, 192 s with one). Each process gets its share of the cores.
    # TensorFlow's and XLA's own thread pools are left alone: one TensorFlow thread
    # per worker measured no faster, and XLA's flags did not limit JAX's threads.
    # Set before NumPy or PyTorch is imported.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ["OMP_NUM_THREADS"] = str(max(1, (cores or 1) // workers))

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``keras_free`` run no Keras code: the same on every backend, they
    run in the TensorFlow session (the default) and are deselected in the others."""
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        return
    free = [item for item in items if item.get_closest_marker("keras_free")]
    if free:
        config.hook.pytest_deselected(items=free)
        items[:] = [item for item in items if not item.get_closest_marker("keras_free")]


@pytest.fixture(autouse=True)
def same_random_state_for_every_test(request):
    """Each test starts from the same random state (Python, NumPy, the backend, Keras's
    global seed generator), whatever ran before it in its worker: under pytest -n the
    tests a worker runs, and their order, change from run to run, and an unseeded
    weight initialization made a threshold test pass or fail by which worker it
    landed on. Tests that run no Keras code skip the import."""
    if request.node.get_closest_marker("keras_free"):
        return
    import keras

    keras.utils.set_random_seed(0)


ROOT = Path(__file__).resolve().parent.parent
# The harness call that every training notebook makes right after its parameters cell.
START_CALL = re.compile(r"\bstart\(\s*globals\(\)")


@pytest.fixture(scope="session")
def digits():
    from helpers.harness.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def digits_split():
    """600 training digits (a fifth held out for validation) and 200 test digits."""
    from helpers.harness.data import load_dataset

    return load_dataset("digits", n_train=600, n_test=200, validation_split=0.2, seed=0)


def small_classifier(data, dropout=0.0):
    """A one-hidden-layer classifier of ``data``'s images: trains in a second."""
    import keras

    inputs = keras.Input(data.image_shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, keras.layers.Dense(data.num_classes)(x))


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory):
    """The whole book executed with the smoke profile on TensorFlow and built.

    The README's first command makes exactly this build in ``_build/``: when
    that build is complete and was made from the current sources (the digest
    its runner recorded), the tests check it instead of executing the book a
    second time. Otherwise (``BOOK_FRESH_BUILD=1`` forces it) it is built
    here, once per session.
    """
    from helpers.book import runner as book

    if not os.environ.get("BOOK_FRESH_BUILD"):
        built = book.reusable_build(ROOT, Path("_build"), "smoke", "tensorflow")
        if built is not None:
            return built
    build_dir = tmp_path_factory.mktemp("book")
    return book.run("smoke", source=ROOT, build_dir=build_dir, backend="tensorflow")


def executed_notebook(smoke_build, name: str):
    """The smoke build's own executed copy of ``book/<name>.ipynb``: the site's page
    may show a published run instead (``helpers.book.publish``)."""
    import nbformat

    return nbformat.read(smoke_build["executed"] / "book" / f"{name}.ipynb", as_version=4)


def shown_records(smoke_build) -> dict:
    """The records of the runs the site's pages show, by notebook name: the published
    ones when the smoke build shows published runs, else the build's own."""
    from helpers.book import publish
    from helpers.book import runner as book
    from helpers.harness.records import read_record
    from helpers.papers import MODELS

    if smoke_build["executed"] != smoke_build["site"]:
        pages = book.load_profile(ROOT, "smoke")["pages"]
        folder = smoke_build["site"] / publish.RUNS / pages / publish.RECORDS
    else:
        folder = smoke_build["site"] / "book" / "results"
    return {name: read_record(folder / f"{name}.json") for name in MODELS}


def start_cell_namespace(notebook, parameters: dict) -> dict:
    """Run ``notebook``'s parameters cell, ``parameters`` injected the way papermill
    injects them, and its ``start`` cell, in this process; returns the namespace.

    Papermill's kernel would import Keras again for every case: this runs the
    same cells in a second. The injected cell is papermill's own translation of
    ``parameters``, and it is also put in ``In``, IPython's input history, where
    ``start`` looks for names the notebook does not declare.
    """
    import nbformat
    from papermill.translators import translate_parameters

    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    index = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    start_cell = next(c for c in code[index + 1:] if START_CALL.search(c.source))
    injected = translate_parameters("python3", "python", parameters, "Parameters")
    namespace = {"__name__": "__main__", "In": ["", code[index].source, injected]}
    exec(compile(code[index].source, f"{notebook.name}:parameters", "exec"), namespace)
    exec(compile(injected, f"{notebook.name}:injected", "exec"), namespace)
    exec(compile(start_cell.source, f"{notebook.name}:start", "exec"), namespace)
    return namespace


def assert_stops_before_loading_data(notebook, parameters, message, monkeypatch):
    """``notebook``'s start cell, given ``parameters``, raises one ValueError containing
    ``message`` before any data is loaded (in-process: see ``start_cell_namespace``)."""
    import helpers.harness.data

    def no_loading(*args, **kwargs):
        raise AssertionError("the start cell loaded data before failing")

    monkeypatch.setattr(helpers.harness.data, "load_dataset", no_loading)
    with pytest.raises(ValueError) as failure:
        start_cell_namespace(notebook, parameters)
    assert message in str(failure.value)


def infer(layer, *inputs, **kwargs):
    """``layer(*inputs, training=False, **kwargs)`` (a layer or a model, built), as NumPy.

    On JAX it runs as one compiled function. Called eagerly there, every operation
    of the layer is compiled on its own, and XLA's cost per compilation, not the
    arithmetic, is most of a tiny model's test (a Perceiver's logits: about 200
    compilations, 8 of the test's 10 seconds).
    """
    import keras

    if keras.backend.backend() != "jax":
        outputs = layer(*inputs, training=False, **kwargs)
    else:
        import jax

        def call(trainable, non_trainable, *args):
            return layer.stateless_call(trainable, non_trainable, *args, training=False,
                                        **kwargs)[0]

        outputs = jax.jit(call)([v.value for v in layer.trainable_variables],
                                [v.value for v in layer.non_trainable_variables], *inputs)
    return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)
