"""Execute the book's notebooks with papermill, then build the site.

    python -m helpers.book --profile smoke              # offline, minutes on a CPU
    python -m helpers.book --profile smoke --jobs 2     # two notebooks at a time
    python -m helpers.book --profile full --backend jax # the papers' recipes, on a GPU
    python -m helpers.book --profile smoke --notebooks vit -p epochs 3 --no-html
    python -m helpers.book --profile smoke --notebooks cct   # again, keeping the other pages
    python -m helpers.book --profile cifar10-cpu --backend jax --cpu-devices 2   # both cores

Every notebook listed in ``_toc.yml`` is executed with the parameters of the
chosen profile (``profiles.yml``) into a build tree that mirrors the source
(``_build/site/book/<name>.ipynb``), so relative paths and the Colab links to
the committed notebooks stay right. The site is then built from the executed
copies with Jupyter Book, execution off and warnings as errors:
``_build/site/_build/html/index.html``.

With ``--notebooks``, only those notebooks are executed; the site keeps the
executed copies of the others from the previous build in the same build tree.
Summary pages (``SUMMARY_PAGES``: the results page, which reads every
notebook's record, and the performance page, which reads the committed
benchmark records) run after the others, on every run; the results page is
told the profile's name (its ``profile`` parameter). The benchmark records
(``BENCHMARK_FOLDERS``) are copied into the build tree, so the performance
page finds them at the same relative path as in the source.

A profile with ``pages: <profile>`` (``smoke`` has ``pages: cifar10-cpu``)
still executes every notebook, then shows on the site the runs published for
that profile (``helpers.book.publish``) instead of its own paper pages; its own
executed copies stay in ``_build/executed/book/`` and its records in
``_build/site/book/results/``, and the results page reads the published
records.

A profile's ``common`` values and ``-p`` overrides go to the notebooks that
declare them. A common name that no notebook of the book declares, an override
that no executed notebook declares, or a name of a notebook's own section that
the notebook does not declare is rejected before anything runs (papermill
itself would only warn).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from helpers.book import publish

BACKENDS = ("tensorflow", "jax", "torch")
# TensorFlow's C++ start-up logs ("I0000 00:00:17... port.cc:153] oneDNN ...") are
# written before absl logging is initialised, so no setting silences them; the
# kernel captures them as stderr output. They are removed from executed copies.
_NATIVE_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\]|WARNING: All log messages before absl"
    r"|To enable the following instructions:)"
)
SITE_FILES = ("_config.yml", "_toc.yml", "references.bib")
# Static files of the site: the vendored widget manager and MathJax (helpers.book.vendor).
SITE_FOLDERS = ("vendor",)
# Where the build tree's pages find the models' schematics (helpers.harness.schematics).
SCHEMATICS = "schematics"
# Pages that train nothing, built from records: the other notebooks' (results) and
# the committed benchmark runs' (performance). Executed last, on every run.
SUMMARY_PAGES = ("results", "performance")
# The committed benchmark and breakdown records the performance page reads
# (``../runs/bench`` from ``book/``), copied into the build tree.
BENCHMARK_FOLDERS = (f"{publish.RUNS}/bench", f"{publish.RUNS}/breakdown")
# The evidence plan and its records (helpers.book.evidence), which the results
# page and the published paper pages read, copied into the build tree when present.
EVIDENCE_SOURCES = ("evidence.yml", f"{publish.RUNS}/evidence")


# What a build is made from: a finished build records the digest of these files
# (``build.json`` in the build tree), so that a later caller can tell whether the
# executed pages still show the code and settings of the source.
SOURCE_FILES = ("_config.yml", "_toc.yml", "references.bib", "profiles.yml", "evidence.yml")
SOURCE_FOLDERS = ("book", "helpers", "vendor", publish.RUNS)
MANIFEST = "build.json"


class BookError(RuntimeError):
    """A problem with the book's configuration or the requested run."""


