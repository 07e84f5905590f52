"""The house keeps the promises its docstrings make: which package may import which (arrows
point down), one owner per outside system, and every archive key built in one module.

Read from the source with ``ast`` (lazy imports inside functions included), so a new import
that breaks a rule fails here, whoever adds it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "wansweep"

BASE = {"wansweep", "errors", "scrub", "_face", "serve"}
# what each package of the core may import besides itself (tests/unit/test_house.py is the
# only copy of this table; each package's docstring says the same in words)
ALLOWED: dict[str, set[str]] = {
    "errors": BASE,
    "scrub": BASE,
    "_face": BASE,
    "serve": BASE,
    "store": BASE,
    "fal": BASE,
    "media": BASE | {"store"},
    "plan": BASE | {"store", "fal", "media"},
    "run": BASE | {"store", "fal", "media", "plan"},
    "results": BASE | {"store", "fal", "media", "plan", "run"},
    "localfal": BASE | {"store", "fal", "media", "plan"},
    "cli": BASE | {"store", "fal", "media", "plan", "run", "results", "localfal", "cli"},
}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, function-level ones included; ``from a import
    b`` counts as ``a.b`` when ``a/b`` is a module or package of this repository."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                sub = REPO.joinpath(*node.module.split("."), a.name)
                is_module = sub.with_suffix(".py").exists() or sub.is_dir()
                found.append((node.lineno, f"{node.module}.{a.name}" if is_module else node.module))
    return found


def _package(module: str) -> str:
    """The core package a ``wansweep.*`` module belongs to (``wansweep`` for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "wansweep"


def test_core_packages_import_only_downward():
    wrong = []
    for path in _files(CORE):
        own = _package(_module(path))
        for line, module in _imports(path):
            if module.split(".")[0] in ("flows", "tasks", "prefect"):
                if own != "cli":  # the command runs flows (and prepares Prefect for them)
                    wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
                continue
            if not module.startswith("wansweep"):
                continue
            other = _package(module)
            if other != own and other not in ALLOWED.get(own, set()):
                wrong.append(f"{path.relative_to(REPO)}:{line} ({own}) imports {module} ({other})")
    assert not wrong, "\n".join(wrong)
    assert set(ALLOWED) >= {_package(_module(p)) for p in _files(CORE)} - {"wansweep"}


def test_flows_and_tasks_sit_above_the_core():
    wrong = []
    for folder, forbidden in (("tasks", ("flows", "wansweep.cli")), ("flows", ("wansweep.cli",))):
        for path in _files(REPO / folder):
            for line, module in _imports(path):
                if module.startswith(forbidden):
                    wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "library, owners",
    [
        ("fal_client", ("wansweep/fal/",)),
        ("boto3", ("wansweep/store/s3.py",)),
        ("botocore", ("wansweep/store/s3.py",)),
    ],
)
def test_one_owner_per_outside_system(library, owners):
    users = {
        str(path.relative_to(REPO))
        for folder in (CORE, REPO / "flows", REPO / "tasks")
        for path in _files(folder)
        for _, module in _imports(path)
        if module.split(".")[0] == library
    }
    assert users, f"nobody imports {library}: the rule guards nothing"
    assert all(u.startswith(owners) for u in users), sorted(users)


KEY_PREFIXES = (
    "jobs/",
    "ledger/",
    "leases/",
    "markers/",
    "sweeps/",
    "media/",
    "index/",
    "pricing/",
)


def test_every_archive_key_is_built_in_the_layout_module():
    """A string that starts like an archive key, anywhere but store/layout.py (the local fal
    server's own URL paths are its own, not archive keys)."""
    wrong = []
    for folder in (CORE, REPO / "flows", REPO / "tasks"):
        for path in _files(folder):
            rel = str(path.relative_to(REPO))
            if rel == "wansweep/store/layout.py" or rel.startswith("wansweep/localfal/"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                text = None
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = node.value
                elif isinstance(node, ast.JoinedStr) and node.values:
                    first = node.values[0]
                    text = first.value if isinstance(first, ast.Constant) else None
                if text and text.startswith(KEY_PREFIXES):
                    wrong.append(f"{rel}:{node.lineno} {text!r}")
    assert not wrong, "\n".join(wrong)


def test_no_source_file_is_over_400_lines():
    """A file that long holds more than one idea (split it along them)."""
    long = {
        str(path.relative_to(REPO)): n
        for folder in (CORE, REPO / "flows", REPO / "tasks")
        for path in _files(folder)
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert not long, long


PREFECT_INTERNALS = ("_cancel_events", "task_run_assets", "run_results", "visit_collection")


def test_prefect_internals_are_used_in_the_fan_out_module_only():
    users = {
        str(path.relative_to(REPO))
        for folder in (CORE, REPO / "flows", REPO / "tasks")
        for path in _files(folder)
        if any(name in path.read_text() for name in PREFECT_INTERNALS)
    }
    assert users == {"flows/fanout.py"}, users


def test_retry_numbers_live_in_the_policy_module():
    """No module of fal's or of a run's keeps its own count of tries or its own backoff: a
    number bound to a name that says so (at any depth, tuple assignments included) or handed
    straight to a ``sleep``, anywhere but fal/policy.py, is a second home."""
    pattern = re.compile(r"(?i)(tries|attempts|retr|backoff|breaks|pause|delay)")

    def number(node) -> bool:
        return isinstance(node, ast.Constant) and type(node.value) in (int, float)

    wrong = []
    for path in _files(CORE / "fal") + _files(CORE / "run") + _files(REPO / "tasks"):
        if path.name == "policy.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    pairs = (
                        zip(target.elts, node.value.elts)
                        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                        else [(target, node.value)]
                    )
                    for name, value in pairs:
                        # a counter starting at 0 is no number of tries
                        if (
                            isinstance(name, ast.Name)
                            and pattern.search(name.id)
                            and number(value)
                            and value.value
                        ):
                            wrong.append(f"{where} {name.id}")
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "sleep":
                if node.args and number(node.args[0]) and node.args[0].value:
                    wrong.append(f"{where} sleep({node.args[0].value})")
    assert not wrong, wrong


def test_no_endpoint_is_named_in_code_only_in_its_profile():
    """Each endpoint's facts (its id, fields, durations, prices) live in its profile under
    configs/endpoints, read by plan/endpoints.py: no source file names an endpoint id."""
    import re

    named = re.compile(r"[\"'](wan/v2|fal-ai/)")
    found = {
        str(path.relative_to(REPO))
        for folder in (CORE, REPO / "flows", REPO / "tasks")
        for path in _files(folder)
        if named.search(path.read_text())
    }
    assert not found, found
