"""The site's own copies of the widget manager, RequireJS and MathJax.

The rendered pages load these from the site itself instead of a CDN, so the
site works offline and from any host. ``vendor/`` is a Sphinx static folder
(its files land in the site's ``_static/``), and ``_config.yml`` points
myst-nb's ``nb_ipywidgets_js`` and Sphinx's ``mathjax_path`` at them.

The files are committed, with their SHA-256 digests in ``vendor/SHA256SUMS``. ``python -m helpers.book.vendor`` fetches the pinned
npm packages again with ``npm pack`` (it needs node and the npm registry),
checks each tarball against its pinned integrity, copies the files the site
uses and rewrites SHA256SUMS; ``python -m helpers.book.vendor --check`` verifies the
committed copies against SHA256SUMS offline.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "vendor"
SUMS = "SHA256SUMS"
UNLISTED = {SUMS, "README.md"}

# npm package -> (integrity of its tarball, {path in the package: path under vendor/}).
# A source ending in "/" is a folder: its files with the target's suffixes (SUFFIXES) are copied.
PACKAGES = {
    "requirejs@2.3.7": (
        "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
        {"require.js": "require.js"},
    ),
    "@jupyter-widgets/html-manager@1.0.15": (
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        {
            # The widget manager bundled with the built-in controls, and the
            # icon fonts it loads from beside itself (browsers take .woff2).
            "dist/embed-amd.js": "html-manager/embed-amd.js",
            "dist/embed.js.LICENSE.txt": "html-manager/LICENSE.txt",
            "dist/": "html-manager/",
        },
    ),
    "mathjax@3.2.2": (
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        {
            # TeX input with CommonHTML output in one file, the TeX extensions
            # its autoloader fetches on demand, and its web fonts.
            "es5/tex-mml-chtml.js": "mathjax/tex-mml-chtml.js",
            "es5/input/tex/extensions/": "mathjax/input/tex/extensions/",
            "es5/output/chtml/fonts/woff-v2/": "mathjax/output/chtml/fonts/woff-v2/",
            "LICENSE": "mathjax/LICENSE",
        },
    ),
}
SUFFIXES = {
    "html-manager/": (".woff2",),
    "mathjax/input/tex/extensions/": (".js",),
    "mathjax/output/chtml/fonts/woff-v2/": (".woff",),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vendored_files(vendor: Path = VENDOR) -> dict[str, str]:
    """Relative path -> SHA-256 of every vendored file under ``vendor``."""
    return {
        path.relative_to(vendor).as_posix(): sha256(path)
        for path in sorted(vendor.rglob("*"))
        if path.is_file() and path.relative_to(vendor).as_posix() not in UNLISTED
    }


def pinned_files(vendor: Path = VENDOR) -> dict[str, str]:
    """Relative path -> SHA-256 as listed in ``vendor/SHA256SUMS``."""
    pinned = {}
    for line in (vendor / SUMS).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        pinned[name.lstrip("*")] = digest
    return pinned


def check(vendor: Path = VENDOR) -> list[str]:
    """Differences between the files under ``vendor`` and SHA256SUMS (empty: all good)."""
    if not (vendor / SUMS).is_file():
        return [f"missing: {SUMS}"]
    pinned, found = pinned_files(vendor), vendored_files(vendor)
    problems = [f"missing: {name}" for name in sorted(set(pinned) - set(found))]
    problems += [f"not in {SUMS}: {name}" for name in sorted(set(found) - set(pinned))]
    problems += [
        f"changed: {name}" for name in sorted(set(pinned) & set(found)) if pinned[name] != found[name]
    ]
    return problems


def integrity(path: Path) -> str:
    """npm's integrity string (SHA-512, base64) of a tarball."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(vendor: Path = VENDOR) -> dict[str, str]:
    """Download the pinned packages with ``npm pack``, copy the site's files, write SHA256SUMS."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not installed: it fetches the pinned packages")
    readme = vendor / "README.md"
    kept = readme.read_bytes() if readme.is_file() else None
    if vendor.exists():
        shutil.rmtree(vendor)
    vendor.mkdir(parents=True)
    if kept is not None:
        readme.write_bytes(kept)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for spec, (expected, files) in PACKAGES.items():
            print(f"npm pack {spec}", flush=True)
            tarball = scratch / subprocess.run(
                [npm, "pack", spec, "--silent"], cwd=scratch, check=True,
                capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
            if integrity(tarball) != expected:
                raise SystemExit(f"{spec}: the tarball's integrity is {integrity(tarball)}, "
                                 f"not the pinned {expected}")
            unpacked = scratch / tarball.stem
            with tarfile.open(tarball) as archive:
                archive.extractall(unpacked, filter="data")
            package = unpacked / "package"
            for source, target in files.items():
                if source.endswith("/"):
                    (vendor / target).mkdir(parents=True, exist_ok=True)
                    for path in sorted((package / source).iterdir()):
                        if path.is_file() and path.name.endswith(SUFFIXES[target]):
                            shutil.copy2(path, vendor / target / path.name)
                else:
                    (vendor / target).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(package / source, vendor / target)
    found = vendored_files(vendor)
    (vendor / SUMS).write_text("".join(f"{digest}  {name}\n" for name, digest in found.items()))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.book.vendor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="verify the committed files against SHA256SUMS (offline)")
    args = parser.parse_args(argv)
    if not args.check:
        found = fetch()
        print(f"wrote {len(found)} files and {SUMS} under {VENDOR}")
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("run `python -m helpers.book.vendor` to fetch the pinned packages again", file=sys.stderr)
        return 1
    print(f"{len(pinned_files())} vendored files match {SUMS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
