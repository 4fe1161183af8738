import pytest

from helpers.harness import parameters

COMMON = {"dataset": str, "epochs": int, "batch_size": int, "seed": int, "n_train": int,
          "n_test": int, "results_dir": str}


def namespace(**values):
    defaults = {"dataset": "digits", "epochs": 2, "batch_size": 8, "seed": 0, "n_train": 0,
                "n_test": 0, "results_dir": "results"}
    annotations = dict(COMMON)
    for name, value in values.items():
        annotations.setdefault(name, type(value))
    ns = {**defaults, **values}
    ns["__annotations__"] = {**annotations, "learning_rate": float, "units": list[int]}
    ns.setdefault("learning_rate", 1e-3)
    ns.setdefault("units", [8, 4])
    return ns


def test_collect_returns_the_annotated_values():
    values = parameters.collect(namespace())
    assert values["epochs"] == 2 and values["units"] == [8, 4]
    assert "__annotations__" not in values


def test_an_int_is_accepted_for_a_float_and_converted():
    values = parameters.collect(namespace(learning_rate=1))
    assert values["learning_rate"] == 1.0 and isinstance(values["learning_rate"], float)


@pytest.mark.parametrize("name,value,message", [
    ("epochs", "10", "parameter epochs must be an integer, got '10'"),
    ("epochs", True, "parameter epochs must be an integer, got True"),
    ("learning_rate", "fast", "parameter learning_rate must be a number"),
    ("units", [8, "4"], "parameter units must be a list of int"),
])
def test_a_wrong_type_names_the_parameter(name, value, message):
    with pytest.raises(ValueError, match=message):
        parameters.collect(namespace(**{name: value}))


def test_the_common_parameters_are_required():
    ns = namespace()
    del ns["__annotations__"]["seed"]
    with pytest.raises(ValueError, match="must declare seed"):
        parameters.collect(ns)


def test_range_checks_name_the_parameter():
    values = {"epochs": 0, "units": [8, 0], "split": 1.0, "mode": "x", "n_train": -1}
    with pytest.raises(ValueError, match="parameter epochs must be > 0, got 0"):
        parameters.check(values, positive=["epochs"])
    with pytest.raises(ValueError, match=r"parameter units must be > 0, got \[8, 0\]"):
        parameters.check(values, positive=["units"])
    with pytest.raises(ValueError, match=r"parameter split must be in \[0, 1\)"):
        parameters.check(values, fractions=["split"])
    with pytest.raises(ValueError, match="parameter n_train must be >= 0"):
        parameters.check(values, non_negative=["n_train"])
    with pytest.raises(ValueError, match="parameter mode must be one of 'a', 'b', got 'x'"):
        parameters.check(values, choices={"mode": ("a", "b")})
    with pytest.raises(ValueError, match="parameter patch_size must divide"):
        parameters.require(False, "patch_size", "must divide image_size")


@pytest.mark.parametrize("values,message", [
    ({"dataset": "imagenet"}, "parameter dataset must be one of cifar10, cifar100, digits or the "
                              "path of an existing .npz file, image folder or .zip of one, "
                              "got 'imagenet'"),
    ({"dataset": "missing.npz"}, "parameter dataset must be one of .* got 'missing.npz'"),
    ({"epochs": 0}, "parameter epochs must be > 0, got 0"),
    ({"batch_size": -8}, "parameter batch_size must be > 0, got -8"),
    ({"seed": -1}, "parameter seed must be >= 0"),
    ({"n_test": -5}, "parameter n_test must be >= 0"),
    ({"validation_split": 1.5}, r"parameter validation_split must be in \[0, 1\)"),
])
def test_collect_checks_the_shared_parameters_of_every_notebook(values, message):
    with pytest.raises(ValueError, match=message):
        parameters.collect(namespace(**values))


