"""The evidence runs (helpers.book.evidence): the plan, the statistics and their
rule, resuming, staleness, the pages that show the records, and one run at smoke size."""

import json
import math
import textwrap

import nbformat
import pytest

from helpers.book import evidence, publish, runner

from conftest import ROOT

PLAN = """\
budget:
  profile: cifar10-cpu
  epochs: 2
  backend: tensorflow
  precision: float32
seeds: [0, 1, 2]
benchmark: runs/bench/cifar10-cpu-precision-tensorflow.json
notebooks:
  vit:
    question: patch size
    full: patch-4
    baseline: patch-4
    arms:
      patch-4: {label: patches of 4 px, parameters: {patch_size: 4}}
      patch-8: {label: patches of 8 px, parameters: {patch_size: 8}}
  cct:
    full: two
    baseline: two
    arms:
      two: {label: two convolutions, parameters: {conv_layers: 2}}
"""


def write_plan(tmp_path, text=PLAN, **replace):
    for old, new in replace.items():
        text = text.replace(old.replace("_", " "), new)
    path = tmp_path / "evidence.yml"
    path.write_text(text)
    return path


# -------------------------------------------------------------------- the plan

def test_a_plan_gives_each_notebook_its_arms_full_model_and_baseline(tmp_path):
    plan = evidence.load_plan(write_plan(tmp_path))
    assert (plan.profile, plan.epochs, plan.backend, plan.precision) == \
        ("cifar10-cpu", 2, "tensorflow", "float32")
    assert [a.name for a in plan.arms["vit"]] == ["patch-4", "patch-8"]
    assert plan.full_arm("vit").name == "patch-4" and plan.baseline_arm("vit").name == "patch-4"
    assert plan.arm("vit", "patch-8").parameters == {"patch_size": 8}


def test_the_run_parameters_are_the_profile_then_the_budget_then_the_arm_and_seed(tmp_path):
    plan = evidence.load_plan(write_plan(tmp_path))
    values = evidence.run_parameters(plan, plan.arm("vit", "patch-8"), 2, {"n_train": 256})
    profile = runner.profile_parameters("vit", "cifar10-cpu")
    assert values["projection_dim"] == profile["projection_dim"]  # the profile's sizes
    assert values["epochs"] == 2 and values["precision"] == "float32"  # the budget
    assert values["patch_size"] == 8 and values["seed"] == 2 and values["n_train"] == 256


def test_an_unknown_notebook_is_refused(tmp_path):
    path = write_plan(tmp_path, PLAN.replace("  cct:\n", "  nosuch:\n"))
    with pytest.raises(evidence.EvidenceError, match="no model notebook 'nosuch'"):
        evidence.load_plan(path)


def test_a_parameter_the_notebook_does_not_declare_is_refused(tmp_path):
    path = write_plan(tmp_path, PLAN.replace("{patch_size: 8}", "{patch_sise: 8}"))
    with pytest.raises(evidence.EvidenceError, match="arm patch-8 of vit sets patch_sise"):
        evidence.load_plan(path)


def test_full_and_baseline_must_name_arms(tmp_path):
    path = write_plan(tmp_path, PLAN.replace("full: two", "full: three"))
    with pytest.raises(evidence.EvidenceError, match="cct's full must name one of its arms"):
        evidence.read_plan(path)


def test_fewer_than_three_seeds_are_refused_except_at_smoke_size(tmp_path):
    path = write_plan(tmp_path, PLAN.replace("[0, 1, 2]", "[0, 1]"))
    with pytest.raises(evidence.EvidenceError, match="at least 3 seeds"):
        evidence.read_plan(path)
    assert evidence.read_plan(path, profile="smoke").seeds == [0, 1]
    with pytest.raises(evidence.EvidenceError, match="distinct"):
        evidence.read_plan(write_plan(tmp_path, PLAN.replace("[0, 1, 2]", "[0, 1, 1]")))


def test_a_seed_outside_the_plan_is_refused_except_at_smoke_size(tmp_path):
    plan = evidence.read_plan(write_plan(tmp_path))
    with pytest.raises(evidence.EvidenceError, match=r"seeds \[7\] are not in the plan"):
        evidence.planned_runs(plan, seeds=[0, 7])
    smoke = evidence.read_plan(write_plan(tmp_path), profile="smoke")
    assert [s for _, s in evidence.planned_runs(smoke, notebooks=["cct"], seeds=[7])] == [7]


