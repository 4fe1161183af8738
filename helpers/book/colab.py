"""The Colab badge and setup cell at the top of every notebook, from ``_config.yml``.

Each notebook of the table of contents opens with two generated cells:

* a markdown cell with an "Open in Colab" badge that links to the committed
  notebook on the repository's branch (tagged ``remove-cell``: the site has
  its own Colab launch button, and the badge is an image from another site);
* after the title, a setup cell that, only on Colab, sets the Keras backend the
  reader picks, installs this package from the same repository and branch, and
  says whether a GPU is attached and how to attach one. Elsewhere it does
  nothing: locally and under papermill the environment chooses the backend.

The repository URL and branch are written once, in ``_config.yml``; after
changing them run ``python -m helpers.book.colab`` to rewrite the cells
(``--check`` only reports notebooks whose cells disagree, as the tests do).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

BADGE_TAG = "colab-badge"
SETUP_TAG = "colab-setup"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

SETUP_TEMPLATE = '''\
# Colab setup: does nothing outside Colab. On Colab, run it first; to switch
# backends later, change COLAB_BACKEND, restart the session and run it again.
COLAB_BACKEND = "tensorflow"  # Keras backend on Colab: "tensorflow", "jax" or "torch"

import os
import sys

if "google.colab" in sys.modules:
    import subprocess

    os.environ["KERAS_BACKEND"] = COLAB_BACKEND  # read when Keras is first imported
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "git+{url}@{branch}"], check=True)
    gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    if gpu.returncode == 0 and "GPU" in gpu.stdout:
        print(gpu.stdout.strip())
    else:
        print("No GPU attached: Runtime > Change runtime type > a GPU accelerator, then "
              "run this cell again. The default parameters are sized for a GPU.")
    print(f"Keras backend: {{COLAB_BACKEND}}")'''


def repository(source: Path) -> dict:
    """``url``, ``branch``, ``slug`` (org/name) and ``colab_url`` from ``_config.yml``."""
    config = yaml.safe_load((source / "_config.yml").read_text())
    url = config["repository"]["url"].rstrip("/")
    return {
        "url": url,
        "branch": config["repository"].get("branch", "main"),
        "slug": url.removeprefix("https://github.com/"),
        "colab_url": config["launch_buttons"]["colab_url"].rstrip("/"),
    }


def colab_link(source: Path, notebook: Path) -> str:
    """The Colab URL that opens the committed ``notebook`` (a path relative to ``source``)."""
    repo = repository(source)
    return f"{repo['colab_url']}/github/{repo['slug']}/blob/{repo['branch']}/{notebook.as_posix()}"


def badge_source(source: Path, notebook: Path) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_link(source, notebook)})"


def setup_source(source: Path) -> str:
    repo = repository(source)
    return SETUP_TEMPLATE.format(url=repo["url"], branch=repo["branch"])


def _tagged(nb, tag):
    return [cell for cell in nb.cells if tag in cell.metadata.get("tags", [])]


def sync_notebook(source: Path, notebook: Path, write: bool = True) -> bool:
    """Put the badge first and the setup cell right after the title; True if it changed."""
    path = source / notebook
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    cells = [c for c in nb.cells if not {BADGE_TAG, SETUP_TAG} & set(c.metadata.get("tags", []))]
    badge = nbformat.v4.new_markdown_cell(badge_source(source, notebook))
    badge.metadata["tags"] = [BADGE_TAG, "remove-cell"]
    setup = nbformat.v4.new_code_cell(setup_source(source))
    setup.metadata["tags"] = [SETUP_TAG, "hide-cell"]  # collapsed on the site
    old_badge, old_setup = _tagged(nb, BADGE_TAG), _tagged(nb, SETUP_TAG)
    if old_badge:
        badge.id = old_badge[0].id  # stable ids: no churn when nothing changed
    if old_setup:
        setup.id = old_setup[0].id
    if not cells or cells[0].cell_type != "markdown" or not cells[0].source.startswith("# "):
        raise ValueError(f"{notebook} must start with a markdown cell holding its title")
    nb.cells = [badge, cells[0], setup, *cells[1:]]
    changed = nbformat.writes(nb) != before
    if changed and write:
        nbformat.write(nb, path)
    return changed


def main(argv=None) -> int:
    from helpers.book.runner import toc_notebooks

    parser = argparse.ArgumentParser(
        description="Write (or --check) the Colab badge and setup cell of every notebook."
    )
    parser.add_argument("--check", action="store_true", help="report, change nothing")
    parser.add_argument("--source", type=Path, default=Path("."), help="the repository root")
    args = parser.parse_args(argv)
    stale = [nb for nb in toc_notebooks(args.source)
             if sync_notebook(args.source, nb, write=not args.check)]
    for notebook in stale:
        print(f"{'out of date' if args.check else 'updated'}: {notebook}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
