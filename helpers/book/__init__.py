"""The book's build tooling: nothing here is imported by a notebook that trains.

``runner`` (``python -m helpers.book``: execute the notebooks with papermill,
build the site), ``publish`` (executed runs committed with their provenance,
shown by the site, and their staleness), ``export`` (the papers' modules generated from the notebooks'
``# @save`` cells), ``colab`` (the notebooks' Colab badge and setup cell),
``vendor`` (the site's pinned JavaScript), ``site`` (the site's Sphinx
extension), ``bench`` (the training-throughput benchmark) and ``flops``
(FLOPs counted by XLA).
"""