def test_the_full_models_of_every_seed_run_before_the_other_arms(tmp_path):
    plan = evidence.read_plan(write_plan(tmp_path))
    order = [(a.notebook, a.name, s) for a, s in evidence.planned_runs(plan)]
    assert order == [("vit", "patch-4", 0), ("cct", "two", 0), ("vit", "patch-4", 1),
                     ("cct", "two", 1), ("vit", "patch-4", 2), ("cct", "two", 2),
                     ("vit", "patch-8", 0), ("vit", "patch-8", 1), ("vit", "patch-8", 2)]
    assert evidence.planned_runs(plan, arms=["patch-8"], seeds=[1])[0][0].name == "patch-8"


def test_the_committed_plan_is_valid_against_the_notebooks():
    """Fails while a notebook does not yet declare a parameter an arm sets."""
    plan = evidence.load_plan(ROOT / "evidence.yml")
    assert len(plan.seeds) >= evidence.MIN_SEEDS
    assert set(plan.arms) == {"vit", "spt_lsa", "perceiver", "cct", "shiftvit"}
    assert (ROOT / plan.benchmark).is_file()


# ------------------------------------------------------------------ statistics

def test_a_summary_is_the_mean_and_the_sample_standard_deviation():
    s = evidence.summarize([66.0, 66.5, 65.8])
    # by hand: mean 198.3 / 3 = 66.1; squares 0.01 + 0.16 + 0.09 = 0.26, / (3 - 1) = 0.13
    assert s.n == 3 and s.mean == pytest.approx(66.1) and s.std == pytest.approx(math.sqrt(0.13))
    assert (s.low, s.high) == (65.8, 66.5)
    assert math.isnan(evidence.summarize([70.0]).std)
    assert evidence.pm(s) == "66.1 ± 0.4%" and evidence.pm(evidence.summarize([70.0])) == "70.0%"


def test_seeds_that_separate_two_arms_call_the_difference():
    a, b = evidence.summarize([66.0, 66.5, 65.8]), evidence.summarize([63.0, 63.5, 62.5])
    assert evidence.separated(a, b) and evidence.separated(b, a)
    assert evidence.compare("SPT + LSA", a, "the vanilla ViT", b) == (
        "SPT + LSA reached 66.1 ± 0.4% top-1 against 63.0 ± 0.5% for the vanilla ViT, "
        "over 3 seeds each: the seeds separate them (+3.1 points).")
    assert "(-3.1 points)" in evidence.compare("B", b, "A", a)


def test_overlapping_seeds_call_no_difference():
    a, b = evidence.summarize([64.0, 66.0, 65.0]), evidence.summarize([63.0, 65.0, 64.0])
    assert not evidence.separated(a, b)
    assert evidence.compare("A", a, "B", b).endswith(
        "the seeds overlap: no difference at this budget.")


def test_seeds_apart_but_within_their_spread_call_no_difference():
    # every seed of A (60.1 to 61) above every seed of B (58 to 60), but the gap of the
    # means, 60.7 - 59.3 = 1.4, is under sqrt(0.27) + sqrt(1.27) = 0.52 + 1.13 = 1.65
    a, b = evidence.summarize([61.0, 61.0, 60.1]), evidence.summarize([59.9, 60.0, 58.0])
    assert a.low > b.high and not evidence.separated(a, b)
    sentence = evidence.compare("A", a, "B", b)
    assert "1.4-point gap is within their spread (± 0.5 and ± 1.1)" in sentence
    assert sentence.endswith("no difference at this budget.")


def test_fewer_than_three_seeds_never_call_a_difference():
    a, b = evidence.summarize([70.0, 71.0]), evidence.summarize([60.0, 61.0])
    assert not evidence.separated(a, b)
    assert "over 2 seeds each: too few seeds to call a difference" in evidence.compare("A", a, "B", b)


# ------------------------------------------------------- resuming and staleness

def fake_record(plan, arm, seed, parameters, source=ROOT, top1=0.6):
    return {
        "notebook": arm.notebook, "backend": plan.backend, "backend_version": "2.x",
        "keras_version": "3.x", "epochs": parameters["epochs"],
        "precision": parameters.get("precision", plan.precision),
        "test_top1": top1 + seed / 100, "test_top5": 0.9, "parameter_count": 1000,
        "train_seconds": 50.0, "epoch_seconds": [30.0, 20.0], "dataset": "cifar10",
        "parameters": parameters, "image_shape": [32, 32, 3], "num_classes": 10,
        "evidence": {
            "notebook": arm.notebook, "arm": arm.name, "seed": seed, "profile": plan.profile,
            "full_model": arm.full, "parameters": evidence.compared(parameters),
            "commit": "0123456789", "dirty": False, "backend": plan.backend,
            "machine": {"cpu": "Some CPU", "cores": 2}, "dataset": {"label": "CIFAR-10"},
            "started_at": "2026-12-05T10:00:00+00:00", "notebook_seconds": 120.0 + seed,
            "code_digest": publish.code_digest(source / "book" / f"{arm.notebook}.ipynb", source),
        },
    }


