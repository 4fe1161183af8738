"""The two calls that frame every training notebook: ``start`` and ``Run.finish``.

Right after its parameters cell, a notebook calls

    run = start(globals(), "vit", positive="patch_size projection_dim", ...)

which checks the parameters (types, the shared rules, the notebook's own
ranges and rules, and names papermill was given that the notebook does not
declare), prints the Keras backend, versions, devices and the run's
precision, seeds Python, NumPy and the backend, turns on data-parallel
training when asked, and loads the dataset. Everything fails before any data
is loaded, with one ``ValueError`` that names the parameter. ``run.p`` holds
the checked parameters (``run.p.patch_size``), ``run.data`` the dataset.

The notebook's model is built inside ``with run.precision():``, so that it
computes in the dtype policy of the ``precision`` parameter (``"float32"``,
``"mixed_bfloat16"`` or ``"mixed_float16"``); everything else, the checks of
each layer against NumPy included, stays in float32.

``run.train(model)`` trains with the notebook's budget and optimizer
parameters and a backup folder of its own (so a killed run resumes), and
``run.finish(result)`` writes the run's record and glues its headline numbers
for the site. Used by every training notebook.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from helpers.harness import parameters as checks
from helpers.harness.parameters import Parameters, Rule


class Run:
    """One execution of a notebook: its name, parameters, devices and data."""

    def __init__(self, name: str, p: Parameters, data=None, devices=(), defaults=None):
        self.name = name
        self.p = p
        self.data = data
        self.devices = list(devices)
        # The parameters cell's own values (the full-size recipe), whatever papermill changed.
        self.defaults = defaults if defaults is not None else p

    def backup_dir(self, suffix: str = "") -> Path:
        """The backup folder of this run's training (``name`` + ``suffix``, parameters' hash)."""
        from helpers.harness.resume import backup_dir_for

        return backup_dir_for(self.p.results_dir, self.name + suffix, self.p)

    def precision(self):
        """A ``with`` block whose models compute in the ``precision`` parameter's dtype policy.

        ``"mixed_bfloat16"`` and ``"mixed_float16"`` keep the weights in
        float32 and compute in 16 bits; for ``"mixed_float16"`` Keras's
        ``compile`` (in ``train``) wraps the optimizer in a
        ``LossScaleOptimizer``. A notebook that declares no ``precision``
        builds in float32.
        """
        return dtype_policy(self.p.get("precision", "float32"))

    def train(self, model, *, backup: str = "", **options):
        """``train_and_evaluate`` with this notebook's budget, optimizer settings and backup.

        The epochs, batch size, learning rate, weight decay, schedule, warmup and
        label smoothing come from the parameters the notebook declares;
        ``options`` add to them or override them (``optimizer=``,
        ``callbacks=``). ``backup`` names a second training of the same
        notebook (its backup folder gets that suffix). Prints the result's summary.
        """
        from helpers.harness.train import train_and_evaluate

        p = self.p
        settings = {"epochs": p.epochs, "batch_size": p.batch_size}
        if "seed" in p:
            settings["seed"] = p.seed
        for option, parameter in (("learning_rate", "learning_rate"),
                                  ("weight_decay", "weight_decay"),
                                  ("weight_decay_mode", "weight_decay_mode"),
                                  ("schedule", "lr_schedule"),
                                  ("warmup_fraction", "warmup_fraction"),
                                  ("label_smoothing", "label_smoothing")):
            if parameter in p:
                settings[option] = p[parameter]
        settings.update(options)
        result = train_and_evaluate(model, self.data, backup_dir=self.backup_dir(backup),
                                    **settings)
        print(result.summary())
        return result

    def finish(self, result, *, extra: Mapping | None = None, glue: Mapping | None = None,
               results_dir: str | os.PathLike | None = None) -> Path:
        """Write ``<results_dir>/<name>.json`` and glue its numbers (and ``glue``) for the site."""
        from helpers.harness.records import glue_values, write_record

        path = write_record(results_dir or self.p.results_dir, self.name, result,
                            data=self.data, parameters=self.p, extra=dict(extra or {}))
        glue_values(dict(glue or {}))
        print(f"record written to {path}")
        return path


def start(
    namespace: Mapping,
    name: str,
    *,
    positive: str | Iterable[str] = (),
    non_negative: str | Iterable[str] = (),
    fractions: str | Iterable[str] = (),
    choices: Mapping[str, Iterable] | None = None,
    rules: Iterable[Rule] = (),
    load_data: bool = True,
) -> Run:
    """Check the parameters of notebook ``name``, then set up its run.

    Args:
        namespace: the notebook's ``globals()``, right after its parameters cell.
        name: the notebook's name (``"vit"``): its record is ``<name>.json``.
        positive, non_negative, fractions: parameters that must be > 0, >= 0,
            in [0, 1) (a list, or one string of names separated by spaces).
            Shared parameters (epochs, learning_rate, ...) are checked anyway.
        choices: ``{parameter: allowed values}``.
        rules: the notebook's own rules, ``(parameter, test, message)``
            (``helpers.harness.parameters.apply_rules``).
        load_data: ``False`` for a page that trains nothing.

    Returns the ``Run``; raises one ``ValueError`` naming the parameter on any
    bad value, before anything is seeded or loaded. ``run.defaults`` holds the
    values written in the parameters cell (before papermill's injection; the
    current values outside IPython).

    Every call sets Keras's global dtype policy to float32, so that a
    mixed-precision run earlier in the same process (a kernel, a test session)
    leaves nothing behind; the ``precision`` parameter applies to what is built
    inside ``with run.precision():``.
    """
    import keras

    p = checks.collect(namespace, common=load_data)
    defaults = checks.cell_defaults(namespace)
    checks.check(p, positive=positive, non_negative=non_negative, fractions=fractions,
                 choices=choices)
    checks.apply_rules(p, rules)
    keras.config.set_dtype_policy("float32")
    if not load_data:
        return Run(name, p, defaults=defaults)

    from helpers.harness.data import load_dataset
    from helpers.harness.distribute import use_data_parallel
    from helpers.harness.records import describe_runtime
    from helpers.harness.train import set_seed

    print(describe_runtime())
    print(describe_precision(p.get("precision", "float32")))
    set_seed(p.seed)
    devices = use_data_parallel(p.get("data_parallel", False))
    print("training on", ", ".join(devices))
    data = load_dataset(p.dataset, n_train=p.n_train, n_test=p.n_test,
                        validation_split=p.get("validation_split", 0.0), seed=p.seed)
    print(data.summary())
    return Run(name, p, data, devices, defaults=defaults)


def describe_precision(precision: str) -> str:
    """The line ``start`` prints about the run's ``precision``."""
    if precision == "float32":
        return "precision float32: the model computes and keeps its weights in float32"
    compute = precision.removeprefix("mixed_")
    scaling = ", the loss scaled against underflow" if precision == "mixed_float16" else ""
    return (f"precision {precision}: the model computes in {compute} and keeps its weights "
            f"in float32{scaling}; the checks of its layers run in float32")


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Keras's global dtype policy inside the block, the one before restored after it.

    A layer takes the global policy when it is created: a model built inside
    computes in ``policy`` for good, wherever it is called, trained or saved.
    """
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)
