"""The GitHub Actions workflows: valid against GitHub's workflow schema, and doing
what the README promises (tests on every push, the full book on a GPU runner)."""

import subprocess
import sys

import pytest
import yaml

from helpers.book import runner as book

from conftest import ROOT

pytestmark = pytest.mark.keras_free  # see conftest.py

WORKFLOWS = ROOT / ".github" / "workflows"


def validate(*paths):
    """check-jsonschema with the GitHub workflow schema it ships (no download)."""
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
               "vendor.github-workflows", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True)


def load(name):
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads `on` as True
    return workflow


def steps(job):
    return [step.get("uses", "") + " " + step.get("run", "") for step in job["steps"]]


def test_the_workflows_are_valid_github_workflows():
    done = validate(*sorted(WORKFLOWS.glob("*.yml")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert {path.name for path in WORKFLOWS.glob("*.yml")} == {"tests.yml", "book.yml"}


def test_the_validation_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text((WORKFLOWS / "tests.yml").read_text().replace("runs-on:", "run-on:"))
    done = validate(broken)
    assert done.returncode == 1 and "'runs-on' is a required property" in done.stdout


def test_the_tests_run_on_every_push_and_pull_request_through_ci_run():
    workflow = load("tests.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert any(step.strip() == "bash .ci/run" for step in steps(job))
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["python-version"] == "3.11"


def test_the_book_workflow_runs_the_full_profile_on_a_chosen_runner_and_deploys_it():
    workflow = load("book.yml")
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert inputs["runner"]["type"] == "string"
    assert sorted(inputs["backend"]["options"]) == sorted(book.BACKENDS)
    assert inputs["backend"]["default"] in book.BACKENDS
    execute, deploy = workflow["jobs"]["execute"], workflow["jobs"]["deploy"]
    assert execute["runs-on"] == "${{ inputs.runner }}"  # the label is configurable
    cache = next(s for s in execute["steps"] if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"] == "~/.keras/datasets"  # where keras.datasets downloads to
    assert any("python -m helpers.book --profile full --backend" in s for s in steps(execute))
    # the GPU install set of the chosen backend, one for each backend offered
    assert any('pip install -r "requirements-gpu-${{ inputs.backend }}.txt"' in s
               for s in steps(execute))
    for backend in inputs["backend"]["options"]:
        assert (ROOT / f"requirements-gpu-{backend}.txt").is_file(), backend
    assert "full" in yaml.safe_load((ROOT / "profiles.yml").read_text())
    kept = next(s for s in execute["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert set(kept["with"]["path"].split()) == {"_build/site/book/*.ipynb",
                                                 "_build/site/book/results/*.json"}
    pages = next(s for s in execute["steps"]
                 if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert pages["with"]["path"] == "_build/site/_build/html"  # where helpers.book.runner builds
    assert deploy["needs"] == "execute"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert any(s.startswith("actions/deploy-pages@") for s in steps(deploy))


@pytest.mark.parametrize("name", ["tests.yml", "book.yml"])
def test_workflows_name_no_secrets_and_pin_action_versions(name):
    for job in load(name)["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert "@v" in step["uses"], step["uses"]
    assert "secrets." not in (WORKFLOWS / name).read_text()