@pytest.fixture
def fake_runs(monkeypatch):
    """run_plan with each run writing a fake record instead of executing the notebook."""
    from helpers.book import export

    ran = []

    def run_one(plan, arm, seed, parameters, *, records, **_):
        ran.append((arm.name, seed))
        path = evidence.record_path(records, arm, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = fake_record(plan, arm, seed, parameters)
        path.write_text(json.dumps(record))
        return record

    monkeypatch.setattr(evidence, "run_one", run_one)
    monkeypatch.setattr(runner, "prepare_tree", lambda source, site: None)
    monkeypatch.setattr(export, "stale_modules", lambda source: [])
    return ran


def test_a_second_run_does_nothing_and_a_deleted_record_is_run_again(tmp_path, fake_runs):
    plan = evidence.load_plan(write_plan(tmp_path))
    runs = evidence.planned_runs(plan, notebooks=["vit"])
    records = tmp_path / "records"

    def go():
        return evidence.run_plan(plan, runs, records=records, build_dir=tmp_path / "build",
                                 allow_dirty=True, out=lambda line: None)

    assert go() == [] and len(fake_runs) == 6
    fake_runs.clear()
    go()
    assert fake_runs == []
    evidence.record_path(records, plan.arm("vit", "patch-8"), 1).unlink()
    go()
    assert fake_runs == [("patch-8", 1)]


def test_progress_names_each_run_with_elapsed_and_remaining_time(tmp_path, fake_runs):
    plan = evidence.load_plan(write_plan(tmp_path))
    lines = []
    evidence.run_plan(plan, evidence.planned_runs(plan, notebooks=["cct"]),
                      records=tmp_path / "records", build_dir=tmp_path / "build",
                      allow_dirty=True, out=lines.append)
    assert lines[0] == "0 of 3 runs have a current record; 3 to run"
    assert lines[1].startswith("== run 1 of 3: cct / two / seed 0; elapsed 0 min, "
                               "estimated remaining ")
    assert lines[-1].startswith("done in ")


def test_check_calls_a_record_stale_when_the_plan_or_the_code_changed(tmp_path, fake_runs):
    plan = evidence.load_plan(write_plan(tmp_path))
    runs = evidence.planned_runs(plan, notebooks=["cct"])
    records = tmp_path / "records"
    evidence.run_plan(plan, runs, records=records, build_dir=tmp_path / "build",
                      allow_dirty=True, out=lambda line: None)
    assert {state for *_, state, _ in evidence.check(plan, runs, records)} == {"current"}

    longer = evidence.load_plan(write_plan(tmp_path, PLAN.replace("epochs: 2", "epochs: 3")))
    (_, _, state, reasons), *_ = evidence.check(longer, runs, records)
    assert state == "stale" and reasons == ["the plan changed: epochs 2 -> 3"]

    path = evidence.record_path(records, plan.arm("cct", "two"), 0)
    record = json.loads(path.read_text())
    record["evidence"]["code_digest"]["cells"][3] = "0" * 16  # another code cell ran
    path.write_text(json.dumps(record))
    report = evidence.check(plan, runs, records)
    assert report[0][2:] == ("stale", ["1 code cell of the notebook changed"])
    assert [state for *_, state, _ in report[1:]] == ["current", "current"]
    path.unlink()
    assert evidence.check(plan, runs, records)[0][2] == "missing"


def test_the_check_command_exits_1_while_a_record_is_missing(tmp_path, capsys):
    plan_path = write_plan(tmp_path)
    code = evidence.main(["--plan", str(plan_path), "--check", "--notebooks", "cct",
                          "--records", str(tmp_path / "records")])
    out = capsys.readouterr().out
    assert code == 1 and "cct / two / seed 0: missing" in out and "3 of 3 runs to do" in out


def test_the_dry_run_estimates_from_the_published_run_scaled_by_epochs(tmp_path, capsys):
    plan_path = write_plan(tmp_path)
    cct = json.loads((ROOT / "runs/cifar10-cpu/results/cct.json").read_text())
    outside = cct["published"]["notebook_seconds"] - cct["train_seconds"]
    per_epoch = sum(cct["epoch_seconds"]) / len(cct["epoch_seconds"])
    plan = evidence.read_plan(plan_path)
    assert evidence.estimate_seconds(plan, plan.arm("cct", "two"), tmp_path) == \
        pytest.approx(outside + 2 * per_epoch)
    assert evidence.main(["--plan", str(plan_path), "--dry-run", "--notebooks", "cct",
                          "--records", str(tmp_path / "records")]) == 0
    total = evidence.clock(3 * (outside + 2 * per_epoch))
    assert f"estimated total: {total}" in capsys.readouterr().out


# ------------------------------------------------------------------ the pages

def write_arm(records, plan, notebook, arm, top1s, train_seconds=None, parameter_count=None):
    """One record per seed: top-1 ``top1s[seed]``; ``train_seconds[seed]`` and the
    ``parameter_count`` where given (else fake_record's)."""
    arm = plan.arm(notebook, arm)
    for seed, top1 in enumerate(top1s):
        values = evidence.run_parameters(plan, arm, seed)
        record = fake_record(plan, arm, seed, values, top1=top1 - seed / 100)
        if train_seconds is not None:
            record["train_seconds"] = train_seconds[seed]
        if parameter_count is not None:
            record["parameter_count"] = parameter_count
        path = evidence.record_path(records, arm, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))


