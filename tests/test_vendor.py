"""The site's vendored JavaScript: pinned, complete, and what _config.yml loads."""

import shutil

import pytest
import yaml

from helpers.book import vendor

from conftest import ROOT

pytestmark = pytest.mark.keras_free  # see conftest.py


def test_the_committed_files_match_their_pinned_digests():
    assert vendor.check() == []
    files = vendor.pinned_files()
    assert {"require.js", "html-manager/embed-amd.js", "mathjax/tex-mml-chtml.js"} <= set(files)
    # MathJax's CommonHTML fonts and the TeX extensions its autoloader may fetch
    assert sum(name.startswith("mathjax/output/chtml/fonts/woff-v2/") for name in files) >= 20
    assert "mathjax/input/tex/extensions/boldsymbol.js" in files


def test_a_changed_missing_or_extra_file_is_reported(tmp_path):
    copy = tmp_path / "vendor"
    shutil.copytree(vendor.VENDOR, copy)
    (copy / "require.js").write_text("// edited by hand\n")
    (copy / "mathjax" / "LICENSE").unlink()
    (copy / "html-manager" / "extra.js").write_text("")
    assert vendor.check(copy) == [
        "missing: mathjax/LICENSE",
        "not in SHA256SUMS: html-manager/extra.js",
        "changed: require.js",
    ]


def test_the_site_config_loads_the_vendored_files():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert config["html_static_path"] == ["vendor"]
    loaded = [config["mathjax_path"], *config["nb_ipywidgets_js"]]
    assert loaded == ["mathjax/tex-mml-chtml.js", "require.js", "html-manager/embed-amd.js"]
    for path in loaded:  # relative to the static folder
        assert not path.startswith(("http:", "https:", "//"))
        assert (vendor.VENDOR / path).is_file(), path


def test_the_npm_integrity_string_is_base64_sha512(tmp_path):
    tarball = tmp_path / "empty.tgz"
    tarball.write_bytes(b"")
    # SHA-512 of no bytes, base64-encoded
    assert vendor.integrity(tarball) == (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==")
