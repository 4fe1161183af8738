"""Published runs: executed notebooks committed with their provenance, shown by the site.

    python -m helpers.book.publish cifar10-cpu -p dataset /data/cifar10-jpeg.zip \\
        --dataset-label "CIFAR-10 (JPEG copy)"     # execute the profile, then publish it
    python -m helpers.book.publish cifar10-cpu --check  # which published pages are stale

Publishing executes every model notebook with a profile (``helpers.book.runner``,
no HTML), then copies the executed notebooks and their records to
``runs/<profile>/`` and adds to each record a ``published`` field: the commit,
the date, the machine (CPU model, cores, memory), the dataset (a label and the
SHA-256 of the file), the notebook's wall time, and the **code digest** of what
produced it: a hash of each code cell of the source notebook and of every
module of ``helpers`` that the notebook imports, directly or through other
helpers.

A profile of ``profiles.yml`` with ``pages: <published profile>`` (``smoke`` has
``pages: cifar10-cpu``) builds a site whose paper pages are the published
notebooks instead of the ones it executed (it still executes them all: that is
CI's end-to-end check). Each such page opens with a note saying which run it
shows; when the code digest of the sources no longer matches the one recorded,
the note becomes a warning that names what changed since the run (``stale``).
The results page reads the published records.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import difflib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

# nbformat is imported by the functions that use it: the GPU script
# (helpers.book.epoch_bench) reaches this module through the runner on machines
# without the Jupyter packages.


ROOT = Path(__file__).resolve().parents[2]
RUNS = "runs"
RECORDS = "results"
PACKAGE = "helpers"


# ---------------------------------------------------------------- code digests

def _sha(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:16]


def _module_file(source: Path, module: str) -> Path | None:
    """The file of a ``helpers`` module or package, or None if there is none."""
    path = source.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _imported_modules(code: str, package: str | None = None) -> set[str]:
    """Names of the ``helpers`` modules that ``code`` imports, and the names it
    imports from them (``from helpers.harness import start`` gives both
    ``helpers.harness`` and ``helpers.harness.start``; the caller keeps the ones
    that are files). ``package`` resolves relative imports."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level and package:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


def helper_files(code: str, source: Path = ROOT) -> list[str]:
    """Every file of ``helpers`` that running ``code`` imports: the modules it
    names, the packages above them, and whatever those import in turn; as paths
    relative to ``source``, sorted."""
    seen: dict[str, Path] = {}
    queue = [(name, None) for name in _imported_modules(code)]
    while queue:
        module, _ = queue.pop()
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            name = ".".join(parts[:depth])
            if name in seen:
                continue
            path = _module_file(source, name)
            if path is None:
                continue
            seen[name] = path
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            queue += [(n, None) for n in _imported_modules(path.read_text(), package)]
    return sorted(str(p.relative_to(source).as_posix()) for p in seen.values())