def test_the_ablation_section_tables_the_arms_and_says_what_the_seeds_show(tmp_path):
    plan = evidence.load_plan(write_plan(tmp_path))
    records = tmp_path / "records"
    assert evidence.ablation_markdown("vit", plan, records) is None
    write_arm(records, plan, "vit", "patch-4", [0.660, 0.665, 0.658], parameter_count=1_391_569)
    write_arm(records, plan, "vit", "patch-8", [0.630, 0.635, 0.625], parameter_count=611_281,
              train_seconds=[60.0, 66.0, 72.0])
    text = evidence.ablation_markdown("vit", plan, records)
    assert text.startswith("## Ablation: patch size\n")
    # parameters from the records; the cost is the training time (fake_record: 50 s)
    assert ("| patches of 4 px (full model, baseline) | 1,391,569 | 66.10 ± 0.36% | "
            "90.00 ± 0.00% | 0.8 ± 0.0 min | 3 |") in text
    assert "| patches of 8 px | 611,281 | 63.00 ± 0.50% | 90.00 ± 0.00% | 1.1 ± 0.1 min | 3 |" \
        in text
    assert ("- patches of 8 px reached 63.0 ± 0.5% top-1 against 66.1 ± 0.4% for patches of "
            "4 px, over 3 seeds each: the seeds separate them (-3.1 points).") in text
    assert "2 epochs at the sizes of the `cifar10-cpu` profile on CIFAR-10" in text
    assert evidence.RULE in text and "{warning}" not in text


def test_the_ablation_section_warns_when_the_code_changed_since_the_runs(tmp_path):
    plan = evidence.load_plan(write_plan(tmp_path))
    records = tmp_path / "records"
    write_arm(records, plan, "cct", "two", [0.7, 0.7, 0.7])
    path = evidence.record_path(records, plan.arm("cct", "two"), 2)
    record = json.loads(path.read_text())
    record["evidence"]["code_digest"]["modules"] = {}
    path.write_text(json.dumps(record))
    text = evidence.ablation_markdown("cct", plan, records)
    assert "{warning}" in text and "(two seed 2)" in text


SPT_LSA_FOUR = """\
  spt_lsa:
    full: spt-lsa
    baseline: vanilla
    compare: [[spt-lsa, spt]]
    arms:
      vanilla: {label: the vanilla ViT, same_model_as: vit,
                parameters: {spt: false, lsa: false, train_vanilla: false}}
      spt: {label: SPT only, parameters: {spt: true, lsa: false, train_vanilla: false}}
      spt-lsa: {label: SPT + LSA, parameters: {spt: true, lsa: true, train_vanilla: false}}
"""