@pytest.mark.parametrize("values,message", [
    ({"learning_rate": 0.0}, "parameter learning_rate must be > 0, got 0.0"),
    ({"lr_schedule": "step"}, "parameter lr_schedule must be one of 'constant', 'cosine', "
                              "got 'step'"),
    ({"weight_decay_mode": "decoupled"}, "parameter weight_decay_mode must be one of "
                                         "'lr_scaled', 'per_step', got 'decoupled'"),
    ({"precision": "float16"}, "parameter precision must be one of 'float32', "
                               "'mixed_bfloat16', 'mixed_float16', got 'float16'"),
    ({"precision": "bfloat16"}, "parameter precision must be one of .* got 'bfloat16'"),
])
def test_collect_checks_the_parameters_several_notebooks_declare(values, message):
    with pytest.raises(ValueError, match=message):
        parameters.collect(namespace(**values))


@pytest.mark.parametrize("precision", parameters.PRECISIONS)
def test_each_keras_dtype_policy_the_book_supports_is_a_valid_precision(precision):
    assert parameters.collect(namespace(precision=precision))["precision"] == precision


def test_an_existing_npz_is_a_valid_dataset(tmp_path):
    path = tmp_path / "mine.npz"
    path.write_bytes(b"")  # only its existence is checked here; load_dataset reads it
    assert parameters.collect(namespace(dataset=str(path)))["dataset"] == str(path)


def test_rules_name_the_parameter_with_a_message_from_the_values():
    values = parameters.Parameters({"image_size": 72, "patch_size": 5})
    divides = ("patch_size", lambda p: p.image_size % p.patch_size == 0,
               "must divide image_size={image_size}")
    with pytest.raises(ValueError, match="parameter patch_size must divide image_size=72, got 5"):
        parameters.apply_rules(values, [divides])
    computed = ("patch_size", lambda p: False, lambda p: f"leaves {p.image_size % p.patch_size} px")
    with pytest.raises(ValueError, match="parameter patch_size leaves 2 px, got 5"):
        parameters.apply_rules(values, [computed])
    parameters.apply_rules(parameters.Parameters({"image_size": 72, "patch_size": 6}), [divides])


def test_an_injected_name_the_notebook_does_not_declare_fails_with_suggestions():
    ns = namespace()
    ns["In"] = ["", "epochs: int = 2  # ...", "# Parameters\nepoch = 3\n"]
    ns["epoch"] = 3
    with pytest.raises(ValueError, match="parameter epoch is not declared by this notebook: "
                                         "did you mean epochs\\?"):
        parameters.collect(ns)
    ns["In"][-1] = "# Parameters\nepochs = 3\n"
    assert parameters.collect(ns)["epochs"] == 2  # the namespace's value; papermill set it


@pytest.mark.parametrize("name,declared,expected", [
    ("latent_dim", ["num_latents", "num_heads", "dataset"], ["num_latents"]),
    ("patchsize", ["patch_size", "image_size"], ["patch_size"]),
    ("lr", ["learning_rate", "seed"], []),
    ("projection_dim", ["projected_dim", "precision"], ["projected_dim"]),
    ("dropout", ["dropout_rate", "attention_dropout", "head_dropout_rate", "seed"],
     ["attention_dropout", "dropout_rate", "head_dropout_rate"]),
])
def test_closest_names_by_spelling_or_by_a_shared_word(name, declared, expected):
    assert parameters.closest(name, declared) == expected


def test_the_parameters_cells_own_values_are_read_from_the_input_history():
    ns = {"__annotations__": {"a": int, "b": list[int]}, "a": 5, "b": [1],
          "In": ["", "a: int = 3  # x\nb: list[int] = [1, 2]  # y\n", "# Parameters\na = 5\n"]}
    assert parameters.cell_defaults(ns) == {"a": 3, "b": [1, 2]}
    assert parameters.cell_defaults({"__annotations__": {"a": int}, "a": 1}) is None


def test_parameters_read_as_attributes_and_stay_read_only():
    p = parameters.Parameters({"patch_size": 6})
    assert p.patch_size == 6 and p == {"patch_size": 6}
    with pytest.raises(AttributeError, match="no parameter 'image_size'"):
        p.image_size
    with pytest.raises(AttributeError, match="read-only"):
        p.patch_size = 4
