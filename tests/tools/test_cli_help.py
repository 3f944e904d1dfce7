"""Every command a user runs explains each of its options in --help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [
    ["-m", "tools.demo"],
    ["-m", "tools.replay"],
    ["-m", "tools.endpoints"],
    ["-m", "tools.health"],
    ["-m", "tools.deadletter"],
    ["-m", "tools.emulator"],
    ["-m", "tools.flow_solution"],
    ["-m", "tools.drill"],
    ["-m", "benchmarks.fleet"],
    ["tools/package.py"],
    ["-m", "benchmarks.decode"],
    ["-m", "benchmarks.dispatch"],
    ["-m", "benchmarks.writeback"],
    ["-m", "benchmarks.soak"],
]


def undocumented(help_text: str) -> list[str]:
    """The option and argument lines of argparse's help that carry no explanation."""
    lines = help_text.splitlines()
    missing = []
    in_section = False
    for index, line in enumerate(lines):
        if re.match(r"^(options|positional arguments):$", line):
            in_section = True
            continue
        if not line.strip() or not line.startswith(" "):
            in_section = False  # a blank line or a new heading ends the section
            continue
        if not in_section or not re.match(r"^  \S", line):
            continue
        has_inline_help = re.search(r"\S\s{2,}\S", line.strip()) is not None
        following = lines[index + 1] if index + 1 < len(lines) else ""
        continued = following.startswith("   ") and bool(following.strip())
        if not (has_inline_help or continued):
            missing.append(line.strip())
    return missing


def test_the_check_finds_an_option_without_help() -> None:
    sample = "usage: x\n\noptions:\n  -h, --help  show this help message and exit\n  --bare\n"
    assert undocumented(sample) == ["--bare"]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[-1])
def test_every_option_has_help(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "options:" in done.stdout
    assert undocumented(done.stdout) == []