def test_a_pair_the_plan_names_in_compare_gets_its_own_sentence(tmp_path):
    plan = evidence.load_plan(write_plan(tmp_path, PLAN + SPT_LSA_FOUR))
    assert plan.comparisons["spt_lsa"] == [("spt-lsa", "spt")]
    records = tmp_path / "records"
    write_arm(records, plan, "spt_lsa", "vanilla", [0.560, 0.565, 0.558])
    write_arm(records, plan, "spt_lsa", "spt", [0.600, 0.605, 0.598])
    write_arm(records, plan, "spt_lsa", "spt-lsa", [0.601, 0.606, 0.599])
    text = evidence.ablation_markdown("spt_lsa", plan, records)
    assert ("- SPT only reached 60.1 ± 0.4% top-1 against 56.1 ± 0.4% for the vanilla ViT, over "
            "3 seeds each: the seeds separate them (+4.0 points).") in text
    # what LSA adds on top of SPT, beside what both add to the baseline
    assert ("- SPT + LSA reached 60.2 ± 0.4% top-1 against 60.1 ± 0.4% for SPT only, over 3 "
            "seeds each: the seeds overlap: no difference at this budget.") in text
    assert text.count("top-1 against") == 3


@pytest.mark.parametrize("pairs, problem", [
    ("[[spt-lsa, lsa]]", "each entry is a pair of two of its arms"),  # no arm lsa
    ("[[spt, spt]]", "each entry is a pair of two of its arms"),
    ("[[spt-lsa]]", "each entry is a pair of two of its arms"),
    ("[[spt-lsa, vanilla]]", "already compared"),  # every arm meets the baseline
    ("spt-lsa", "must be a list"),
])
def test_compare_must_name_pairs_of_two_other_arms(tmp_path, pairs, problem):
    path = write_plan(tmp_path, PLAN + SPT_LSA_FOUR.replace("[[spt-lsa, spt]]", pairs))
    with pytest.raises(evidence.EvidenceError, match=f"spt_lsa's compare.*{problem}"):
        evidence.read_plan(path)


@pytest.mark.parametrize("other", ["spt_lsa", "perceiver"])
def test_same_model_as_must_name_another_notebook_of_the_plan(tmp_path, other):
    path = write_plan(tmp_path, PLAN + SPT_LSA_FOUR.replace("same_model_as: vit",
                                                           f"same_model_as: {other}"))
    with pytest.raises(evidence.EvidenceError, match="arm vanilla of spt_lsa: same_model_as"):
        evidence.read_plan(path)
    plan = evidence.read_plan(write_plan(tmp_path, PLAN + SPT_LSA_FOUR))
    assert [(a.notebook, a.name, a.same_model_as) for a in evidence.same_model_arms(plan)] == \
        [("spt_lsa", "vanilla", "vit")]


def test_the_time_column_is_read_against_one_models_time_in_two_runs(tmp_path):
    plan = evidence.load_plan(write_plan(tmp_path, PLAN + SPT_LSA_FOUR))
    records = tmp_path / "records"
    top1 = [0.60, 0.60, 0.60]
    write_arm(records, plan, "spt_lsa", "vanilla", top1, train_seconds=[60, 61, 59])
    write_arm(records, plan, "spt_lsa", "spt", top1, train_seconds=[78, 79, 77])
    # without the ViT's runs, no model has been trained twice
    text = evidence.ablation_markdown("spt_lsa", plan, records)
    assert "| SPT only | 1,000 | 60.00 ± 0.00% | 90.00 ± 0.00% | 1.3 ± 0.0 min | 3 |" in text
    assert evidence.same_model_times(plan, records) == []
    assert "no model of the plan has been trained twice yet" in text
    # the ViT notebook's full model is the same model: it trained in 1.5x the time
    write_arm(records, plan, "vit", "patch-4", top1, train_seconds=[90, 91, 89])
    [(arm, own, other)] = evidence.same_model_times(plan, records)
    assert (arm.name, own.mean, other.mean) == ("vanilla", 1.0, 1.5)
    text = evidence.ablation_markdown("spt_lsa", plan, records)
    assert ("the vanilla ViT of the SL-ViT (SPT + LSA) page and the ViT page's full model, "
            "the same model, trained in 1.0 ± 0.0 min and 1.5 ± 0.0 min, 1.50× apart. A time "
            "gap no larger than that says nothing about the arms") in text
    assert "trained twice yet" not in text
    # a model of another size is not the same model: it says nothing about the spread
    write_arm(records, plan, "vit", "patch-4", top1, train_seconds=[90, 91, 89],
              parameter_count=999)
    assert evidence.same_model_times(plan, records) == []


TWINS = PLAN.replace("precision: float32", "precision: mixed_bfloat16").replace(
    "      patch-8: {label: patches of 8 px, parameters: {patch_size: 8}}\n",
    "      patch-8: {label: patches of 8 px, parameters: {patch_size: 8}}\n"
    "      patch-4-float32: {label: patches of 4 px in float32,\n"
    "                        parameters: {patch_size: 4, precision: float32}}\n")


