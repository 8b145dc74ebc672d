"""Install requirements.txt the way a host does (Streamlit Community Cloud, a learner's Linux laptop) and report.

    python3 scripts/cloud_install_check.py        # or: make cloud-check

1. Resolves requirements.txt with `pip install --dry-run --report`, for this Python and for Community
   Cloud's default (CPython 3.12, Linux x86_64): the torch build resolved (+cpu or CUDA) and every
   nvidia-*, cuda-* or triton package pulled in (on Linux there must be none).
2. Installs it into a fresh virtual environment in a temporary folder, with nothing but what
   requirements.txt asks for, and reports the build torch itself reports, the CUDA packages
   installed and the environment's size on disk.
3. Then adds the two measuring tools (psutil, playwright, pinned in requirements-test.txt) and runs
   scripts/memory_profile.py with that environment's Python: the server's resident memory after
   every page has been opened once. Needs Debian's chromium (make cloud-check installs it as root).

Uses only the standard library, so any Python 3.11+ can run it. Exits non-zero when, on Linux, torch
is not the CPU build or a CUDA package is pulled in, or when a step fails.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements.txt"
TEST_REQUIREMENTS = ROOT / "requirements-test.txt"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Community Cloud's default Python on its platform: Debian 11 (glibc 2.31), x86_64. pip does not widen a
# --platform to older manylinux tags itself, so every tag that glibc accepts is listed. pip 23 accepts
# these options only with --target (nothing is written there on a dry run).
CLOUD_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(31, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
CLOUD_TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
                *(arg for tag in CLOUD_PLATFORMS for arg in ("--platform", tag)), "--target"]
CUDA_NAME = re.compile(r"^(nvidia-|cuda-|triton$|pytorch-triton)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def cuda_packages(names) -> list[str]:
    """The nvidia-*, cuda-* and triton packages among `names` (what a CUDA build of torch pulls in)."""
    return sorted(n for n in map(normalize, names) if CUDA_NAME.match(n))


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk under `path` (what `du` counts; hard links once)."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def index_reachable(url: str = TORCH_CPU_INDEX + "/torch/") -> str:
    """'reachable' or why not, in one line."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return "reachable" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.URLError as exc:
        return f"unreachable ({exc.reason})"
    except OSError as exc:
        return f"unreachable ({exc})"


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$ " + shlex.join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, text=True, **kwargs)


