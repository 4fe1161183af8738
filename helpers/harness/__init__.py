"""What every training notebook runs on: the harness around the papers' code.

``run`` (``start`` and ``Run.finish``: the two calls that frame a notebook),
``parameters`` (parameter checks), ``data`` (datasets), ``augment`` (input
pipelines as Keras layers), ``feed`` (how training batches reach ``fit``),
``train`` (the training loop), ``resume`` (backups
that let a killed run resume), ``records`` (result records and glued numbers),
``plots`` (figures), ``explorers`` (widgets that keep working on the static
site), ``distribute`` (data-parallel training) and ``measure`` (peak device
memory of a call).

    from helpers.harness import start
    run = start(globals(), "vit", positive="patch_size", ...)
"""

from helpers.harness.run import Run, start

__all__ = ["Run", "start"]