def test_an_arm_in_another_precision_is_paired_with_its_twin_in_the_budgets(tmp_path):
    plan = evidence.load_plan(write_plan(tmp_path, TWINS))
    [twin] = evidence.precision_twins(plan)
    assert (twin.notebook, twin.arm.name, twin.reference.name) == \
        ("vit", "patch-4", "patch-4-float32")
    assert (twin.precision, twin.reference_precision) == ("mixed_bfloat16", "float32")
    values = evidence.run_parameters(plan, twin.reference, 0)
    assert values["precision"] == "float32" and values["patch_size"] == 4
    assert evidence.run_parameters(plan, twin.arm, 0)["precision"] == "mixed_bfloat16"
    assert evidence.precision_twins(evidence.load_plan(write_plan(tmp_path))) == []


def write_bench(tmp_path, fast, slow):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"results": [
        {"model": "vit", "dtype_policy": "float32", "images_per_second": slow, "devices": 1},
        {"model": "vit", "dtype_policy": "mixed_bfloat16", "images_per_second": fast,
         "devices": 1}]}))
    return path


def test_the_precision_section_says_bfloat16_holds_where_the_means_agree_within_the_spread(
        tmp_path):
    plan = evidence.load_plan(write_plan(tmp_path, TWINS))
    plan.benchmark = str(write_bench(tmp_path, 300.0, 240.0))
    records = tmp_path / "records"
    assert evidence.precision_markdown(plan, records) is None
    write_arm(records, plan, "vit", "patch-4", [0.500, 0.510, 0.505])
    write_arm(records, plan, "vit", "patch-4-float32", [0.505, 0.498, 0.512])
    text = evidence.precision_markdown(plan, records, titles={"vit": "ViT"})
    assert "| ViT | 50.50 ± 0.50% | 50.50 ± 0.70% | 1.25× | 3 and 3 |" in text
    assert ("- ViT: 50.50 ± 0.50% top-1 in mixed_bfloat16 against 50.50 ± 0.70% in float32, "
            "over 3 seeds each: mixed_bfloat16 holds its accuracy at this budget: the means "
            "are 0.00 points apart, within the seeds' spread (± 0.50 and ± 0.70); in the "
            "benchmark it trains 1.25 times as fast as in float32.") in text
    assert "in float32, mixed_bfloat16" in text  # the budget sentence names both


def test_the_precision_section_says_bfloat16_does_not_hold_where_the_means_part(tmp_path):
    plan = evidence.load_plan(write_plan(tmp_path, TWINS))
    plan.benchmark = None
    records = tmp_path / "records"
    write_arm(records, plan, "vit", "patch-4", [0.450, 0.455, 0.452])
    write_arm(records, plan, "vit", "patch-4-float32", [0.500, 0.498, 0.505])
    text = evidence.precision_markdown(plan, records)
    assert "mixed_bfloat16 does not hold its accuracy at this budget" in text
    assert "| – |" in text  # no benchmark record: no speed ratio
    write_arm(records, plan, "vit", "patch-4", [0.450])
    for seed in (1, 2):
        evidence.record_path(records, plan.arm("vit", "patch-4"), seed).unlink()
    text = evidence.precision_markdown(plan, records)
    assert "too few seeds so far (1 and 3; at least 3 each)" in text
    assert "holds its accuracy at this budget" not in text


def test_a_published_page_ends_with_its_ablation_once_records_exist(tmp_path):
    """Through publish.show_published, with a fake published run and fake records."""
    import shutil

    for name in ("helpers", "book"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "results", "*.png"))
    for name in ("profiles.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    from test_publish import fake_run

    fake_run(tmp_path, "vit")
    site = tmp_path / "site"
    (site / "book").mkdir(parents=True)
    publish.show_published("test-profile", site, tmp_path)
    page = nbformat.read(site / "book/vit.ipynb", as_version=4)
    assert not any("evidence-ablation" in c.metadata.get("tags", []) for c in page.cells)

    plan = evidence.load_plan(write_plan(tmp_path), source=tmp_path)
    write_arm(tmp_path / evidence.EVIDENCE, plan, "vit", "patch-4", [0.66, 0.67, 0.65])
    publish.show_published("test-profile", site, tmp_path)
    page = nbformat.read(site / "book/vit.ipynb", as_version=4)
    assert "evidence-ablation" in page.cells[-1].metadata["tags"]
    assert "| patches of 4 px (full model, baseline) | 1,000 | 66.00 ± 1.00% |" \
        in page.cells[-1].source
    assert "published-run" in page.cells[2].metadata["tags"]  # the notice stays where it was


def run_results_page(tmp_path, monkeypatch, plan_path, evidence_dir):
    """The results page's cells in this process, on the published records and the
    given evidence; returns the namespace and what it displayed."""
    import IPython.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.book import flops

    monkeypatch.setattr(flops, "jax_installed", lambda: False)
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects, **_: shown.extend(objects))
    monkeypatch.chdir(ROOT / "book")
    notebook = ROOT / "book" / "results.ipynb"
    cells = [c.source for c in nbformat.read(notebook, as_version=4).cells
             if c.cell_type == "code"]
    parameters = next(i for i, s in enumerate(cells) if "results_dir: str" in s)
    namespace = {}
    exec(cells[parameters], namespace)
    namespace.update(results_dir=str(ROOT / "runs/cifar10-cpu/results"), profile="cifar10-cpu",
                     evidence_plan=str(plan_path), evidence_dir=str(evidence_dir))
    try:
        for index, source in enumerate(cells[parameters + 1:]):
            exec(compile(source, f"results.ipynb:{index}", "exec"), namespace)
    finally:
        plt.close("all")
    return namespace, shown


