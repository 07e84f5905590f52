"""The README's snippets run as written: every code block marked to run offline (an HTML
comment naming this file above it) is run against a real archive, shell lines as commands
from the folder that holds it, Python as a script that may print no warning (as a user's
Python shows them)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.helpers import run_sweep, write_case

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "<!-- runs as written in tests/integration/test_readme.py -->"


def blocks() -> list[tuple[str, str]]:
    """(language, code) of each marked block, in the README's order."""
    found = re.findall(re.escape(MARK) + r"\n```(\w+)\n(.*?)```", README.read_text(), re.S)
    assert found, "no block of the README is marked to run"
    return found


def shell_lines(code: str) -> list[list[str]]:
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split("  #", 1)[0].strip()
        if line:
            words = shlex.split(line)
            if words[0] == ".venv/bin/wansweep":
                words = [sys.executable, "-m", "wansweep.cli", *words[1:]]
            commands.append(words)
    return commands


def test_the_readmes_marked_snippets_run_as_written(fal, prefect_harness, tmp_path):
    fal.configure(media="tiny")
    spec = write_case(tmp_path, rows=2, endpoints=["flash"], grid={"resolution": ["720p"]})
    assert run_sweep(spec)["outcomes"] == {"archived": 4}
    for language, code in blocks():
        if language == "bash":
            for command in shell_lines(code):
                done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
                assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        else:
            assert language == "python", language
            done = subprocess.run(
                [sys.executable, "-c", code],
                cwd=tmp_path,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            assert "Warning" not in done.stderr, done.stderr[-3000:]
