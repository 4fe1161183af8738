"""The install sets (requirements*.txt, helpers.book.install_sets): exact pins that
agree across sets, a default set with one backend and no CUDA, GPU sets that
resolve together with their CUDA packages."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.book import install_sets
from helpers.book.install_sets import SETS, Unreachable, pins, resolve

from conftest import ROOT

pytestmark = pytest.mark.keras_free  # see conftest.py


def test_every_set_is_a_requirements_file_that_includes_the_default_set():
    assert sorted(p.name for p in ROOT.glob("requirements*.txt")) == sorted(SETS.values())
    default = pins(ROOT / "requirements.txt")
    for name, file in SETS.items():
        found = pins(ROOT / file)
        assert {k: v[0] for k, v in default.items()}.items() <= \
            {k: v[0] for k, v in found.items()}.items(), name


def test_the_default_set_has_one_backend_and_nothing_for_a_gpu():
    default = pins(ROOT / "requirements.txt")
    assert "tensorflow" in default and default["tensorflow"][1] == ""  # no and-cuda
    assert not {"jax", "jaxlib", "torch"} & set(default)
    assert not [name for name in default if name.startswith("nvidia-")]


def test_each_backend_has_one_version_in_every_set():
    versions = {}
    for file in SETS.values():
        for name, (version, _) in pins(ROOT / file).items():
            if name in install_sets.BACKENDS:
                versions.setdefault(name, set()).add(version.split("+")[0])
    assert versions and all(len(v) == 1 for v in versions.values()), versions


def test_the_sets_ask_for_what_they_are_named_after():
    def spec(file, name):
        return pins(ROOT / file)[name]

    assert spec("requirements-gpu-tensorflow.txt", "tensorflow")[1] == "[and-cuda]"
    assert spec("requirements-gpu-jax.txt", "jax")[1].startswith("[cuda")
    assert spec("requirements-torch-cpu.txt", "torch")[0].endswith("+cpu")
    assert not spec("requirements-gpu-torch.txt", "torch")[0].endswith("+cpu")
    assert {"pytest", "pytest-xdist", "jax", "torch"} <= set(pins(ROOT / "requirements-dev.txt"))


def test_pins_rejects_loose_requirements_and_disagreeing_pins(tmp_path):
    (tmp_path / "base.txt").write_text("numpy==2.0.0\n")
    (tmp_path / "loose.txt").write_text("-r base.txt\nkeras>=3\n")
    with pytest.raises(ValueError, match="loose.txt:2: not an exact pin: 'keras>=3'"):
        pins(tmp_path / "loose.txt")
    (tmp_path / "twice.txt").write_text("-r base.txt\nnumpy==2.1.0  # newer\n")
    with pytest.raises(ValueError, match="numpy pinned to both 2.0.0 and 2.1.0"):
        pins(tmp_path / "twice.txt")


@pytest.mark.slow
def test_the_default_and_gpu_sets_resolve_from_the_package_index():
    """pip's resolver on each set, as a reader's pip sees the package index (no
    local wheels or constraints); skipped where the index cannot be reached."""
    names = ["default", "gpu-tensorflow", "gpu-jax", "gpu-torch"]
    with ThreadPoolExecutor(len(names)) as pool:
        futures = {name: pool.submit(resolve, ROOT / SETS[name], isolated=True) for name in names}
        try:
            resolved = {name: {p["name"]: p["version"] for p in future.result()}
                        for name, future in futures.items()}
        except Unreachable as error:
            pytest.skip(f"the package index cannot be reached: {error}")
    default = resolved["default"]
    assert default["tensorflow"] == pins(ROOT / "requirements.txt")["tensorflow"][0]
    assert not {"jax", "jaxlib", "torch"} & set(default)
    assert not [name for name in default if name.startswith("nvidia-")]
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= set(resolved["gpu-tensorflow"])
    assert "jax-cuda13-plugin" in resolved["gpu-jax"]
    assert [n for n in resolved["gpu-torch"] if n.startswith("nvidia-")]
    assert not resolved["gpu-torch"]["torch"].endswith("+cpu")
