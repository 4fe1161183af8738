"""The install sets: what each ``requirements*.txt`` pins, what pip resolves it to,
and how much it downloads.

Each set is one requirements file that includes the default set
(``requirements.txt``, see the README's *Install sets*). ``pins`` reads a file
and the files it includes; ``resolve`` asks pip what it would install into an
empty environment (``pip install --dry-run --ignore-installed --report``),
which needs the package index but downloads little beyond metadata.

    python -m helpers.book.install_sets            # every set: packages, CUDA packages, download size
    python -m helpers.book.install_sets gpu-jax    # one set
    python -m helpers.book.install_sets --install default   # also install it into a new
                                                   # virtual environment: seconds and size

``isolated`` resolution (``pip --isolated``) ignores this machine's pip
configuration (local wheel folders, constraints): what a reader's pip would
pick from the package index alone. The PyTorch CPU set and the development set
rely on PyTorch's CPU build being at hand (its own index, or a local wheel), so
they resolve with the configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SETS = {
    "default": "requirements.txt",
    "jax": "requirements-jax.txt",
    "torch-cpu": "requirements-torch-cpu.txt",
    "dev": "requirements-dev.txt",
    "gpu-tensorflow": "requirements-gpu-tensorflow.txt",
    "gpu-jax": "requirements-gpu-jax.txt",
    "gpu-torch": "requirements-gpu-torch.txt",
}
# Sets that need PyTorch's CPU build, which the package index does not carry.
NEED_LOCAL_CONFIG = ("torch-cpu", "dev")
BACKENDS = {"tensorflow", "jax", "jaxlib", "torch"}
PIN = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]+\])?==(\S+)$")
# What pip prints when it cannot reach an index at all.
UNREACHABLE = re.compile(r"NameResolutionError|NewConnectionError|Max retries exceeded|"
                         r"Temporary failure in name resolution|Network is unreachable")


class Unreachable(RuntimeError):
    """pip could not reach the package index."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, tuple[str, str]]:
    """``{package: (version, extras)}`` of ``path`` and the files it includes with
    ``-r``. Every requirement must be an exact ``==`` pin (``-e .`` aside); a
    package pinned twice must be pinned to the same version."""
    found: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#") or line == "-e .":
            continue
        if line.startswith("-r "):
            included = pins(Path(path).parent / line[3:].strip())
        else:
            match = PIN.match(line)
            if not match:
                raise ValueError(f"{Path(path).name}:{number}: not an exact pin: {line!r}")
            name, extras, version = match.groups()
            included = {normalize(name): (version, extras or "")}
        for name, (version, extras) in included.items():
            if name in found and found[name][0] != version:
                raise ValueError(f"{Path(path).name}: {name} pinned to both "
                                 f"{found[name][0]} and {version}")
            if name not in found or extras:
                found[name] = (version, extras)
    return found


def pip_command(python: str, isolated: bool) -> list[str]:
    """``python -m pip``, with ``--isolated`` (the package index alone) when asked;
    the certificates this machine trusts are kept, which isolation would drop."""
    command = [python, "-m", "pip"]
    if isolated:
        command.append("--isolated")
        if os.environ.get("PIP_CERT"):
            command += ["--cert", os.environ["PIP_CERT"]]
    return command


def resolve(path: Path, *, isolated: bool = False, timeout: int = 900) -> list[dict]:
    """What pip would install from ``path`` into an empty environment: one
    ``{"name", "version", "url"}`` per package. Raises ``Unreachable`` when pip
    cannot reach the index, ``RuntimeError`` when the pins do not resolve."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = pip_command(sys.executable, isolated)
        command += ["install", "--dry-run", "--ignore-installed", "--quiet",
                    "--report", str(report), "-r", str(Path(path).resolve())]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=Path(path).resolve().parent)
        if done.returncode:
            if UNREACHABLE.search(done.stderr):
                raise Unreachable(done.stderr.strip().splitlines()[-1])
            raise RuntimeError(f"{Path(path).name} does not resolve:\n{done.stderr[-3000:]}")
        installs = json.loads(report.read_text())["install"]
    return [{"name": normalize(item["metadata"]["name"]), "version": item["metadata"]["version"],
             "url": item["download_info"]["url"]} for item in installs]


def download_bytes(url: str) -> int | None:
    """The size of the file at ``url`` (a local file, or the index's Content-Length);
    None for a folder (an editable install) or when the index does not say."""
    if url.startswith("file://"):
        path = Path(urllib.request.url2pathname(url.removeprefix("file://")))
        return path.stat().st_size if path.is_file() else None
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=60) as response:
        length = response.headers.get("Content-Length")
    return int(length) if length else None


def summary(name: str, root: Path = ROOT) -> dict:
    """One set resolved: its packages, the CUDA packages among them, the backends,
    and the bytes pip would download into an empty environment."""
    packages = resolve(root / SETS[name], isolated=name not in NEED_LOCAL_CONFIG)
    sizes = [download_bytes(p["url"]) for p in packages]
    return {
        "set": name,
        "file": SETS[name],
        "packages": len(packages),
        "cuda_packages": sorted(p["name"] for p in packages
                                if p["name"].startswith(("nvidia-", "jax-cuda", "cuda-"))),
        "backends": sorted(p["name"] for p in packages if p["name"] in BACKENDS),
        "download_bytes": sum(s for s in sizes if s),
    }


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


def install(name: str, root: Path = ROOT) -> dict:
    """Install set ``name`` into a new virtual environment (then deleted): the
    seconds pip took and the bytes the environment holds, with the names of the
    backends and CUDA packages it holds."""
    with tempfile.TemporaryDirectory() as folder:
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        command = pip_command(python, isolated=name not in NEED_LOCAL_CONFIG)
        empty = folder_bytes(venv)
        start = time.perf_counter()
        subprocess.run([*command, "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(root / SETS[name])], check=True, cwd=root)
        seconds = time.perf_counter() - start
        listed = json.loads(subprocess.run([python, "-m", "pip", "list", "--format", "json"],
                                           capture_output=True, text=True, check=True).stdout)
        names = [normalize(p["name"]) for p in listed]
        found = {"set": name, "install_seconds": seconds,
                 "installed_bytes": folder_bytes(venv) - empty,
                 "backends": sorted(n for n in names if n in BACKENDS),
                 "cuda_packages": sorted(n for n in names
                                         if n.startswith(("nvidia-", "jax-cuda", "cuda-")))}
        shutil.rmtree(venv)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="*", metavar="SET",
                        help=f"the sets to resolve (default: all of {', '.join(SETS)})")
    parser.add_argument("--install", action="store_true",
                        help="also install each set into a new virtual environment (minutes, GBs)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sets) - set(SETS))
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}: choose from {', '.join(SETS)}")
    print(f"{'set':16}{'packages':>10}{'CUDA pkgs':>11}{'download':>12}  backends")
    for name in args.sets or SETS:
        try:
            found = summary(name)
        except Unreachable as error:
            print(f"{name:16}  the package index cannot be reached: {error}")
            return 1
        print(f"{name:16}{found['packages']:>10}{len(found['cuda_packages']):>11}"
              f"{found['download_bytes'] / 2**20:>9,.0f} MiB  {', '.join(found['backends'])}",
              flush=True)
        if args.install:
            done = install(name)
            print(f"{'':16}installed in {done['install_seconds']:.0f} s: "
                  f"{done['installed_bytes'] / 2**20:,.0f} MiB, "
                  f"{len(done['cuda_packages'])} CUDA packages, backends "
                  f"{', '.join(done['backends'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