def toc_files(source: Path) -> list[str]:
    """Every ``file`` of ``_toc.yml`` (without extension), in reading order."""
    toc = yaml.safe_load((source / "_toc.yml").read_text())
    files = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []):
                    walk(child)

    files.append(toc["root"])
    walk(toc)
    return files


def toc_notebooks(source: Path) -> list[Path]:
    """The notebooks of the table of contents, as paths relative to ``source``."""
    return [Path(f + ".ipynb") for f in toc_files(source) if (source / f"{f}.ipynb").is_file()]


def model_notebooks(source: Path) -> list[Path]:
    """The notebooks that train a model and write a record (all but the summary pages)."""
    return [nb for nb in toc_notebooks(source) if nb.stem not in SUMMARY_PAGES]


def load_profile(source: Path, name: str) -> dict:
    profiles = yaml.safe_load((source / "profiles.yml").read_text())
    if name not in profiles:
        raise BookError(f"unknown profile {name!r}; profiles.yml has {', '.join(profiles)}")
    profile = profiles[name]
    pages = profile.get("pages")
    if pages is not None and pages not in profiles:
        raise BookError(f"profile {name!r}: pages names {pages!r}, which is not a profile")
    return {"common": profile.get("common") or {}, "notebooks": profile.get("notebooks") or {},
            "pages": pages}


def profile_parameters(name: str, profile: str, source: Path | None = None) -> dict:
    """Paper ``name``'s notebook defaults with a profile's values on top (``full``: none).

    The defaults are ``helpers.papers.<name>.DEFAULTS``, generated from the
    notebook's parameters cell.
    """
    from helpers import papers

    source = source or Path(__file__).resolve().parents[2]
    profiles = yaml.safe_load((source / "profiles.yml").read_text())
    if profile not in profiles:
        raise ValueError(f"profile must be one of {', '.join(profiles)}, got {profile!r}")
    section = profiles[profile] or {}
    defaults = dict(papers.defaults(name))
    common = {k: v for k, v in (section.get("common") or {}).items() if k in defaults}
    return {**defaults, **common, **((section.get("notebooks") or {}).get(name) or {})}


