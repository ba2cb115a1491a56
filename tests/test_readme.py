"""The README's two fresh-clone commands are the ones CI and users run."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    return [line.strip() for line in text.splitlines() if line.startswith("    python3 -m venv .venv")]


def test_readme_gives_exactly_two_fresh_clone_commands_install_demo_and_test():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("minivit demo")
    assert "pytest" in commands[1] and ".[test]" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci


def test_ci_installs_torch_for_the_parity_tests_from_the_project_files():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"pip install .*torch==2\.13\.0", ci)
