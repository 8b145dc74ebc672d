"""requirements.txt gives the CPU build of torch on every platform, and the environment the tests run in has it."""
from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import cloud_install_check  # noqa: E402

PLATFORMS = {  # the marker variables that differ between a Community Cloud host, a Mac and a Windows laptop
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "darwin": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
    "win32": {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64"},
}


def requirement_lines() -> list[str]:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    return [line for line in lines if line]


def torch_pins(environment: dict) -> list[str]:
    """The torch specifiers requirements.txt asks for on a platform with these marker values."""
    reqs = [Requirement(line) for line in requirement_lines() if not line.startswith("-")]
    return [str(r.specifier) for r in reqs if r.name == "torch" and (r.marker is None or r.marker.evaluate(environment))]


@pytest.mark.parametrize("platform_name, expected", [("linux", "==2.13.0+cpu"), ("darwin", "==2.13.0"),
                                                     ("win32", "==2.13.0")])
def test_requirements_pin_the_cpu_build_of_torch_on_each_platform(platform_name, expected):
    assert torch_pins(PLATFORMS[platform_name]) == [expected]


def test_requirements_name_pytorchs_cpu_index_and_pin_everything():
    lines = requirement_lines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    unpinned = [line for line in lines if not line.startswith("-") and "==" not in line]
    assert unpinned == []


def test_cuda_packages_are_recognised_by_name():
    names = ["torch", "nvidia-cublas", "NVIDIA_cudnn_cu13", "cuda-toolkit", "triton", "pytorch-triton",
             "numpy", "tritonclient", "cudf"]
    assert cloud_install_check.cuda_packages(names) == ["cuda-toolkit", "nvidia-cublas", "nvidia-cudnn-cu13",
                                                       "pytorch-triton", "triton"]


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux has a CUDA build to avoid")
def test_the_installed_torch_is_the_cpu_build_with_no_cuda_packages():
    import torch

    assert torch.version.cuda is None and torch.__version__.endswith("+cpu")
    installed = [dist.metadata["Name"] for dist in importlib.metadata.distributions()]
    assert cloud_install_check.cuda_packages(installed) == []


def test_trl_is_for_the_tests_only():
    """TRL (requirements-trl.txt) checks the export in the tests; the app and core never import it,
    and requirements.txt, which a host installs, does not bring it."""
    assert not any("trl" in line or "transformers" in line for line in requirement_lines())
    trl_lines = (ROOT / "requirements-trl.txt").read_text()
    assert "trl==1.16.0" in trl_lines and "torch" not in [Requirement(l).name for l in trl_lines.splitlines()
                                                           if l.strip() and not l.startswith("#")]
    for folder in ("grpo_core", "ui", "pages"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert "import trl" not in text and "from trl" not in text.replace('"from trl import', ""), path