def texts(shown):
    return [getattr(o, "data", "") for o in shown]


def test_without_evidence_the_results_page_says_the_equal_budget_runs_are_not_published(
        tmp_path, monkeypatch):
    namespace, shown = run_results_page(tmp_path, monkeypatch, tmp_path / "none.yml",
                                        tmp_path / "none")
    assert namespace["equal"] == {}
    assert any("equal-budget runs have not been published yet" in t for t in texts(shown))
    single = next(t for t in texts(shown) if "single-runs" in t)
    assert "<th>source</th>" not in single and "CIFAR-100" not in single
    assert not any("equal-budget" in t and "<table" in t for t in texts(shown))


def test_with_evidence_the_results_page_tables_mean_and_spread_and_compares_by_the_rule(
        tmp_path, monkeypatch):
    # the benchmark named relative to the plan's folder (an absolute path stays itself)
    plan_path = write_plan(tmp_path, PLAN.replace("runs/bench/", f"{ROOT}/runs/bench/").replace(
        "{conv_layers: 2}", "{conv_layers: 2, precision: mixed_bfloat16}"))
    plan = evidence.load_plan(plan_path)
    records = tmp_path / "records"
    write_arm(records, plan, "vit", "patch-4", [0.660, 0.665, 0.658])
    write_arm(records, plan, "cct", "two", [0.700, 0.705, 0.695])
    write_arm(records, plan, "vit", "patch-8", [0.1, 0.1, 0.1])  # not the full model: not shown
    namespace, shown = run_results_page(tmp_path, monkeypatch, plan_path, records)
    assert list(namespace["equal"]) == ["vit", "cct"]
    table = next(t for t in texts(shown) if "results-table equal-budget" in t)
    # images/s from the benchmark record, in the precision each model's runs used: the
    # plan's float32 for the ViT, mixed_bfloat16 for the CCT (its arm sets it)
    bench = json.loads((ROOT / plan.benchmark).read_text())
    speed = {(r["model"], r["dtype_policy"]): r["images_per_second"] for r in bench["results"]}
    assert speed["vit", "float32"] != speed["vit", "mixed_bfloat16"]
    assert (f"<td>float32</td><td>{speed['vit', 'float32']:,.0f}</td>" in table
            and f"<td>bfloat16</td><td>{speed['cct', 'mixed_bfloat16']:,.0f}</td>" in table)
    assert "<td>66.10 ± 0.36%</td>" in table and "<td>70.00 ± 0.50%</td>" in table
    assert "<td>3</td>" in table and "10.0%" not in table
    said = next(t for t in texts(shown) if "Highest mean top-1" in t)
    assert ("CCT reached 70.0 ± 0.5% top-1 against 66.1 ± 0.4% for ViT, over 3 seeds each: "
            "the seeds separate them (+3.9 points).") in said
    assert not any("have not been published yet" in t for t in texts(shown))
    # one budget for every row: its epochs are said once, not a column
    assert "<th>epochs</th>" not in table and "Every arm trained 2 epochs" in said
    from helpers.papers import TITLES

    assert ("Not run yet at this budget, so not ranked here: "
            f"{TITLES['spt_lsa']}, {TITLES['perceiver']}, {TITLES['shiftvit']}.") in said