def declared_parameters(notebook: Path) -> dict:
    """``{name: info}`` of the parameters the notebook's parameters cell declares."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def notebook_parameters(
    profile: dict, notebook: Path, overrides: dict, declared: dict | None = None
) -> dict:
    """The profile's common values, then the notebook's section, then ``overrides``.

    With ``declared`` (the notebook's parameters), common values and overrides
    that the notebook does not declare are left out; its own section is kept
    whole, so that a misspelt name there is caught by ``check_parameters``.
    """
    def shared(values: dict) -> dict:
        if declared is None:
            return dict(values)
        return {name: value for name, value in values.items() if name in declared}

    section = profile["notebooks"].get(notebook.stem, {})
    return {**shared(profile["common"]), **section, **shared(overrides)}


def check_parameters(notebook: Path, parameters: dict) -> None:
    """Fail if ``parameters`` names something the notebook does not declare."""
    declared = declared_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise BookError(
            f"{notebook}: unknown parameter(s) {', '.join(unknown)}; the notebook declares "
            f"{', '.join(declared)}"
        )


def prepare_tree(source: Path, site: Path, keep: list[Path] = ()) -> None:
    """A fresh build tree with the site's files and every non-notebook file of book/.

    The executed copies of the notebooks in ``keep`` (and their records) are
    carried over from the previous build tree, and so are the training backups
    (``book/results/backups/``): a run stopped mid-training (a long publication
    cut off) resumes after its last finished epoch when the build is started
    again. A finished run deletes its own backup, so nothing else is reused.
    """
    kept = {}
    for notebook in keep:
        record = (site / notebook).parent / "results" / f"{notebook.stem}.json"
        for path in (site / notebook, record):
            if path.is_file():
                kept[path.relative_to(site)] = path.read_bytes()
    backups = site / "book" / "results" / "backups"
    aside = site.parent / f".{site.name}-backups"
    if backups.is_dir() and any(backups.iterdir()):
        shutil.rmtree(aside, ignore_errors=True)
        shutil.move(backups, aside)
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    for name in SITE_FILES:
        shutil.copy2(source / name, site / name)
    for name in SITE_FOLDERS:
        shutil.copytree(source / name, site / name)
    for name in BENCHMARK_FOLDERS:
        if (source / name).is_dir():
            shutil.copytree(source / name, site / name)
    for name in EVIDENCE_SOURCES:
        if (source / name).is_dir():
            shutil.copytree(source / name, site / name)
        elif (source / name).is_file():
            shutil.copy2(source / name, site / name)
    ignore = shutil.ignore_patterns("*.ipynb", "results", ".ipynb_checkpoints", "__pycache__")
    shutil.copytree(source / "book", site / "book", ignore=ignore)
    # the models' schematics, which the paper pages embed (book/schematics/<name>.png)
    from helpers.harness.schematics import write_all

    write_all(site / "book" / SCHEMATICS)
    for relative, content in kept.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_bytes(content)
    if aside.is_dir():
        backups.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(aside, backups)


def cpu_device_flags(devices: int) -> str:
    """``XLA_FLAGS`` that make JAX see a CPU as ``devices`` devices.

    The collective timeouts are raised too: in data-parallel training the
    devices meet at an all-reduce every step, and XLA aborts the process when
    one waits there longer than its built-in limit, which a long step (the
    full-size ViT's is over 10 s on two cores) or a busy machine can exceed.
    """
    return (f"--xla_force_host_platform_device_count={devices}"
            " --xla_cpu_collective_call_warn_stuck_timeout_seconds=300"
            " --xla_cpu_collective_call_terminate_timeout_seconds=900"
            " --xla_cpu_collective_timeout_seconds=900")


def with_cpu_devices(xla_flags: str | None, devices: int) -> str:
    """``xla_flags`` (a value of ``XLA_FLAGS``, or None) with ``cpu_device_flags(devices)`` added."""
    return " ".join(filter(None, (xla_flags, cpu_device_flags(devices))))


@contextlib.contextmanager
def environment_variables(**values: str):
    """Set environment variables for the duration of a block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _LabelledLines:
    """A text stream that writes each whole line to ``stream`` after ``[label] ``: the
    output of notebooks executing side by side stays readable."""

    def __init__(self, stream, label: str):
        self.stream, self.label, self.pending = stream, label, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        if lines:
            self.stream.write("".join(f"[{self.label}] {line}\n" for line in lines))
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.write("\n")
        self.stream.flush()


def execute(source: Path, site: Path, notebook: Path, parameters: dict, backend: str,
            labelled: bool = False) -> float:
    """Execute one notebook into the build tree; returns its wall time in seconds.

    ``labelled``: start every line of its output with ``[<notebook name>]``.
    """
    import papermill

    output = site / notebook
    stdout, stderr = sys.stdout, sys.stderr
    if labelled:
        stdout, stderr = _LabelledLines(stdout, notebook.stem), _LabelledLines(stderr, notebook.stem)
    print(f"== executing {notebook} on {backend} with {parameters}", flush=True)
    start = time.perf_counter()
    # The kernel inherits this process's environment; it is put back afterwards so
    # that a caller (a test session, say) keeps its own backend.
    log_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with environment_variables(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL=log_level):
            papermill.execute_notebook(
                str(source / notebook),
                str(output),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(output.parent),
                progress_bar=False,
                stdout_file=stdout,
                stderr_file=stderr,
            )
    except papermill.PapermillExecutionError as error:
        raise BookError(
            f"{notebook} failed in cell {error.exec_count}: {error.ename}: {error.evalue} "
            f"(executed copy with the traceback: {output})"
        ) from None
    finally:
        stdout.flush()
        stderr.flush()
    seconds = time.perf_counter() - start
    strip_native_logs(output)
    print(f"== {notebook} done in {seconds:.0f} s", flush=True)
    return seconds


def execute_all(source: Path, site: Path, plan: list, backend: str, jobs: int = 1) -> dict:
    """Execute the ``(notebook, parameters)`` of ``plan``, ``jobs`` at a time; returns
    each notebook's wall time in seconds, by name, in the order of ``plan``.

    With ``jobs > 1`` each notebook runs in a process of its own (its kernel is
    a process of that one) and its output lines are labelled with its name. The
    first failure stops the notebooks not yet started and is raised once the
    running ones end.
    """
    if jobs == 1 or len(plan) < 2:
        return {nb.stem: execute(source, site, nb, values, backend) for nb, values in plan}
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
    with concurrent.futures.ProcessPoolExecutor(min(jobs, len(plan)), mp_context=context) as pool:
        futures = {nb.stem: pool.submit(execute, source, site, nb, values, backend, True)
                   for nb, values in plan}
        try:
            for future in concurrent.futures.as_completed(futures.values()):
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return {name: future.result() for name, future in futures.items()}


def strip_native_logs(path: Path) -> None:
    """Remove native-library log lines from the stderr outputs of a notebook."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                lines = output.text.splitlines(keepends=True)
                output.text = "".join(l for l in lines if not _NATIVE_LOG_LINE.match(l))
                if not output.text.strip():
                    continue
            kept.append(output)
        cell.outputs = kept
    nbformat.write(nb, path)


def source_digest(source: Path) -> str:
    """SHA-256 over the names and contents of every file a build is made from."""
    import hashlib

    paths = [source / name for name in SOURCE_FILES if (source / name).is_file()]
    for folder in SOURCE_FOLDERS:
        paths += [p for p in (source / folder).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts
                  and ".ipynb_checkpoints" not in p.parts
                  and p.relative_to(source).parts[:2] != ("book", "results")]
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def write_manifest(site: Path, source: Path, *, profile: str, backend: str,
                   seconds: dict, complete: bool, digest: str | None = None,
                   pages: str | None = None) -> None:
    """Record what the build tree was made from (``build.json``): ``digest`` is the
    sources' digest taken before anything was executed (now, if not given);
    ``pages``, the profile whose published runs the paper pages show, if any."""
    import json

    manifest = {"profile": profile, "backend": backend, "complete": complete,
                "source_sha256": digest or source_digest(source), "seconds": seconds,
                "pages": pages}
    (site / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def reusable_build(source: Path, build_dir: Path, profile: str, backend: str) -> dict | None:
    """A finished, complete build of ``profile`` on ``backend`` made from the current
    sources (same digest), as ``run`` returns it; None if there is none.

    The tests use it to check the site that the README's build step made,
    instead of executing the book a second time.
    """
    import json

    site = (source / build_dir / "site").resolve()
    index = site / "_build" / "html" / "index.html"
    try:
        manifest = json.loads((site / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    wanted = {"profile": profile, "backend": backend, "complete": True,
              "source_sha256": source_digest(source.resolve())}
    if any(manifest.get(key) != value for key, value in wanted.items()) or not index.is_file():
        return None
    executed = publish.executed_folder(site) if manifest.get("pages") else site
    return {"site": site, "index": index, "seconds": manifest.get("seconds", {}),
            "executed": executed}


def build_html(site: Path) -> Path:
    """Build the site from the executed tree, warnings as errors; returns index.html."""
    command = [
        str(Path(sys.executable).with_name("jupyter-book")),
        "build", str(site), "--builder", "html", "--warningiserror", "--keep-going",
    ]
    print("== building the site: " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return site / "_build" / "html" / "index.html"


def run(
    profile_name: str,
    *,
    source: Path = Path("."),
    build_dir: Path = Path("_build"),
    backend: str | None = None,
    only: list[str] | None = None,
    overrides: dict | None = None,
    html: bool = True,
    jobs: int = 1,
    cpu_devices: int | None = None,
) -> dict:
    """Execute the notebooks of ``profile_name``, then build the site.

    ``jobs``: how many notebooks execute at once (the summary pages come after
    them). More than one pays on a CPU, where much of a notebook is one core's
    work (starting a kernel, importing, checks, figures); on one GPU the
    notebooks would share its memory.

    ``cpu_devices`` (JAX only): the kernels see the CPU as that many devices
    (``cpu_device_flags``) and the notebooks train data-parallel on them
    (``data_parallel: true``), which keeps every core busy in a JAX training
    step; without it, XLA runs a step's operations one after another.

    Returns ``{"site": build tree, "index": index.html or None, "seconds": {...}}``.
    """
    source = source.resolve()
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend not in BACKENDS:
        raise BookError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise BookError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    overrides = dict(overrides or {})
    if cpu_devices is not None:
        if isinstance(cpu_devices, bool) or not isinstance(cpu_devices, int) or cpu_devices < 2:
            raise BookError(f"cpu_devices must be a whole number of at least 2, got {cpu_devices!r}")
        if backend != "jax":
            raise BookError(
                f"cpu_devices splits the CPU for the JAX backend, not {backend}: TensorFlow "
                "already spreads a step's operations over the cores, and Keras has no "
                "data-parallel training on PyTorch"
            )
        if overrides.get("data_parallel", True) is not True:
            raise BookError("cpu_devices trains data-parallel: drop the data_parallel override")
        overrides["data_parallel"] = True
    profile = load_profile(source, profile_name)
    notebooks = toc_notebooks(source)
    if only:
        unknown = sorted(set(only) - {nb.stem for nb in notebooks})
        if unknown:
            raise BookError(f"no notebook {', '.join(unknown)} in _toc.yml")
        notebooks = [nb for nb in notebooks if nb.stem in only]

    summaries = [nb for nb in toc_notebooks(source) if nb.stem in SUMMARY_PAGES]
    notebooks = [nb for nb in notebooks if nb not in summaries] + summaries

    # Later notebooks import the papers' modules generated from earlier ones:
    # executing against a stale export would test code the notebooks no longer hold.
    from helpers.book.export import ExportError, stale_modules

    try:
        stale = stale_modules(source)
    except ExportError as error:
        raise BookError(str(error)) from None
    if stale:
        raise BookError(
            f"out of date: {', '.join(str(p.relative_to(source)) for p in stale)}; "
            "run python -m helpers.book.export"
        )

    # A profile with `pages` shows the runs published for that profile (if any) on
    # the site instead of the pages it executes.
    shows = profile["pages"] if html and profile["pages"] and publish.published_runs(
        profile["pages"], source) else None

    # Reject every bad parameter name before executing anything.
    plan, seen = [], set()
    for notebook in notebooks:
        declared = declared_parameters(source / notebook)
        seen.update(declared)
        parameters = notebook_parameters(profile, notebook, overrides, declared)
        if notebook.stem in SUMMARY_PAGES and "profile" in declared:
            parameters.setdefault("profile", shows or profile_name)
        if notebook.stem in SUMMARY_PAGES and "results_dir" in declared and shows:
            # the summary reads the published records that the pages show
            parameters.setdefault("results_dir", f"../{publish.RUNS}/{shows}/{publish.RECORDS}")
        check_parameters(source / notebook, parameters)
        plan.append((notebook, parameters))
    book_wide = set().union(*(declared_parameters(source / nb) for nb in toc_notebooks(source)))
    unknown = sorted(set(profile["common"]) - book_wide) + sorted(set(overrides) - seen)
    if unknown:
        raise BookError(
            f"unknown parameter(s) {', '.join(unknown)}: no executed notebook declares "
            f"{'it' if len(unknown) == 1 else 'them'}"
        )

    site = (source / build_dir / "site").resolve()
    # The site shows every notebook of the table of contents: with --notebooks,
    # the others keep their executed copies from the previous build.
    others = [nb for nb in toc_notebooks(source) if nb not in notebooks]
    if html:
        missing = [str(nb) for nb in others if not (site / nb).is_file()]
        if missing:
            raise BookError(
                f"the site needs every notebook executed, and {site} has no executed "
                f"{', '.join(missing)}: run the whole book once first, or add --no-html"
            )
    prepare_tree(source, site, keep=others if html else [])
    digest = source_digest(source)  # before executing: a file edited meanwhile makes it stale
    summary_plan = [(nb, values) for nb, values in plan if nb.stem in SUMMARY_PAGES]
    # The kernels (and the workers that start them) inherit this process's environment.
    kernels = ({"XLA_FLAGS": with_cpu_devices(os.environ.get("XLA_FLAGS"), cpu_devices)}
               if cpu_devices else {})
    with environment_variables(**kernels):
        seconds = execute_all(source, site, [step for step in plan if step not in summary_plan],
                              backend, jobs)
        if shows and summary_plan:
            # the paper pages become the published runs before the summaries read them
            shown = publish.show_published(shows, site, source)
            for name, changed in shown.items():
                print(f"== {name}: the page shows the published {shows} run"
                      + (f" (stale: {'; '.join(changed)})" if changed else ""), flush=True)
        for notebook, values in summary_plan:  # they read the records the others wrote
            seconds[notebook.stem] = execute(source, site, notebook, values, backend)
    index = build_html(site) if html else None
    write_manifest(site, source, profile=profile_name, backend=backend, seconds=seconds,
                   complete=bool(index) and not only and not overrides, digest=digest,
                   pages=shows)
    for name, value in seconds.items():
        print(f"{name}: {value:.0f} s")
    if index:
        print(f"site: {index}")
    return {"site": site, "index": index, "seconds": seconds,
            "executed": publish.executed_folder(site) if shows else site}


_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _parse_value(text: str):
    """A command-line value read as YAML: 3 -> int, 0.5 -> float, [64, 32] -> list.

    YAML 1.1 (PyYAML) reads ``1e-3`` as a string (it wants ``1.0e-3``); a number
    written with an exponent is a float here.
    """
    value = yaml.safe_load(text)
    if isinstance(value, str) and _EXPONENT_NUMBER.match(value.strip()):
        return float(value)
    return value


def _parse_overrides(pairs) -> dict:
    return {name: _parse_value(value) for name, value in pairs or []}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Execute the book's notebooks with papermill and build the site."
    )
    parser.add_argument("--profile", required=True, help="a profile of profiles.yml: smoke or full")
    parser.add_argument("--backend", choices=BACKENDS, help="Keras backend (default: $KERAS_BACKEND or tensorflow)")
    parser.add_argument("--notebooks", nargs="+", metavar="NAME", help="execute only these notebooks")
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
        help="override a parameter of every executed notebook that declares it "
             "(value read as YAML)",
    )
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="execute N notebooks at once (default 1; 2 on a 2-core CPU "
                             "saves about a third of the smoke build)")
    parser.add_argument("--cpu-devices", type=int, metavar="N",
                        help="JAX on a CPU: split it into N devices and train data-parallel on "
                             "them, so that a step keeps every core busy (N: the cores)")
    parser.add_argument("--no-html", action="store_true", help="execute only, do not build the site")
    parser.add_argument("--build-dir", default="_build", type=Path, help="where the build tree goes")
    args = parser.parse_args(argv)
    try:
        run(
            args.profile,
            build_dir=args.build_dir,
            backend=args.backend,
            only=args.notebooks,
            overrides=_parse_overrides(args.parameter),
            html=not args.no_html,
            jobs=args.jobs,
            cpu_devices=args.cpu_devices,
        )
    except BookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(f"error: the site build failed ({error})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