def dry_run(python: str, requirements: Path, pip_flags: list[str], target: list[str], workdir: Path):
    """`pip install --dry-run --report` of `requirements`: (the report's install list or None, pip's last error line)."""
    report = workdir / f"report-{len(list(workdir.glob('report-*')))}.json"
    cmd = [python, "-m", "pip", "install", *pip_flags, "--dry-run", "--quiet", "--ignore-installed",
           "--report", str(report), *target, "-r", str(requirements)]
    start = time.monotonic()
    proc = run(cmd, capture_output=True)
    seconds = time.monotonic() - start
    errors = [line.removeprefix("ERROR: ") for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    if proc.returncode != 0 or not report.exists():
        named = [line for line in errors if "torch" in line]  # pip's last line is often the generic one
        return None, (named or errors or [f"pip exited with {proc.returncode}"])[0], seconds
    return json.loads(report.read_text())["install"], "", seconds


def describe(install: list[dict]) -> tuple[str, list[str]]:
    """('torch <version> from <where>', the CUDA packages) of a dry-run report's install list."""
    torch = [i for i in install if normalize(i["metadata"]["name"]) == "torch"]
    where = ""
    if torch:
        url = torch[0]["download_info"]["url"]
        where = f"torch {torch[0]['metadata']['version']} from {url.rsplit('/', 1)[0]}/ ({url.rsplit('/', 1)[1]})"
    return where or "no torch", cuda_packages(i["metadata"]["name"] for i in install)


def check_resolution(python: str, pip_flags: list[str], workdir: Path, failures: list[str]) -> dict:
    figures = {}
    print("\n== 1. Resolution (pip install --dry-run --report)", flush=True)
    print(f"PyTorch's CPU index {TORCH_CPU_INDEX}: {index_reachable()}")

    install, error, seconds = dry_run(python, REQUIREMENTS, pip_flags, [], workdir)
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    label = f"this machine (Python {version}, {platform.system()} {platform.machine()})"
    if install is None:
        failures.append(f"{label}: requirements.txt does not resolve: {error}")
        print(f"{label}: does not resolve: {error}")
    else:
        torch, cuda = describe(install)
        figures["dry_run"] = f"{torch}; {len(install)} packages; CUDA packages: {', '.join(cuda) or 'none'}"
        print(f"{label}, {seconds:.0f} s: {figures['dry_run']}")
        if sys.platform == "linux" and ("+cpu" not in torch or cuda):
            failures.append(f"{label}: not the CPU build of torch, or CUDA packages pulled in")

    # Community Cloud's default. pip evaluates the markers with this interpreter, which is Linux too.
    label = "Community Cloud default (CPython 3.12, Linux x86_64, glibc 2.31)"
    target = [*CLOUD_TARGET, str(workdir / "target-3.12")]
    install, error, seconds = dry_run(python, REQUIREMENTS, pip_flags, target, workdir)
    if install is not None:
        torch, cuda = describe(install)
        figures["cloud_312"] = f"{torch}; {len(install)} packages; CUDA packages: {', '.join(cuda) or 'none'}"
        if "+cpu" not in torch or cuda:
            failures.append(f"{label}: not the CPU build of torch, or CUDA packages pulled in")
    else:
        # Where PyTorch's index is out of reach nothing serves torch 2.13.0+cpu for 3.12: check the rest.
        rest = workdir / "requirements-without-torch.txt"
        rest.write_text("".join(line for line in REQUIREMENTS.read_text().splitlines(keepends=True)
                                if not re.match(r"\s*torch\b", line)))
        others, error2, seconds = dry_run(python, rest, pip_flags, target, workdir)
        if others is None:
            failures.append(f"{label}: the packages other than torch do not resolve: {error2}")
            figures["cloud_312"] = f"does not resolve: {error2}"
        else:
            _, cuda = describe(others)
            figures["cloud_312"] = (f"no torch+cpu wheel for 3.12 within reach (PyTorch's index is "
                                    f"{index_reachable()}; pip: {error}); every other package resolves to a "
                                    f"wheel: {len(others)} packages, CUDA packages: {', '.join(cuda) or 'none'}")
    print(f"{label}, {seconds:.0f} s: {figures['cloud_312']}")
    return figures


def check_install(python: str, pip_flags: list[str], venv: Path, failures: list[str]) -> dict:
    figures = {}
    print(f"\n== 2. Install into a fresh virtual environment: {venv}", flush=True)
    run([python, "-m", "venv", str(venv)], check=True)
    vpy = str(venv / "bin" / "python")
    start = time.monotonic()
    proc = run([vpy, "-m", "pip", "install", *pip_flags, "--quiet", "-r", str(REQUIREMENTS)], capture_output=True)
    figures["install_seconds"] = f"{time.monotonic() - start:.0f} s"
    skipped = len(re.findall(r"Could not fetch URL|Retrying \(", proc.stderr))
    if skipped:
        print(f"pip warned {skipped} times about an index it could not reach (it skips that index)")
    if proc.returncode != 0:
        print(proc.stdout[-2000:] + proc.stderr[-4000:])
        failures.append(f"pip install -r requirements.txt exited with {proc.returncode}")
        return figures
    probe = ("import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda, "
             "'cuda_available': torch.cuda.is_available(), 'path': torch.__file__}))")
    torch = json.loads(subprocess.run([vpy, "-c", probe], capture_output=True, text=True, check=True).stdout)
    listed = json.loads(subprocess.run([vpy, "-m", "pip", "list", "--format", "json"],
                                       capture_output=True, text=True, check=True).stdout)
    cuda = cuda_packages(p["name"] for p in listed)
    build = "CPU" if torch["cuda"] is None else f"CUDA {torch['cuda']}"
    figures["torch_installed"] = f"torch {torch['version']} ({build} build; torch.version.cuda = {torch['cuda']})"
    figures["cuda_installed"] = ", ".join(cuda) or "none"
    site = Path(torch["path"]).parents[1]
    total, torch_bytes = disk_usage(venv), disk_usage(Path(torch["path"]).parent)
    figures["venv_size"] = (f"{mib(total)} ({len(listed)} packages; torch {mib(torch_bytes)}, "
                            f"everything else {mib(total - torch_bytes)})")
    biggest = sorted(((disk_usage(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)[:6]
    print(f"installed in {figures['install_seconds']}: {figures['torch_installed']}")
    print(f"CUDA packages installed: {figures['cuda_installed']}")
    print(f"environment on disk: {figures['venv_size']}")
    print("largest in site-packages: " + ", ".join(f"{name} {mib(size)}" for size, name in biggest))
    if sys.platform == "linux" and (torch["cuda"] is not None or cuda):
        failures.append("the installed torch is not the CPU build, or CUDA packages were installed")
    return figures


def check_memory(venv: Path, pip_flags: list[str], failures: list[str]) -> dict:
    figures = {}
    print("\n== 3. Server memory after every page (scripts/memory_profile.py, this environment's Python)",
          flush=True)
    pins = [line.split("#")[0].strip() for line in TEST_REQUIREMENTS.read_text().splitlines()
            if re.match(r"\s*(psutil|playwright)\s*==", line)]
    vpy = str(venv / "bin" / "python")
    if run([vpy, "-m", "pip", "install", *pip_flags, "--quiet", *pins]).returncode != 0:
        failures.append(f"could not install the measuring tools {pins}")
        return figures
    proc = run([vpy, str(ROOT / "scripts" / "memory_profile.py")], cwd=ROOT, capture_output=True)
    print(proc.stdout + proc.stderr[-3000:], end="")
    found = re.search(r"after every page: (\d+) MiB", proc.stdout)
    if proc.returncode != 0 or not found:
        failures.append(f"memory_profile.py exited with {proc.returncode}")
    if found:
        figures["rss_after_every_page"] = f"{found.group(1)} MiB (server process tree)"
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for the fresh environment (default: the one running this script)")
    parser.add_argument("--pip-flags", default="--retries 1 --timeout 10",
                        help="extra pip options for every pip call (default: %(default)s, as the Makefile)")
    parser.add_argument("--skip-memory", action="store_true", help="stop after the install and its size")
    parser.add_argument("--keep", action="store_true", help="keep the temporary environment and print its path")
    args = parser.parse_args(argv)
    pip_flags = shlex.split(args.pip_flags)

    failures: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="cloud-install-check-"))
    figures: dict[str, str] = {}
    try:
        figures |= check_resolution(args.python, pip_flags, workdir, failures)
        figures |= check_install(args.python, pip_flags, workdir / "venv", failures)
        if not args.skip_memory and "torch_installed" in figures:
            figures |= check_memory(workdir / "venv", pip_flags, failures)
    finally:
        if args.keep:
            print(f"\nkept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print("\n== Summary")
    for name, value in figures.items():
        print(f"{name}: {value}")
    for failure in failures:
        print(f"FAILED: {failure}")
    print("cloud-check: " + ("FAILED" if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
