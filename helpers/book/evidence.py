"""The evidence runs: every model at one budget, each paper's own ablation, over seeds.

    python -m helpers.book.evidence -p dataset /data/cifar10-jpeg.zip \\
        --dataset-label "CIFAR-10 (JPEG copy)"        # run whatever has no current record
    python -m helpers.book.evidence --dry-run          # the runs, and how long they should take
    python -m helpers.book.evidence --check            # which records are missing or stale
    python -m helpers.book.evidence --profile smoke --seeds 0 1 -p epochs 1   # a quick try

The plan is ``evidence.yml`` (``--plan``): a budget (a profile of
``profiles.yml`` for the sizes, one number of epochs for every model, a backend
and a precision), the seeds, and per notebook its arms: parameter overrides,
one of them the *full model* (its runs are also the results page's
equal-budget row), one the *baseline* the others are compared with. A notebook
may name further pairs of arms to compare (``compare``), and an arm may be
declared the same model as another notebook's full model (``same_model_as``:
the results page then sets the two comparisons side by side).

Each run (notebook, arm, seed) executes the notebook with papermill through the
book's runner and writes one record,
``runs/evidence/<notebook>/<arm>/seed-<n>.json``: the notebook's own record
(test top-1 and top-5, history, times, parameters) with an ``evidence`` field
holding the arm, the seed, the parameters the plan gave, and the provenance of
``helpers.book.publish``: commit, date, machine, dataset (label and SHA-256),
the notebook's wall time and the code digest. The executed notebooks stay in
the build folder (``_build/evidence-<profile>/``), out of the repository.

Runs go one at a time, the equal-budget (full-model) runs of every seed first.
A record that exists and is current is never run again, so a run that was
stopped is resumed by starting the same command: the records written stay, and
the notebook that was interrupted resumes after its last finished epoch (its
backup lives in the build folder). A record is *stale* when the code digest of
its notebook no longer matches, or when the plan now gives its arm other
parameters, another backend or another profile.

The statistics (``summarize``, ``separated``, ``compare``) are plain Python:
the results page and the paper pages import them to write their sentences.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from helpers.book import publish

ROOT = publish.ROOT
PLAN = "evidence.yml"
EVIDENCE = f"{publish.RUNS}/evidence"
MIN_SEEDS = 3  # a comparison rests on at least this many seeds per arm
SMOKE = "smoke"  # the profile that may run fewer seeds (tests, a quick try)
# Parameters that do not make two runs different experiments: where the data file
# lies on this machine (its SHA-256 is recorded) and where the record is written.
NOT_COMPARED = ("dataset", "results_dir")


class EvidenceError(ValueError):
    """A problem with the plan or the requested runs."""


# ---------------------------------------------------------------------- the plan

@dataclass(frozen=True, eq=False)  # one object per arm of a plan, hashed by identity
class Arm:
    notebook: str
    name: str
    label: str
    parameters: dict
    full: bool = False  # the full model: its runs are also the equal-budget row
    baseline: bool = False  # the arm the others are compared with
    same_model_as: str | None = None  # another notebook whose full model this arm builds


@dataclass
class Plan:
    profile: str
    epochs: int
    backend: str
    precision: str
    seeds: list[int]
    overrides: dict = field(default_factory=dict)
    benchmark: str | None = None
    questions: dict = field(default_factory=dict)  # notebook: what its ablation asks
    arms: dict = field(default_factory=dict)  # notebook: [Arm, ...] in the plan's order
    # notebook: [(arm, other arm), ...], compared beyond each arm against the baseline
    comparisons: dict = field(default_factory=dict)

    def arm(self, notebook: str, name: str) -> Arm:
        for arm in self.arms.get(notebook, []):
            if arm.name == name:
                return arm
        raise EvidenceError(f"the plan has no arm {name!r} of {notebook}")

    def full_arm(self, notebook: str) -> Arm:
        return next(a for a in self.arms[notebook] if a.full)

    def baseline_arm(self, notebook: str) -> Arm:
        return next(a for a in self.arms[notebook] if a.baseline)


def read_plan(path: str | Path = ROOT / PLAN, *, profile: str | None = None) -> Plan:
    """Read a plan and check its shape (budget, seeds, arms, full and baseline),
    without the book: the pages read a plan this way. ``profile`` replaces the
    plan's sizes (``smoke``: fewer than ``MIN_SEEDS`` seeds allowed)."""
    from helpers.book.runner import BACKENDS

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise EvidenceError(f"cannot read the plan {path}: {error}") from None
    if not isinstance(raw, dict):
        raise EvidenceError(f"{path}: a plan is a mapping with budget, seeds and notebooks")
    budget = raw.get("budget") or {}
    for key in ("profile", "epochs"):
        if key not in budget:
            raise EvidenceError(f"{path}: budget must give {key}")
    epochs = budget["epochs"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise EvidenceError(f"{path}: budget epochs must be a whole number of at least 1, "
                            f"got {epochs!r}")
    backend = budget.get("backend", "tensorflow")
    if backend not in BACKENDS:
        raise EvidenceError(f"{path}: backend must be one of {', '.join(BACKENDS)}, "
                            f"got {backend!r}")
    plan = Plan(profile=profile or budget["profile"], epochs=epochs, backend=backend,
                precision=budget.get("precision", "float32"),
                seeds=list(raw.get("seeds") or []), overrides=dict(budget.get("overrides") or {}),
                benchmark=raw.get("benchmark"))
    check_seeds(plan.seeds, plan.profile)
    notebooks = raw.get("notebooks") or {}
    if not notebooks:
        raise EvidenceError(f"{path}: the plan names no notebook")
    for notebook, section in notebooks.items():
        section = section or {}
        arms = section.get("arms") or {}
        if not arms:
            raise EvidenceError(f"{path}: {notebook} has no arms")
        for key in ("full", "baseline"):
            if section.get(key) not in arms:
                raise EvidenceError(f"{path}: {notebook}'s {key} must name one of its arms "
                                    f"({', '.join(arms)}), got {section.get(key)!r}")
        plan.questions[notebook] = section.get("question", "")
        plan.arms[notebook] = [
            Arm(notebook, name, (arm or {}).get("label", name),
                dict((arm or {}).get("parameters") or {}),
                full=name == section["full"], baseline=name == section["baseline"],
                same_model_as=(arm or {}).get("same_model_as"))
            for name, arm in arms.items()]
        plan.comparisons[notebook] = read_comparisons(path, notebook, section, arms)
    for notebook, arms in plan.arms.items():
        for arm in arms:
            if arm.same_model_as is not None and (arm.same_model_as == notebook
                                                  or arm.same_model_as not in plan.arms):
                raise EvidenceError(
                    f"{path}: arm {arm.name} of {notebook}: same_model_as must name another "
                    f"notebook of the plan ({', '.join(n for n in plan.arms if n != notebook)}), "
                    f"got {arm.same_model_as!r}")
    return plan


def read_comparisons(path: Path, notebook: str, section: dict, arms: dict) -> list[tuple]:
    """A notebook's ``compare``: pairs ``[arm, other arm]`` of two distinct arms,
    each compared beyond every arm's comparison with the baseline."""
    pairs = section.get("compare") or []
    if not isinstance(pairs, list):
        raise EvidenceError(f"{path}: {notebook}'s compare must be a list of [arm, arm] pairs, "
                            f"got {pairs!r}")
    checked = []
    for pair in pairs:
        if (not isinstance(pair, list) or len(pair) != 2 or pair[0] == pair[1]
                or any(name not in arms for name in pair)):
            raise EvidenceError(f"{path}: {notebook}'s compare: each entry is a pair of two of "
                                f"its arms ({', '.join(arms)}), got {pair!r}")
        if section["baseline"] in pair:
            raise EvidenceError(f"{path}: {notebook}'s compare: {pair!r} is already compared "
                                "(every arm is compared with the baseline)")
        checked.append(tuple(pair))
    return checked


def same_model_arms(plan: Plan) -> list[Arm]:
    """The arms that build another notebook's full model (``same_model_as``)."""
    return [arm for arms in plan.arms.values() for arm in arms if arm.same_model_as]


def load_plan(path: str | Path = ROOT / PLAN, *, profile: str | None = None,
              source: Path = ROOT, check_names: bool = True) -> Plan:
    """``read_plan``, then checked against the book in ``source``: the profile
    exists, every notebook is a model notebook, and (``check_names``) every
    parameter an arm or the budget sets is declared by its notebook (papermill's
    listing, which the runner checks too)."""
    from helpers.book import runner

    plan = read_plan(path, profile=profile)
    try:
        runner.load_profile(source, plan.profile)
    except runner.BookError as error:
        raise EvidenceError(str(error)) from None
    known = {nb.stem for nb in runner.model_notebooks(source)}
    for notebook, arms in plan.arms.items():
        if notebook not in known:
            raise EvidenceError(f"{path}: no model notebook {notebook!r} (the book has "
                                f"{', '.join(sorted(known))})")
        if not check_names:
            continue
        declared = runner.declared_parameters(source / "book" / f"{notebook}.ipynb")
        budget = {"epochs", "precision", *plan.overrides}
        for arm in arms:
            unknown = sorted((set(arm.parameters) | budget) - set(declared))
            if unknown:
                raise EvidenceError(
                    f"{path}: arm {arm.name} of {notebook} sets {', '.join(unknown)}, which "
                    f"the notebook does not declare (it declares {', '.join(declared)})")
    return plan


def check_seeds(seeds, profile: str) -> None:
    """At least ``MIN_SEEDS`` distinct whole seeds, except for the smoke profile."""
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise EvidenceError(f"seeds must be a list of whole numbers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise EvidenceError(f"seeds must be distinct, got {seeds!r}")
    if len(seeds) < MIN_SEEDS and profile != SMOKE:
        raise EvidenceError(f"a comparison needs at least {MIN_SEEDS} seeds per arm, got "
                            f"{len(seeds)} ({seeds}); only --profile {SMOKE} runs fewer")


def run_parameters(plan: Plan, arm: Arm, seed: int, overrides: dict | None = None,
                   source: Path = ROOT) -> dict:
    """The parameters one run gets: the profile's sizes, the budget, the arm's
    values, the seed, then ``overrides`` (the command line's ``-p``)."""
    from helpers.book import runner

    profile = runner.load_profile(source, plan.profile)
    notebook = Path("book") / f"{arm.notebook}.ipynb"
    declared = runner.declared_parameters(source / notebook)
    values = runner.notebook_parameters(profile, notebook, {}, declared)
    values.update(epochs=plan.epochs, precision=plan.precision, **plan.overrides)
    values.update(arm.parameters)
    values["seed"] = seed
    values.update(overrides or {})
    return values


def compared(parameters: dict) -> dict:
    return {k: v for k, v in sorted(parameters.items()) if k not in NOT_COMPARED}


def planned_runs(plan: Plan, notebooks=None, arms=None, seeds=None) -> list[tuple[Arm, int]]:
    """The (arm, seed) pairs to run, in order: every full-model arm seed by seed
    (the equal-budget table fills first), then the other arms seed by seed."""
    for name, chosen in (("notebook", notebooks), ("arm", arms)):
        pool = (set(plan.arms) if name == "notebook"
                else {a.name for arms_ in plan.arms.values() for a in arms_})
        unknown = sorted(set(chosen or ()) - pool)
        if unknown:
            raise EvidenceError(f"the plan has no {name} {', '.join(unknown)}")
    if seeds is not None:
        outside = sorted(set(seeds) - set(plan.seeds))
        if outside and plan.profile != SMOKE:
            raise EvidenceError(f"seeds {outside} are not in the plan's {plan.seeds}")
        check_seeds(list(seeds), SMOKE)  # whole and distinct; a subset may be short
    seeds = list(seeds) if seeds is not None else plan.seeds
    chosen = [a for nb, arms_ in plan.arms.items() if not notebooks or nb in notebooks
              for a in arms_ if not arms or a.name in arms]
    order = []
    for group in ([a for a in chosen if a.full], [a for a in chosen if not a.full]):
        order += [(arm, seed) for seed in seeds for arm in group]
    return order


def record_path(records: Path, arm: Arm, seed: int) -> Path:
    return Path(records) / arm.notebook / arm.name / f"seed-{seed}.json"


def read_records(records: Path, notebook: str, arm: str) -> list[dict]:
    """The records of one arm, by seed."""
    folder = Path(records) / notebook / arm
    found = [json.loads(p.read_text()) for p in folder.glob("seed-*.json")]
    return sorted(found, key=lambda r: r["evidence"]["seed"])


# ------------------------------------------------------------------ staleness

def staleness(record: dict, plan: Plan, parameters: dict, source: Path = ROOT,
              digests: dict | None = None) -> list[str]:
    """Why a record no longer stands for its run, in words (empty: it is current).
    ``digests``: the current code digests by notebook, if already computed."""
    said = []
    ev = record["evidence"]
    notebook = ev["notebook"]
    if digests is not None and notebook in digests:
        current = digests[notebook]
    else:
        current = publish.code_digest(source / "book" / f"{notebook}.ipynb", source)
    said += publish.changes(ev["code_digest"], current)
    if ev.get("profile") != plan.profile:
        said.append(f"profile {ev.get('profile')} in the record, {plan.profile} in the plan")
    if record.get("backend") != plan.backend:
        said.append(f"backend {record.get('backend')} in the record, {plan.backend} in the plan")
    old, new = compared(ev.get("parameters", {})), compared(parameters)
    differ = [f"{k} {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
              for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if differ:
        said.append("the plan changed: " + ", ".join(differ))
    return said


def check(plan: Plan, runs, records: Path, overrides: dict | None = None,
          source: Path = ROOT) -> list[tuple[Arm, int, str, list[str]]]:
    """``(arm, seed, "current" | "missing" | "stale", reasons)`` for each run."""
    digests = {nb: publish.code_digest(source / "book" / f"{nb}.ipynb", source)
               for nb in {arm.notebook for arm, _ in runs}}
    report = []
    for arm, seed in runs:
        path = record_path(records, arm, seed)
        if not path.is_file():
            report.append((arm, seed, "missing", []))
            continue
        reasons = staleness(json.loads(path.read_text()), plan,
                            run_parameters(plan, arm, seed, overrides, source), source, digests)
        report.append((arm, seed, "stale" if reasons else "current", reasons))
    return report


# ------------------------------------------------------------------ estimates

def _cost_model(record: dict, seconds: float | None = None) -> tuple[float, float] | None:
    """(seconds outside training, seconds per epoch) of a past run's record."""
    seconds = seconds if seconds is not None else (
        record.get("evidence", record.get("published", {})).get("notebook_seconds"))
    epochs = record.get("epoch_seconds") or []
    if seconds is None or not epochs:
        return None
    trained = sum(r.get("train_seconds", 0.0) for r in record["runs"].values()) \
        if isinstance(record.get("runs"), dict) else record.get("train_seconds", 0.0)
    return max(0.0, seconds - trained), statistics.fmean(epochs)


def estimate_seconds(plan: Plan, arm: Arm, records: Path, source: Path = ROOT) -> float | None:
    """How long one run of ``arm`` should take: from this arm's records if any,
    else from the run published for the plan's profile (``runs/<profile>/``),
    its time outside training plus its mean epoch times the plan's epochs.
    Scaled by epochs only: an arm of another size costs more or less per epoch."""
    past = [r for r in read_records(records, arm.notebook, arm.name)
            if r["evidence"].get("profile") == plan.profile] \
        if (Path(records) / arm.notebook / arm.name).is_dir() else []
    models = [m for m in (_cost_model(r) for r in past) if m]
    if not models:
        published = publish.published_runs(plan.profile, source).get(arm.notebook)
        model = _cost_model(published) if published else None
        models = [model] if model else []
    if not models:
        return None
    return statistics.fmean(outside + per_epoch * plan.epochs for outside, per_epoch in models)


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


# ------------------------------------------------------------------ statistics

@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (n - 1) of one arm's values over its seeds."""
    values: tuple
    n: int
    mean: float
    std: float  # nan for a single value
    low: float
    high: float


def summarize(values) -> Summary:
    values = tuple(float(v) for v in values)
    if not values:
        raise ValueError("no values to summarize")
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return Summary(values, n, mean, std, min(values), max(values))


def separated(a: Summary, b: Summary) -> bool:
    """The rule for calling a difference, conservative on purpose: each arm has at
    least ``MIN_SEEDS`` seeds, every seed of one arm is above every seed of the
    other, and the gap between the means is larger than the two standard
    deviations added together (their mean ± std bars do not touch)."""
    if a.n < MIN_SEEDS or b.n < MIN_SEEDS:
        return False
    apart = a.low > b.high or b.low > a.high
    return apart and abs(a.mean - b.mean) > a.std + b.std


def pm(s: Summary, digits: int = 1, unit: str = "%") -> str:
    """``66.1 ± 0.4%`` (a single value: ``66.1%``)."""
    if s.n < 2:
        return f"{s.mean:.{digits}f}{unit}"
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f}{unit}"


def seeds_phrase(a: Summary, b: Summary) -> str:
    if a.n == b.n:
        return f"{a.n} seed{'s' if a.n > 1 else ''} each"
    return f"{a.n} and {b.n} seeds"


def compare(label_a: str, a: Summary, label_b: str, b: Summary, what: str = "top-1") -> str:
    """One sentence comparing arm A with arm B, generated from their values (percent)."""
    head = (f"{label_a} reached {pm(a)} {what} against {pm(b)} for {label_b}, "
            f"over {seeds_phrase(a, b)}")
    gap = a.mean - b.mean
    if a.n < MIN_SEEDS or b.n < MIN_SEEDS:
        return (f"{head}: too few seeds to call a difference (at least {MIN_SEEDS} "
                f"per arm are needed).")
    if separated(a, b):
        return f"{head}: the seeds separate them ({gap:+.1f} points)."
    if a.low > b.high or b.low > a.high:
        return (f"{head}: every seed of one is above every seed of the other, but the "
                f"{abs(gap):.1f}-point gap is within their spread (± {a.std:.1f} and "
                f"± {b.std:.1f}): no difference at this budget.")
    return f"{head}: the seeds overlap: no difference at this budget."


RULE = (f"A difference is called only where each arm has at least {MIN_SEEDS} seeds, every "
        "seed of one is above every seed of the other, and the gap between the means is "
        "larger than their two standard deviations added together; otherwise the sentence "
        "says no difference was seen at this budget.")


def arm_summaries(records: list[dict]) -> dict:
    """top-1 and top-5 (percent), the notebook's wall time and the training time
    (minutes) of one arm's records."""
    return {
        "top1": summarize(100 * r["test_top1"] for r in records),
        "top5": summarize(100 * r["test_top5"] for r in records),
        "minutes": summarize(r["evidence"]["notebook_seconds"] / 60 for r in records),
        "train_minutes": summarize(r["train_seconds"] / 60 for r in records),
    }


def parameter_counts(records: list[dict]) -> str:
    """The models' parameter count (``1,391,569``), or its range if the seeds differ."""
    counts = sorted({r["parameter_count"] for r in records})
    return f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,} to {counts[-1]:,}"


def same_model_times(plan: Plan, records: Path) -> list[tuple[Arm, Summary, Summary]]:
    """The training times (minutes) of each arm declared ``same_model_as`` another
    notebook's full model and of that full model, where both have records and
    the same parameter count: one model trained in two runs made at different
    times, which shows how far its time moves from run to run."""
    pairs = []
    for arm in same_model_arms(plan):
        own = read_records(records, arm.notebook, arm.name)
        other = read_records(records, arm.same_model_as, plan.full_arm(arm.same_model_as).name)
        if own and other and {r["parameter_count"] for r in own} == {
                r["parameter_count"] for r in other}:
            pairs.append((arm, arm_summaries(own)["train_minutes"],
                          arm_summaries(other)["train_minutes"]))
    return pairs


def time_caveat(plan: Plan, records: Path) -> str:
    """What the training-time column can and cannot say, from the same-model pairs."""
    head = ("The training time is all epochs with their validation, of runs made one at a "
            "time on the machine above but not all in one session, and one model's time is "
            "not fixed from run to run")
    pairs = same_model_times(plan, records)
    if not pairs:
        return (head + ": no model of the plan has been trained twice yet to say by how "
                "much, so the column gives each arm's cost in size only.")
    from helpers.papers import TITLES  # plain names, no Keras

    said = "; ".join(
        f"{arm.label} of the {TITLES.get(arm.notebook, arm.notebook)} page and the "
        f"{TITLES.get(arm.same_model_as, arm.same_model_as)} page's full "
        f"model, the same model, trained in {pm(a, 1, ' min')} and {pm(b, 1, ' min')}, "
        f"{max(a.mean, b.mean) / min(a.mean, b.mean):.2f}× apart" for arm, a, b in pairs)
    return (head + f": {said}. A time gap no larger than that says nothing about the arms; "
            "the Performance page's benchmark times the models one after another in one "
            "process.")


def describe_budget(plan: Plan, records: list[dict]) -> str:
    """One sentence: the budget the records were trained at, read from them."""
    labels = sorted({r["evidence"]["dataset"].get("label") or str(r.get("dataset"))
                     for r in records})
    machines = sorted({f"{r['evidence']['machine']['cpu']}, {r['evidence']['machine']['cores']} "
                       "cores" for r in records})
    epochs = sorted({r["epochs"] for r in records})
    precision = sorted({r.get("precision", "float32") for r in records})
    backends = sorted({f"{r['backend']} {r['backend_version']}" for r in records})
    seeds = sorted({r["evidence"]["seed"] for r in records})
    dates = sorted(r["evidence"]["started_at"][:10] for r in records)
    return (f"Every arm trained {' or '.join(map(str, epochs))} epochs at the sizes of the "
            f"`{plan.profile}` profile on {', '.join(labels)}, {', '.join(backends)} in "
            f"{', '.join(precision)}, on {'; '.join(machines)}, seeds "
            f"{', '.join(map(str, seeds))}, {dates[0]} to {dates[-1]}; each cell gives the mean "
            "± sample standard deviation over the seeds.")


def outdated(notebook: str, records: list[dict], source: Path = ROOT) -> list[dict]:
    """The records of ``notebook`` whose code digest no longer matches its code."""
    digest = publish.code_digest(source / "book" / f"{notebook}.ipynb", source)
    return [r for r in records if publish.changes(r["evidence"]["code_digest"], digest)]


def stale_warning(stale_runs: list[str]) -> list[str]:
    """Markdown lines warning that the code changed since ``stale_runs``; none if empty."""
    if not stale_runs:
        return []
    return ["", "```{warning}",
            "The code has changed since these runs (" + ", ".join(stale_runs) + "): "
            "the table may not be what the notebook gives now. Run them again with "
            "`python -m helpers.book.evidence`.", "```"]


def ablation_markdown(notebook: str, plan: Plan, records: Path, source: Path = ROOT) -> str | None:
    """The ablation section of a paper page, from the evidence records; None if
    the notebook has no arm with a record."""
    if notebook not in plan.arms:
        return None
    found = {arm.name: read_records(records, notebook, arm.name) for arm in plan.arms[notebook]}
    if not any(found.values()):
        return None
    rows = []
    stale_runs = [f"{r['evidence']['arm']} seed {r['evidence']['seed']}"
                  for r in outdated(notebook, [r for got in found.values() for r in got], source)]
    summaries = {name: arm_summaries(got) for name, got in found.items() if got}
    for arm in plan.arms[notebook]:
        got = found[arm.name]
        if not got:
            rows.append(f"| {arm.label} | – | not run yet | | | 0 |")
            continue
        s = summaries[arm.name]
        tags = [t for t, on in (("full model", arm.full), ("baseline", arm.baseline)) if on]
        name = arm.label + (f" ({', '.join(tags)})" if tags else "")
        rows.append(f"| {name} | {parameter_counts(got)} | {pm(s['top1'], 2)} | "
                    f"{pm(s['top5'], 2)} | {pm(s['train_minutes'], 1, ' min')} | "
                    f"{s['top1'].n} |")
    base = plan.baseline_arm(notebook)
    pairs = [(arm.name, base.name) for arm in plan.arms[notebook] if arm is not base]
    pairs += plan.comparisons.get(notebook, [])
    accuracy = []
    for a, b in pairs:
        if a in summaries and b in summaries:
            accuracy.append(compare(plan.arm(notebook, a).label, summaries[a]["top1"],
                                    plan.arm(notebook, b).label, summaries[b]["top1"]))
    every = [r for got in found.values() for r in got]
    question = plan.questions.get(notebook) or "the paper's ablation"
    text = [f"## Ablation: {question}", "",
            "Each arm changes one thing of the model this page builds and trains it "
            "again with several seeds. " + describe_budget(plan, every), "",
            "| arm | parameters | test top-1 | test top-5 | training time | seeds |",
            "|---|---|---|---|---|---|", *rows, ""]
    text += [f"- {s}" for s in accuracy] + ["", RULE]
    text += ["", time_caveat(plan, records)]
    text += stale_warning(stale_runs)
    return "\n".join(text) + "\n"


# --------------------------------------------------------------- precision twins

@dataclass(frozen=True)
class Twin:
    """Two arms of one notebook that differ only in the precision they compute in."""
    notebook: str
    arm: Arm  # in the budget's precision
    reference: Arm  # the same model in another precision (its parameters set ``precision``)
    precision: str  # the budget's
    reference_precision: str


def precision_twins(plan: Plan) -> list[Twin]:
    """Every arm that sets a ``precision`` other than the budget's, with the arm whose
    other parameters are the same and which computes in the budget's precision."""
    def rest(arm):
        return {k: v for k, v in arm.parameters.items() if k != "precision"}

    twins = []
    for notebook, arms in plan.arms.items():
        for reference in arms:
            other = reference.parameters.get("precision", plan.precision)
            if other == plan.precision:
                continue
            same = [a for a in arms if a is not reference and rest(a) == rest(reference)
                    and a.parameters.get("precision", plan.precision) == plan.precision]
            if same:
                twins.append(Twin(notebook, same[0], reference, plan.precision, other))
    return twins


def agree(a: Summary, b: Summary) -> bool:
    """The two means agree within the seeds' spread: at least ``MIN_SEEDS`` seeds
    each, and the gap between the means no larger than the two standard
    deviations added together."""
    if a.n < MIN_SEEDS or b.n < MIN_SEEDS:
        return False
    return abs(a.mean - b.mean) <= a.std + b.std


def benchmark_speeds(path: Path | None) -> dict:
    """``{(model, dtype policy): images/s}`` of a benchmark record (one run, one device)."""
    if path is None or not Path(path).is_file():
        return {}
    record = json.loads(Path(path).read_text())
    return {(r["model"], r.get("dtype_policy", "float32")): r["images_per_second"]
            for r in record.get("results", []) if r.get("devices", 1) == 1}


def precision_markdown(plan: Plan, records: Path, *, titles: dict | None = None,
                       source: Path = ROOT) -> str | None:
    """Whether the budget's precision holds each twin's accuracy, from the records:
    a table (top-1 mean ± std in each precision, the benchmark's speed ratio) and
    one generated sentence per model; None when no twin has a record yet."""
    twins = precision_twins(plan)
    found = {t: (read_records(records, t.notebook, t.arm.name),
                 read_records(records, t.notebook, t.reference.name)) for t in twins}
    if not any(a or b for a, b in found.values()):
        return None
    titles = titles or {}
    speeds = benchmark_speeds(source / plan.benchmark if plan.benchmark else None)
    rows, sentences, stale_runs, every = [], [], [], []
    for twin, (fast, slow) in found.items():
        title = titles.get(twin.notebook, twin.notebook)
        stale_runs += [f"{twin.notebook} {r['evidence']['arm']} seed {r['evidence']['seed']}"
                       for r in outdated(twin.notebook, fast + slow, source)]
        every += fast + slow
        a = arm_summaries(fast)["top1"] if fast else None
        b = arm_summaries(slow)["top1"] if slow else None
        ratio = (speeds[(twin.notebook, twin.precision)]
                 / speeds[(twin.notebook, twin.reference_precision)]
                 if (twin.notebook, twin.precision) in speeds
                 and (twin.notebook, twin.reference_precision) in speeds else None)
        rows.append(f"| {title} | {pm(a, 2) if a else 'not run yet'} | "
                    f"{pm(b, 2) if b else 'not run yet'} | "
                    f"{f'{ratio:.2f}×' if ratio else '–'} | {a.n if a else 0} and {b.n if b else 0} |")
        if not (a and b):
            continue
        if a.n < MIN_SEEDS or b.n < MIN_SEEDS:
            verdict = (f"too few seeds so far ({a.n} and {b.n}; at least {MIN_SEEDS} each) "
                       f"to say whether {twin.precision} holds its accuracy")
        elif agree(a, b):
            verdict = (f"{twin.precision} holds its accuracy at this budget: the means are "
                       f"{abs(a.mean - b.mean):.2f} points apart, within the seeds' spread "
                       f"(± {a.std:.2f} and ± {b.std:.2f})")
        else:
            verdict = (f"{twin.precision} does not hold its accuracy at this budget: the "
                       f"means are {abs(a.mean - b.mean):.2f} points apart, more than the "
                       f"seeds' spread (± {a.std:.2f} and ± {b.std:.2f})")
        speed = (f"; in the benchmark it trains {ratio:.2f} times as fast as in "
                 f"{twin.reference_precision}" if ratio else "")
        sentences.append(f"{title}: {pm(a, 2)} top-1 in {twin.precision} against {pm(b, 2)} "
                         f"in {twin.reference_precision}, over {seeds_phrase(a, b)}: "
                         f"{verdict}{speed}.")
    others = sorted({t.reference_precision for t in found})
    other = others[0] if len(others) == 1 else "the other precision"
    text = [describe_budget(plan, every), "",
            f"| model | top-1, {plan.precision} | top-1, {other} | "
            "speed ratio (benchmark) | seeds |", "|---|---|---|---|---|", *rows, ""]
    text += [f"- {s}" for s in sentences]
    text += ["", "The precision is taken to hold accuracy where each side has at least "
             f"{MIN_SEEDS} seeds and the gap between the means is no larger than their two "
             "standard deviations added together."]
    text += stale_warning(stale_runs)
    return "\n".join(text) + "\n"


# ---------------------------------------------------------------------- running

def run_one(plan: Plan, arm: Arm, seed: int, parameters: dict, *, source: Path, site: Path,
            work: Path, records: Path, provenance: dict) -> dict:
    """Execute one run and write its record; returns the record."""
    from helpers.book import runner

    notebook = Path("book") / f"{arm.notebook}.ipynb"
    results = (work / arm.notebook / arm.name / f"seed-{seed}").resolve()
    values = {**parameters, "results_dir": str(results)}
    runner.check_parameters(source / notebook, values)
    digest = publish.code_digest(source / notebook, source)
    started = datetime.datetime.now(datetime.timezone.utc)
    seconds = runner.execute(source, site, notebook, values, plan.backend)
    record = json.loads((results / f"{arm.notebook}.json").read_text())
    record["evidence"] = {
        "notebook": arm.notebook, "arm": arm.name, "seed": seed, "profile": plan.profile,
        "full_model": arm.full, "parameters": compared(values), **provenance,
        "started_at": started.isoformat(timespec="seconds"),
        "notebook_seconds": round(seconds, 1), "code_digest": digest,
    }
    path = record_path(records, arm, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".part")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(path)  # a record is whole or absent, even if killed here
    shutil.rmtree(results, ignore_errors=True)  # its backups and model files
    return record


def run_plan(plan: Plan, runs, *, source: Path = ROOT, records: Path, build_dir: Path,
             overrides: dict | None = None, dataset_label: str | None = None,
             allow_dirty: bool = False, out=print) -> list[str]:
    """Run every (arm, seed) of ``runs`` without a current record, one at a time;
    returns the failures (a failed run is reported and the next one starts)."""
    from helpers.book import runner
    from helpers.book.export import ExportError, stale_modules

    source = source.resolve()
    overrides = dict(overrides or {})
    commit, dirty = publish.git_commit(source)
    if dirty and not allow_dirty and plan.profile != SMOKE:
        raise EvidenceError("the working tree has uncommitted changes: a record must name "
                            "the commit it ran (or pass --allow-dirty)")
    try:
        stale = stale_modules(source)
    except ExportError as error:
        raise EvidenceError(str(error)) from None
    if stale:
        raise EvidenceError(f"out of date: {', '.join(str(p.relative_to(source)) for p in stale)}"
                            "; run python -m helpers.book.export")
    todo = [(arm, seed) for arm, seed, state, _ in check(plan, runs, records, overrides, source)
            if state != "current"]
    out(f"{len(runs) - len(todo)} of {len(runs)} runs have a current record; {len(todo)} to run")
    if not todo:
        return []
    dataset = overrides.get("dataset")
    data = {"label": dataset_label or dataset or
            runner.load_profile(source, plan.profile)["common"].get("dataset")}
    if dataset and Path(dataset).is_file():
        data.update(file=Path(dataset).name, sha256=publish.file_sha256(Path(dataset)))
    provenance = {"commit": commit, "dirty": dirty, "machine": publish.machine(), "dataset": data,
                  "backend": plan.backend}
    build = (source / build_dir).resolve()
    site = build / "site"
    runner.prepare_tree(source, site)
    estimates = {arm: estimate_seconds(plan, arm, records, source) for arm, _ in todo}
    began, taken, failures = time.perf_counter(), [], []
    for index, (arm, seed) in enumerate(todo, 1):
        left = todo[index - 1:]
        known = [estimates[a] for a, _ in left]
        guess = (sum(e if e is not None else statistics.fmean(taken) for e in known)
                 if all(e is not None for e in known) or taken else None)
        out(f"== run {index} of {len(todo)}: {arm.notebook} / {arm.name} / seed {seed}; "
            f"elapsed {clock(time.perf_counter() - began)}, estimated remaining {clock(guess)}")
        parameters = run_parameters(plan, arm, seed, overrides, source)
        start = time.perf_counter()
        try:
            record = run_one(plan, arm, seed, parameters, source=source, site=site,
                             work=build / "work", records=records, provenance=provenance)
        except runner.BookError as error:
            failures.append(f"{arm.notebook} / {arm.name} / seed {seed}: {error}")
            out(f"== failed: {failures[-1]}")
            continue
        taken.append(time.perf_counter() - start)
        out(f"== {arm.notebook} / {arm.name} / seed {seed}: top-1 "
            f"{100 * record['test_top1']:.2f}% in {clock(taken[-1])}")
    out(f"done in {clock(time.perf_counter() - began)}: {len(todo) - len(failures)} runs written"
        + (f", {len(failures)} failed" if failures else ""))
    return failures


def default_records(plan: Plan, source: Path = ROOT, planned_profile: str | None = None) -> Path:
    """``runs/evidence`` for the plan's own profile; a build folder for another
    (a smoke try must not mix with the published records)."""
    if planned_profile is None or plan.profile == planned_profile:
        return source / EVIDENCE
    return source / "_build" / f"evidence-{plan.profile}" / "records"


def main(argv=None, source: Path = ROOT) -> int:
    from helpers.book import runner

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", default=str(source / PLAN), help="the plan (evidence.yml)")
    parser.add_argument("--profile", help="run the plan at this profile's sizes instead "
                                          f"(`{SMOKE}` may run fewer than {MIN_SEEDS} seeds)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="override a parameter of every run (the dataset's path, for one)")
    parser.add_argument("--dataset-label", help='how pages name the dataset ("CIFAR-10 (JPEG copy)")')
    parser.add_argument("--notebooks", nargs="+", metavar="NAME", help="only these notebooks")
    parser.add_argument("--arms", nargs="+", metavar="NAME", help="only these arms")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="N", help="only these seeds")
    parser.add_argument("--records", type=Path, help="where the records go (default: "
                        f"{EVIDENCE} for the plan's profile, _build/evidence-<profile>/records "
                        "for another)")
    parser.add_argument("--build-dir", type=Path, help="where the executed notebooks and "
                        "backups go (default _build/evidence-<profile>)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run from a working tree with uncommitted changes")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs without a current record and estimate their time")
    parser.add_argument("--check", action="store_true",
                        help="say which records are missing or stale (exit 1 if any)")
    args = parser.parse_args(argv)
    overrides = runner._parse_overrides(args.parameter)
    try:
        planned = load_plan(args.plan, source=source, check_names=False).profile \
            if args.profile else None
        plan = load_plan(args.plan, profile=args.profile, source=source)
        runs = planned_runs(plan, args.notebooks, args.arms, args.seeds)
        records = args.records or default_records(plan, source, planned)
        if args.check or args.dry_run:
            report = check(plan, runs, records, overrides, source)
            total, unknown = 0.0, 0
            for arm, seed, state, reasons in report:
                if args.dry_run and state == "current":
                    continue
                line = f"{arm.notebook} / {arm.name} / seed {seed}: {state}"
                if args.dry_run:
                    estimate = estimate_seconds(plan, arm, records, source)
                    total += estimate or 0.0
                    unknown += estimate is None
                    line += f", about {clock(estimate)}"
                print(line + (": " + "; ".join(reasons) if reasons else ""))
            todo = sum(state != "current" for _, _, state, _ in report)
            print(f"{todo} of {len(report)} runs to do ({plan.profile}, {plan.epochs} epochs, "
                  f"{plan.backend} {plan.precision}, records in {records})")
            if args.dry_run:
                print(f"estimated total: {clock(total)}"
                      + (f" and {unknown} runs with no past time to go by" if unknown else ""))
            return 1 if args.check and todo else 0
        failures = run_plan(plan, runs, source=source, records=records,
                            build_dir=args.build_dir or Path("_build") / f"evidence-{plan.profile}",
                            overrides=overrides, dataset_label=args.dataset_label,
                            allow_dirty=args.allow_dirty)
    except (EvidenceError, runner.BookError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