SPT_LSA_ARMS = """\
  spt_lsa:
    full: spt-lsa
    baseline: vanilla
    arms:
      vanilla: {label: the vanilla ViT, same_model_as: vit,
                parameters: {spt: false, lsa: false, train_vanilla: false}}
      spt-lsa: {label: SPT + LSA, parameters: {spt: true, lsa: true, train_vanilla: false}}
"""


@pytest.mark.parametrize("vanilla, disagree", [
    ([0.660, 0.665, 0.658], False),  # the same numbers as the ViT's: the same call
    ([0.685, 0.690, 0.683], True),  # the SL-ViT's seeds overlap these, not the ViT's
])
def test_the_results_page_sets_the_sl_vit_against_its_own_vanilla_vit_too(
        tmp_path, monkeypatch, vanilla, disagree):
    from helpers.papers import TITLES

    plan_path = write_plan(tmp_path, PLAN.replace("runs/bench/", f"{ROOT}/runs/bench/")
                           + SPT_LSA_ARMS)
    plan = evidence.load_plan(plan_path)
    records = tmp_path / "records"
    write_arm(records, plan, "vit", "patch-4", [0.660, 0.665, 0.658])
    write_arm(records, plan, "spt_lsa", "spt-lsa", [0.690, 0.695, 0.688])
    write_arm(records, plan, "spt_lsa", "vanilla", vanilla)
    _, shown = run_results_page(tmp_path, monkeypatch, plan_path, records)
    said = next(t for t in texts(shown) if "Highest mean top-1" in t)
    sl_vit, vit = TITLES["spt_lsa"], TITLES["vit"]
    assert (f"{sl_vit} reached 69.1 ± 0.4% top-1 against 66.1 ± 0.4% for {vit}, over 3 "
            "seeds each: the seeds separate them (+3.0 points).") in said
    own = evidence.summarize([100 * v for v in vanilla])
    assert (f"{sl_vit}'s own page trains the vanilla ViT beside it, the same model as {vit} "
            f"here: {sl_vit} reached 69.1 ± 0.4% top-1 against {evidence.pm(own)} for the "
            "vanilla ViT") in said
    assert ("The two comparisons disagree: the seeds separate "
            f"{sl_vit} from {vit} here (66.1 ± 0.4%) and do not from the vanilla ViT there "
            f"({evidence.pm(own)})" in said) == disagree
    assert ("The two comparisons disagree" in said) == disagree


def test_the_results_page_keeps_cifar100_and_cifar10_source_numbers_apart():
    nb = nbformat.read(ROOT / "book/results.ipynb", as_version=4)
    sources = next(c.source for c in nb.cells if c.source.startswith("## What the sources"))
    tables = sources.split("**")
    for heading, table in zip(tables[1::2], tables[2::2]):
        rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
        assert rows and all("{cite}" in row for row in rows[1:]), heading
        other = {"CIFAR-10": "CIFAR-100", "CIFAR-100": "CIFAR-10 ", "ImageNet": "CIFAR"}[heading]
        assert not any(other in row for row in rows), heading


# ------------------------------------------------------------ one real run, small

@pytest.mark.slow
def test_one_arm_at_smoke_size_writes_a_record_per_seed_with_its_provenance(tmp_path):
    plan_path = write_plan(tmp_path, textwrap.dedent("""\
        budget: {profile: smoke, epochs: 1}
        seeds: [0, 1]
        notebooks:
          cct:
            full: sequence
            baseline: sequence
            arms:
              sequence: {parameters: {}}
        """))
    records = tmp_path / "records"
    argv = ["--plan", str(plan_path), "--profile", "smoke", "--records", str(records),
            "--build-dir", str(tmp_path / "build"), "-p", "n_train", "256", "-p", "n_test", "128"]
    assert evidence.main(argv) == 0
    for seed in (0, 1):
        record = json.loads((records / "cct" / "sequence" / f"seed-{seed}.json").read_text())
        ev = record["evidence"]
        assert record["epochs"] == 1 and record["n_test"] == 128
        assert ev["seed"] == seed and record["parameters"]["seed"] == seed
        assert ev["parameters"]["n_train"] == 256 and ev["notebook_seconds"] > 0
        assert ev["code_digest"] == publish.code_digest(ROOT / "book" / "cct.ipynb")
        assert len(ev["commit"]) == 40 and ev["machine"]["cores"] >= 1
    assert not (tmp_path / "build" / "work" / "cct").exists() or not any(
        (tmp_path / "build" / "work" / "cct").rglob("*.json"))  # only records are kept
    assert evidence.main([*argv, "--check"]) == 0  # both current: nothing to run again
