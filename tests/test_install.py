"""Installing the studio: install.py picks the torch build that fits the machine, and the project builds into a
wheel that holds the library and the app (not the tests or benchmarks) and imports from any folder.

No network: install.py's decision is tested with its detection replaced and nothing run; the wheel is built from
a copy of the source tree with the setuptools already installed (--no-build-isolation)."""

import ast
import configparser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from packaging.requirements import Requirement

REQUIREMENTS = (ROOT / "requirements.txt").read_text()
TORCH_LINE = next(line for line in REQUIREMENTS.splitlines() if re.match(r"torch[<>=!~ ]", line))


def _load_install():
    spec = importlib.util.spec_from_file_location("style_studio_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


install = _load_install()


def test_the_torch_range_is_read_from_requirements_txt():
    assert TORCH_LINE.startswith("torch>=")  # the range is declared there, once
    assert install.torch_requirement(REQUIREMENTS) == TORCH_LINE
    text = "# torch here is a comment\ntorchvision>=0.2\ntorch-foo==1\nTorch >=2.6, <3  # inline comment\n"
    assert install.torch_requirement(text) == "Torch >=2.6, <3"


# ---- install.py's decision ---------------------------------------------------------------------------------------


def test_cpu_linux_installs_torch_from_the_cpu_index_first_then_the_rest_from_pypi():
    plan = install.make_plan(platform="linux", gpu=None, requirements=REQUIREMENTS, python="PY")
    torch_first, rest = plan.commands
    assert torch_first == [
        "PY",
        "-m",
        "pip",
        "install",
        TORCH_LINE,
        "--index-url",
        "https://download.pytorch.org/whl/cpu",
    ]
    assert rest == ["PY", "-m", "pip", "install", "-r", "requirements.txt"]
    assert "CPU" in plan.reason and "NVIDIA" in plan.reason


@pytest.mark.parametrize(
    ("platform", "gpu"), [("linux", "nvidia-smi is on PATH (/usr/bin/nvidia-smi)"), ("darwin", None), ("win32", None)]
)
def test_nvidia_linux_macos_and_windows_take_torch_from_pypi(platform, gpu):
    plan = install.make_plan(platform=platform, gpu=gpu, requirements=REQUIREMENTS, python="PY")
    assert plan.commands == [["PY", "-m", "pip", "install", "-r", "requirements.txt"]]
    assert not any("download.pytorch.org" in part or "--index-url" in part for part in plan.commands[0])


def test_dev_editable_and_forced_choices():
    plan = install.make_plan(
        platform="linux", gpu=None, requirements=REQUIREMENTS, dev=True, editable=True, python="PY"
    )
    assert plan.commands[-1] == ["PY", "-m", "pip", "install", "-e", ".", "-r", "requirements-dev.txt"]
    forced_cpu = install.make_plan(platform="linux", gpu="found", requirements=REQUIREMENTS, torch="cpu")
    assert install.CPU_INDEX in forced_cpu.commands[0]
    forced_pypi = install.make_plan(platform="linux", gpu=None, requirements=REQUIREMENTS, torch="pypi")
    assert len(forced_pypi.commands) == 1 and install.CPU_INDEX not in forced_pypi.commands[0]


def test_detection_looks_at_nvidia_smi_and_the_driver_file(monkeypatch, tmp_path):
    driver_file, wsl_smi = tmp_path / "proc-driver-nvidia-version", tmp_path / "wsl-nvidia-smi"
    monkeypatch.setattr(install, "NVIDIA_DRIVER_FILE", str(driver_file))
    monkeypatch.setattr(install, "WSL_NVIDIA_SMI", str(wsl_smi))
    monkeypatch.setattr(install.shutil, "which", lambda name: None)
    assert install.nvidia_gpu() is None
    wsl_smi.touch()
    assert str(wsl_smi) in install.nvidia_gpu()
    driver_file.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module\n")
    assert str(driver_file) in install.nvidia_gpu()
    monkeypatch.setattr(install.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    assert "nvidia-smi is on PATH" in install.nvidia_gpu()


def _never_run(*args, **kwargs):
    raise AssertionError(f"--dry-run ran {args}")


def test_dry_run_prints_the_decision_and_runs_nothing(monkeypatch, capsys):
    monkeypatch.setattr(install, "nvidia_gpu", lambda: None)
    monkeypatch.setattr(install.sys, "platform", "linux")
    monkeypatch.setattr(install.subprocess, "run", _never_run)
    assert install.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "without an NVIDIA GPU" in out and "would run" in out
    assert "--index-url https://download.pytorch.org/whl/cpu" in out and TORCH_LINE in out

    monkeypatch.setattr(install, "nvidia_gpu", lambda: "nvidia-smi is on PATH (/usr/bin/nvidia-smi)")
    assert install.main(["--dry-run", "--dev"]) == 0
    out = capsys.readouterr().out
    assert "with an NVIDIA GPU" in out and "download.pytorch.org" not in out and "requirements-dev.txt" in out


def test_without_dry_run_it_runs_pip_in_order_and_stops_at_a_failure(monkeypatch, capsys):
    monkeypatch.setattr(install, "nvidia_gpu", lambda: None)
    monkeypatch.setattr(install.sys, "platform", "linux")
    ran, exit_codes = [], []

    def fake_run(command, cwd):
        assert Path(cwd) == ROOT  # so that -r requirements.txt and -e . name the project's files
        ran.append(command)
        return subprocess.CompletedProcess(command, exit_codes.pop(0))

    monkeypatch.setattr(install.subprocess, "run", fake_run)
    exit_codes[:] = [3, 0]
    assert install.main([]) == 3 and len(ran) == 1 and install.CPU_INDEX in ran[0]
    assert "failed (exit status 3)" in capsys.readouterr().err
    ran.clear()
    exit_codes[:] = [0, 0]
    assert install.main(["--editable"]) == 0 and len(ran) == 2
    assert ran[0][:4] == [sys.executable, "-m", "pip", "install"] and ran[1][-2:] == ["-e", "."]


def test_the_script_runs_on_its_own():
    done = subprocess.run(
        [sys.executable, str(ROOT / "install.py"), "--dry-run"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "would run:" in done.stdout and "-r requirements.txt" in done.stdout


def test_the_readme_installs_with_install_py_first():
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"```bash\npython install\.py && ", quick_start)
    assert quick_start.index("CPU") < quick_start.index("python install.py")  # the why comes before the command


def test_requirements_cpu_adds_the_cpu_index_and_takes_the_rest_from_requirements_txt():
    lines = [
        line for line in (ROOT / "requirements-cpu.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert lines == ["--extra-index-url https://download.pytorch.org/whl/cpu", "-r requirements.txt"]


# ---- the package ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the source tree (so that building writes nothing into the checkout), tests and bench included."""
    skip = shutil.ignore_patterns(".*", "__pycache__", "build", "dist", "*.egg-info", "test-artifacts")
    src = tmp_path_factory.mktemp("source") / "style-studio"
    shutil.copytree(ROOT, src, ignore=skip)
    return src


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    if importlib.util.find_spec("setuptools") is None:
        pytest.fail("setuptools is missing: requirements-dev.txt installs it")
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, "."]
    done = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("style_studio-*.whl")
    return path


def _dist_info(names: list[str], file: str) -> str:
    return next(name for name in names if re.fullmatch(rf"style_studio-[^/]+\.dist-info/{file}", name))


def test_the_wheel_holds_the_library_and_the_app_and_nothing_else(wheel, source):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {"pipelines", "demo.py"} <= top
    assert not top & {"tests", "bench", "docs", "assets", "modal_app.py", "install.py", "conftest.py"}
    assert {name for name in top if not re.match(r"style_studio-[^/]+\.(dist-info|data)$", name)} == {
        "pipelines",
        "demo.py",
    }
    # every module of every subpackage ships
    expected = {p.relative_to(source).as_posix() for p in (source / "pipelines").rglob("*.py")}
    assert expected and expected <= set(names)
    # the example pictures ship as data, for a non-editable install (<prefix>/share/style-studio/assets)
    shipped = {n.split("/data/", 1)[1] for n in names if re.match(r"style_studio-[^/]+\.data/data/", n)}
    pictures = {f"share/style-studio/{p.relative_to(source).as_posix()}" for p in (source / "assets").glob("*/*.jpg")}
    assert pictures and pictures <= shipped and "share/style-studio/assets/SOURCES.md" in shipped


def test_the_wheel_declares_the_commands_and_the_requirements(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(_dist_info(names, "entry_points.txt")).decode()
        metadata = archive.read(_dist_info(names, "METADATA")).decode()
        modules = {name: archive.read(name).decode() for name in ("demo.py", "pipelines/__main__.py")}
    parser = configparser.ConfigParser()
    parser.read_string(entry_points)
    assert dict(parser["console_scripts"]) == {
        "style-studio": "demo:main",
        "style-studio-cli": "pipelines.__main__:main",
    }
    for name, source_text in modules.items():  # each target is a main(argv=None) the script wrapper can call
        (main,) = [n for n in ast.parse(source_text).body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert [a.arg for a in main.args.args] == ["argv"] and len(main.args.defaults) == 1, name
    # the dependencies are requirements.txt's lines, comments skipped and the torch range intact
    declared = [Requirement(line) for line in REQUIREMENTS.splitlines() if line.strip() and not line.startswith("#")]
    requires = [Requirement(line) for line in re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)]
    assert [(r.name, r.specifier) for r in requires] == [(r.name, r.specifier) for r in declared]
    assert Requirement(TORCH_LINE).specifier in [r.specifier for r in requires if r.name == "torch"]


def _python(code: str, cwd: Path, **env: str) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | env
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_an_installed_copy_imports_from_any_folder(wheel, tmp_path):
    target = tmp_path / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target, wheel]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = _python("import pipelines; print(pipelines.__file__)", elsewhere, PYTHONPATH=str(target))
    assert Path(found) == target / "pipelines" / "__init__.py"
    assert (target / "demo.py").is_file() and not (target / "tests").exists() and not (target / "bench").exists()


def test_an_editable_install_imports_the_checkout_from_any_folder(source, tmp_path):
    """What pip install -e . does, without pip's network: setuptools' editable wheel, unpacked, its .pth read."""
    out, target = tmp_path / "wheel", tmp_path / "site"
    built = _python(f"from setuptools import build_meta; print(build_meta.build_editable({str(out)!r}))", source)
    with zipfile.ZipFile(out / built.splitlines()[-1]) as archive:
        archive.extractall(target)
    code = (
        f"import importlib.util, site; site.addsitedir({str(target)!r}); import pipelines; print(pipelines.__file__); "
        "print(importlib.util.find_spec('demo').origin, importlib.util.find_spec('bench'), "
        "importlib.util.find_spec('tests'))"
    )
    found, others = _python(code, tmp_path).splitlines()[-2:]
    assert Path(found) == source / "pipelines" / "__init__.py"
    assert others == f"{source / 'demo.py'} None None"
