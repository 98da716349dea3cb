"""The promises the README makes that a file can break."""

import re

from conftest import ASSETS, ROOT

README = (ROOT / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_is_exactly_two_commands_and_ci_runs_the_test_one():
    commands = quick_start_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "demo.py" in commands[0] and "pytest" in commands[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci_lines  # CI runs the README's test command verbatim


def test_screenshot_and_example_provenance_exist():
    assert (ROOT / "docs" / "screenshot.png").stat().st_size > 10_000
    sources = (ASSETS / "SOURCES.md").read_text()
    shipped = sorted(p.name for p in ASSETS.glob("*/*.jpg"))
    assert shipped and all(name in sources for name in shipped)
