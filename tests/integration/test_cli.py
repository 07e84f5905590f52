"""The command as a user meets it: what it prints is verbatim, what it refuses is refused before anything is read or written."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.helpers import make_image


def test_markup_in_a_row_id_is_shown_verbatim(tmp_path):
    (tmp_path / "i.png").write_bytes(make_image())
    (tmp_path / "m.csv").write_text(
        "id,image,prompt,duration\n[/red],i.png,a,7\n[link=x]y,i.png,b,5\n"
    )
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "manifest": "m.csv", "endpoints": ["flash"]}))
    out = subprocess.run(
        [sys.executable, "-m", "wansweep.cli", "plan", str(spec), "--store", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "row 1 (id [/red]): duration" in out.stdout and "Traceback" not in out.stderr


def test_report_refuses_a_sweep_name_that_leaves_the_archive(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "wansweep.cli", "report", str(tmp_path), "--sweep", "../../x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "lowercase letters" in out.stdout
    assert not (tmp_path.parent.parent / "x").exists()


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "wansweep.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_run_refuses_a_bad_spec_as_plan_does_before_any_server_starts(tmp_path):
    spec = tmp_path / "s.yaml"
    for text in (
        "name: s\nmanifest: m.csv\nbudget_usd: 0.01\nendpoints: [flash]\nbudget_usd: 1000\n",
        "name: s\nmanifest: m.csv\nendpoints: [flash]\nbudget_usd: .inf\n",
        "name: s\nmanifest: m.csv\nendpoints: [flash]\nconcurency: 3\n",
    ):
        spec.write_text(text)
        planned, ran = _cli("plan", str(spec), cwd=tmp_path), _cli("run", str(spec), cwd=tmp_path)
        assert planned.returncode == ran.returncode == 2, ran.stdout + ran.stderr
        assert planned.stdout == ran.stdout and "Traceback" not in ran.stdout + ran.stderr
        assert "local fal server" not in ran.stdout  # neither fal's nor Prefect's server began
        assert not (tmp_path / ".wansweep").exists()
