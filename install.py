"""Install Style Studio's dependencies with the PyTorch build that fits this machine.

    python install.py [--dev] [--editable] [--dry-run] [--torch auto|cpu|pypi]

Why: ``pip install -r requirements.txt`` takes torch from PyPI, and PyPI's Linux torch is the CUDA build
(several GB of CUDA libraries), even on a machine without an NVIDIA GPU. So, on Linux without an NVIDIA GPU,
this script first installs torch from PyTorch's CPU wheel index (about 200 MB), restricted to the range that
requirements.txt declares; the second pip command then finds torch already satisfied and installs the rest.
Everywhere else it is plain PyPI: on Linux with an NVIDIA GPU PyPI's torch is the CUDA build you want, and
on macOS and Windows PyPI's torch wheels have no CUDA libraries in them (Apple GPUs work through MPS).

Standard library only: it runs before anything is installed. Run it with the Python of the environment you want
to install into (a fresh virtual environment is best). ``--dry-run`` prints the decision and the commands and
runs nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Where an NVIDIA driver shows itself: the kernel module's version file (Linux) and nvidia-smi, which the driver
# installs (on PATH, or WSL2's fixed location, where /proc/driver/nvidia does not exist).
NVIDIA_DRIVER_FILE = "/proc/driver/nvidia/version"
WSL_NVIDIA_SMI = "/usr/lib/wsl/lib/nvidia-smi"


@dataclass(frozen=True)
class Plan:
    """What to install and why: a sentence for the person, then the commands in order."""

    reason: str
    commands: list[list[str]]


def nvidia_gpu() -> str | None:
    """How an NVIDIA GPU was found (a short phrase), or None if none was."""
    smi = shutil.which("nvidia-smi")
    if smi:
        return f"nvidia-smi is on PATH ({smi})"
    for path in (NVIDIA_DRIVER_FILE, WSL_NVIDIA_SMI):
        if os.path.exists(path):
            return f"{path} exists"
    return None


def torch_requirement(requirements: str) -> str:
    """The torch line of requirements.txt (e.g. ``torch>=2.6,<2.16``), so that the range is declared once."""
    for line in requirements.splitlines():
        line = line.split(" #", 1)[0].strip()  # pip's rule: a comment starts at '#' preceded by whitespace
        if re.match(r"torch(?![\w.-])", line, re.IGNORECASE):  # torch, not torchvision or torch-foo
            return line
    raise SystemExit("install.py: requirements.txt has no torch line")


def make_plan(
    *,
    platform: str,
    gpu: str | None,
    requirements: str,
    torch: str = "auto",
    dev: bool = False,
    editable: bool = False,
    python: str = sys.executable,
) -> Plan:
    """Decide which torch build to install and list the pip commands. Pure: no detection, nothing run."""
    pip = [python, "-m", "pip", "install"]
    linux = platform.startswith("linux")
    if torch == "cpu":
        reason = "--torch cpu: the CPU build of torch, from PyTorch's CPU index"
    elif torch == "pypi":
        reason = "--torch pypi: torch from PyPI (the CUDA build on Linux)"
    elif linux and gpu is None:
        reason = (
            "Linux without an NVIDIA GPU (no nvidia-smi, no /proc/driver/nvidia): the CPU build of torch from "
            "PyTorch's CPU index, so pip does not download the CUDA build (several GB) that PyPI serves on Linux"
        )
    elif linux:
        reason = f"Linux with an NVIDIA GPU ({gpu}): torch from PyPI, which is the CUDA build"
    else:
        reason = (
            f"{platform}: torch from PyPI, whose wheels here carry no CUDA libraries (Apple GPUs: MPS). For CUDA "
            "on Windows, first install torch from a CUDA index (see https://pytorch.org/get-started/locally/)"
        )
    cpu = torch == "cpu" or (torch == "auto" and linux and gpu is None)
    commands = []
    if cpu:
        commands.append([*pip, torch_requirement(requirements), "--index-url", CPU_INDEX])
    rest = ["-e", "."] if editable else ["-r", "requirements.txt"]
    if dev:
        rest += ["-r", "requirements-dev.txt"]
    commands.append([*pip, *rest])
    return Plan(reason, commands)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--dev", action="store_true", help="also the test and lint tools (requirements-dev.txt)")
    parser.add_argument(
        "--editable",
        action="store_true",
        help="install the project itself with pip install -e . (gives the style-studio and style-studio-cli "
        "commands and `import pipelines` from any folder) instead of only requirements.txt",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the decision and the commands, run nothing")
    parser.add_argument(
        "--torch",
        choices=["auto", "cpu", "pypi"],
        default="auto",
        help="auto: detect (default); cpu: PyTorch's CPU build; pypi: torch from PyPI (CUDA on Linux)",
    )
    args = parser.parse_args(argv)

    plan = make_plan(
        platform=sys.platform,
        gpu=nvidia_gpu(),
        requirements=(ROOT / "requirements.txt").read_text(),
        torch=args.torch,
        dev=args.dev,
        editable=args.editable,
    )
    print(f"install.py: {plan.reason}.")
    if sys.prefix == sys.base_prefix:
        print(f"install.py: note: not in a virtual environment; installing into {sys.prefix}.")
    for command in plan.commands:
        print(f"{'would run' if args.dry_run else 'running'}: {shlex.join(command)}", flush=True)
        if not args.dry_run:
            done = subprocess.run(command, cwd=ROOT)
            if done.returncode != 0:
                print(f"install.py: failed (exit status {done.returncode}): {shlex.join(command)}", file=sys.stderr)
                return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
