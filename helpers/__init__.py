"""The code the book's notebooks share, arranged by kind.

* ``helpers.papers``: the five papers' layers and model builders. Every module
  but ``layers`` is generated from its notebook's ``# @save`` cells (all five
  paper modules are); ``build(name, ...)`` calls a paper's one builder.
* ``helpers.harness``: what every training notebook runs on: ``start`` and
  ``Run.finish`` (the two calls around a notebook), parameter checks, datasets,
  input pipelines, the training loop, crash-resume, records, figures, widgets,
  data-parallel training and memory readings.
* ``helpers.book``: the book's build tooling, never imported by a notebook that
  trains: the runner (``python -m helpers.book``), the exporter, the Colab cells,
  the vendored JavaScript, the site's Sphinx extension, the benchmark and the
  FLOP counter.
"""

__version__ = "0.1.0"