def code_cells(notebook: Path) -> list[str]:
    """The sources of a notebook's code cells, as papermill leaves them: a cell
    papermill injected (tagged ``injected-parameters``) is not part of the code."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"
            and "injected-parameters" not in c.metadata.get("tags", [])]


def code_digest(notebook: Path, source: Path = ROOT) -> dict:
    """What a notebook's outputs depend on: a hash of each of its code cells and
    of each ``helpers`` file it imports (``{"cells": [...], "modules": {path: hash}}``)."""
    cells = code_cells(notebook)
    modules = helper_files("\n".join(_importable(c) for c in cells), source)
    return {"cells": [_sha(c) for c in cells],
            "modules": {m: _sha((source / m).read_bytes()) for m in modules}}


def _importable(cell: str) -> str:
    """The cell's lines that Python can parse on their own (IPython magics dropped)."""
    lines = [line for line in cell.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        ast.parse("\n".join(lines))
    except SyntaxError:
        return ""
    return "\n".join(lines)


def changes(recorded: dict, current: dict) -> list[str]:
    """What differs between two code digests, in words; empty if they match."""
    said = []
    matcher = difflib.SequenceMatcher(a=recorded["cells"], b=current["cells"], autojunk=False)
    edited = added = removed = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "replace":
            edited += min(i2 - i1, j2 - j1)
            added += max(0, (j2 - j1) - (i2 - i1))
            removed += max(0, (i2 - i1) - (j2 - j1))
        elif tag == "insert":
            added += j2 - j1
        elif tag == "delete":
            removed += i2 - i1
    for count, what in ((edited, "changed"), (added, "added"), (removed, "removed")):
        if count:
            said.append(f"{count} code cell{'s' if count > 1 else ''} of the notebook {what}")
    old, new = recorded["modules"], current["modules"]
    for path in sorted(set(old) | set(new)):
        if path not in new:
            said.append(f"{path} no longer imported")
        elif path not in old:
            said.append(f"{path} newly imported")
        elif old[path] != new[path]:
            said.append(f"{path} changed")
    return said


# ------------------------------------------------------------------ provenance

def machine() -> dict:
    """The CPU model, the cores this process may use, and the memory."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": cores, "memory_gib": memory, "system": platform.system()}


def git_commit(source: Path) -> tuple[str, bool]:
    """The checked-out commit and whether the working tree differs from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=source, capture_output=True, text=True,
                              check=True).stdout.strip()

    return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(profile: str, *, source: Path = ROOT, only: list[str] | None = None,
            overrides: dict | None = None, dataset_label: str | None = None,
            backend: str | None = None, allow_dirty: bool = False,
            build_dir: Path | None = None) -> Path:
    """Execute ``profile``'s model notebooks (or those of ``only``) and publish them
    to ``runs/<profile>/``, replacing earlier runs of the same notebooks only."""
    from helpers.book import runner

    source = source.resolve()
    commit, dirty = git_commit(source)
    if dirty and not allow_dirty:
        raise runner.BookError("the working tree has uncommitted changes: a published run "
                               "must name the commit it ran (or pass --allow-dirty)")
    overrides = dict(overrides or {})
    names = [nb.stem for nb in runner.model_notebooks(source)]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise runner.BookError(f"no model notebook {', '.join(unknown)}")
        names = [name for name in names if name in only]
    digests = {name: code_digest(source / "book" / f"{name}.ipynb", source) for name in names}
    started = datetime.datetime.now(datetime.timezone.utc)
    build_dir = build_dir or Path("_build") / f"publish-{profile}"
    built = runner.run(profile, source=source, build_dir=build_dir, backend=backend,
                       only=names, overrides=overrides, html=False)
    dataset = overrides.get("dataset")
    dataset_info = {"label": dataset_label or dataset}
    if dataset and Path(dataset).is_file():
        dataset_info.update(file=Path(dataset).name, sha256=file_sha256(Path(dataset)))
    common = {
        "profile": profile, "commit": commit, "dirty": dirty,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(), "dataset": dataset_info,
        "overrides": {k: v for k, v in overrides.items() if k != "dataset"},
    }
    target = source / RUNS / profile
    (target / RECORDS).mkdir(parents=True, exist_ok=True)
    for name in names:
        executed = built["site"] / "book" / f"{name}.ipynb"
        shutil.copy2(executed, target / f"{name}.ipynb")
        record_path = built["site"] / "book" / "results" / f"{name}.json"
        record = json.loads(record_path.read_text())
        record["published"] = {**common, "notebook_seconds": round(built["seconds"][name], 1),
                               "code_digest": digests[name]}
        (target / RECORDS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    minutes = sum(built["seconds"][name] for name in names) / 60
    print(f"published {', '.join(names)} to {target} ({minutes:.1f} min of execution)")
    return target


# ------------------------------------------------------------ shown by the site

def published_runs(profile: str, source: Path = ROOT) -> dict[str, dict]:
    """``{notebook: record}`` of the runs published for ``profile``."""
    folder = source / RUNS / profile / RECORDS
    runs = {}
    for path in sorted(folder.glob("*.json")):
        if (source / RUNS / profile / f"{path.stem}.ipynb").is_file():
            runs[path.stem] = json.loads(path.read_text())
    return runs


def stale(record: dict, source: Path = ROOT) -> list[str]:
    """What changed in the sources since a published run (empty: it is current)."""
    notebook = source / "book" / f"{record['notebook']}.ipynb"
    return changes(record["published"]["code_digest"], code_digest(notebook, source))


def describe(record: dict) -> str:
    """One paragraph of Markdown saying which run a published page shows."""
    pub = record["published"]
    m = pub["machine"]
    data = pub["dataset"]
    # the first 12 digits in the text, the whole digest on hover (Sphinx's abbr role
    # puts it in the title; helpers/book/static/book.css sets it in code type)
    sha = (f" (SHA-256 {{abbr}}`{data['sha256'][:12]}… (SHA-256 {data['sha256']})`)"
           if data.get("sha256") else "")
    memory = f", {m['memory_gib']:g} GiB" if m.get("memory_gib") else ""
    minutes = pub["notebook_seconds"] / 60
    return (
        f"The outputs on this page come from a run of the `{pub['profile']}` profile on "
        f"{data['label']}{sha}: {record['epochs']} epochs, "
        f"{record['n_train']:,} training and {record['n_test']:,} test images, "
        f"Keras {record['keras_version']} on {record['backend']} {record['backend_version']} "
        f"in {record.get('precision', 'float32')}, "
        f"{m['cpu']}, {m['cores']} cores{memory}; commit `{pub['commit'][:10]}`"
        f"{' with local changes' if pub.get('dirty') else ''}, "
        f"{pub['started_at'][:10]}; the notebook took {minutes:.0f} minutes. "
        f"The digits `smoke` runs that CI executes check the code; they are not shown here."
    )


def notice_cell(record: dict, source: Path = ROOT):
    """The Markdown cell that opens a published page: which run, and whether the
    code has changed since."""
    import nbformat

    changed = stale(record, source)
    text = f"```{{note}}\n{describe(record)}\n```\n"
    if changed:
        listed = "; ".join(changed)
        text += (
            "\n```{warning}\nThe code has changed since this run, so the outputs below may not "
            f"be what it produces now: {listed}. Publish the profile again to refresh them "
            f"(`python -m helpers.book.publish {record['published']['profile']}`).\n```\n"
        )
    # a fixed id (nbformat draws a random one): rebuilding a page writes the same bytes
    cell = nbformat.v4.new_markdown_cell(text, id="published-run")
    cell.metadata["tags"] = ["published-run", "stale" if changed else "current"]
    return cell


def ablation_cell(name: str, source: Path = ROOT):
    """The Markdown cell that ends a published page with its paper's ablation, from
    the evidence records (``helpers.book.evidence``: ``evidence.yml`` and
    ``runs/evidence/<name>/``); None while the notebook has no such record."""
    import nbformat

    from helpers.book import evidence

    if not (source / evidence.PLAN).is_file() or not any(
            (source / evidence.EVIDENCE / name).glob("*/seed-*.json")):
        return None
    plan = evidence.load_plan(source / evidence.PLAN, source=source, check_names=False)
    text = evidence.ablation_markdown(name, plan, source / evidence.EVIDENCE, source)
    if text is None:
        return None
    cell = nbformat.v4.new_markdown_cell(text, id="evidence-ablation")
    cell.metadata["tags"] = ["evidence-ablation"]
    return cell


def with_current_prose(executed, current):
    """The notebook ``current`` (a source notebook) with the outputs of ``executed``
    (its executed copy, same code cells): Markdown edited since the run shows as it
    is now, and the code, which has not changed, with the outputs it produced.
    Papermill's injected-parameters cell is kept after the parameters cell."""
    import nbformat

    ran = [c for c in executed.cells if c.cell_type == "code"
           and "injected-parameters" not in c.metadata.get("tags", [])]
    code = [c for c in current.cells if c.cell_type == "code"]
    if [c.source for c in ran] != [c.source for c in code]:
        raise ValueError("the executed notebook's code cells differ from the source's")
    merged = nbformat.from_dict(current)  # a copy
    merged.metadata = executed.metadata
    outputs = iter(ran)
    cells = []
    for cell in merged.cells:
        if cell.cell_type == "code":
            done = next(outputs)
            cell.outputs, cell.execution_count = done.outputs, done.execution_count
            cell.metadata = {**done.metadata, **cell.metadata}
        cells.append(cell)
        if "parameters" in cell.metadata.get("tags", []):
            cells += [c for c in executed.cells
                      if "injected-parameters" in c.metadata.get("tags", [])]
    merged.cells = cells
    return merged


def without_machine_paths(nb):
    """``nb`` with the absolute paths of its file parameters (the dataset's, for one)
    shortened to their file names wherever a reader sees them: papermill's injected
    cell, the cells' text outputs and the notebook's metadata (in a download).
    Where a file lay on the machine that ran the page says nothing to a reader;
    the record keeps the file's name and digest."""
    papermill = nb.metadata.get("papermill", {})
    parameters = papermill.get("parameters", {})
    paths = sorted({value for value in parameters.values()
                    if isinstance(value, str) and Path(value).is_absolute()
                    and Path(value).name}, key=len, reverse=True)  # longest first
    for key in ("input_path", "output_path"):  # the notebook's own, in a download
        if isinstance(papermill.get(key), str):
            papermill[key] = Path(papermill[key]).name
    if not paths:
        return nb

    def shorten(text: str) -> str:
        for path in paths:
            text = text.replace(path, Path(path).name)
        return text

    for key, value in parameters.items():
        if value in paths:
            parameters[key] = Path(value).name
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "injected-parameters" in cell.metadata.get("tags", []):
            shortened = shorten(cell.source)
            if shortened != cell.source:
                cell.source = shortened.replace(
                    "# Parameters\n", "# Parameters (file paths shortened to their names)\n", 1)
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = shorten("".join(output["text"]))
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/"):
                    output["data"][kind] = shorten("".join(value))
    return nb


def executed_folder(site: Path) -> Path:
    """Where a build keeps the copies it executed of the pages that show published
    runs (beside the build tree, outside the site: ``<build>/executed/book/``)."""
    return site.parent / "executed"


def show_published(profile: str, site: Path, source: Path = ROOT) -> dict[str, list[str]]:
    """Replace the executed paper pages of the build tree ``site`` by the runs
    published for ``profile``, each opened by its notice; copy the published
    records to ``site/runs/<profile>/results``. The executed copies move to
    ``executed_folder(site)``. Returns ``{notebook: changes}``."""
    import nbformat

    runs = published_runs(profile, source)
    report = {}
    records = site / RUNS / profile / RECORDS
    records.mkdir(parents=True, exist_ok=True)
    for name, record in runs.items():
        page = site / "book" / f"{name}.ipynb"
        changed = stale(record, source)
        if page.is_file() and not any(
                "published-run" in c.metadata.get("tags", [])
                for c in nbformat.read(page, as_version=4).cells):
            kept = executed_folder(site) / "book" / page.name
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(page, kept)
        nb = nbformat.read(source / RUNS / profile / f"{name}.ipynb", as_version=4)
        try:  # today's prose around the run's outputs, while the notebook's code is the same
            nb = with_current_prose(nb, nbformat.read(source / "book" / f"{name}.ipynb",
                                                      as_version=4))
        except ValueError:  # its code changed: the run's own prose matches its outputs
            pass
        nb = without_machine_paths(nb)
        cell = notice_cell(record, source)
        # after the title and introduction (the first cell that is not the Colab badge)
        position = next(i for i, c in enumerate(nb.cells)
                        if "colab-badge" not in c.metadata.get("tags", [])) + 1
        nb.cells.insert(position, cell)
        ablation = ablation_cell(name, source)
        if ablation is not None:  # the paper's ablation, over seeds, ends the page
            nb.cells.append(ablation)
        nbformat.write(nb, site / "book" / f"{name}.ipynb")
        shutil.copy2(source / RUNS / profile / RECORDS / f"{name}.json", records / f"{name}.json")
        report[name] = changed
    return report


def main(argv=None) -> int:
    from helpers.book import runner

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", help="the profile to execute and publish (cifar10-cpu)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="override a parameter (the dataset's path, for one)")
    parser.add_argument("--notebooks", nargs="+", metavar="NAME",
                        help="execute and publish only these notebooks")
    parser.add_argument("--dataset-label", help='how pages name the dataset ("CIFAR-10 (JPEG copy)")')
    parser.add_argument("--backend", choices=runner.BACKENDS)
    parser.add_argument("--allow-dirty", action="store_true",
                        help="publish from a working tree with uncommitted changes")
    parser.add_argument("--check", action="store_true",
                        help="only report which published runs the sources have outgrown")
    args = parser.parse_args(argv)
    if args.check:
        runs = published_runs(args.profile)
        if not runs:
            print(f"no runs published for {args.profile}")
            return 1
        outdated = 0
        for name, record in runs.items():
            changed = stale(record)
            outdated += bool(changed)
            print(f"{name}: " + ("stale: " + "; ".join(changed) if changed else "current"))
        return 1 if outdated else 0
    try:
        publish(args.profile, only=args.notebooks, overrides=runner._parse_overrides(args.parameter),
                dataset_label=args.dataset_label, backend=args.backend,
                allow_dirty=args.allow_dirty)
    except runner.BookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
