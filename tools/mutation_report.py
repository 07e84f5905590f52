"""Write the mutation-testing report (`make mutate`): per money-path module, how many of
mutmut's mutants `tests/unit` killed, and each that lived, by function. Reads mutmut's own
records (mutants/**/*.py.meta), so it needs no second run. Mutants listed in
``mutation/equivalent.toml`` are counted apart: the score is killed / (mutants judged -
equivalent), the usual definition, and each is printed with why no test can tell it from the
original. An entry names its mutant *and* the change it makes (``change``: the lines removed
and added, stripped, joined by `` / ``), and is matched by its function and that change, so an
edit that renumbers mutmut's mutants cannot move a reason onto another mutant. An entry that
matches no surviving mutant is flagged, so the list cannot hide a test's work.

    python tools/mutation_report.py > mutation/REPORT.md
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

# mutmut 3's exit codes of a mutant's test run
STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 5: "no tests", 34: "skipped"}
STATUS.update({35: "suspicious", 36: "timeout", 24: "timeout", -24: "timeout", 37: "killed"})


def _equivalent(root: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(function, change) -> (the name it was listed under, why)."""
    import tomllib

    path = root / "mutation" / "equivalent.toml"
    listed = tomllib.loads(path.read_text()).get("equivalent", {}) if path.exists() else {}
    return {(_function(n), e["change"]): (n, e["why"]) for n, e in listed.items()}


def _function(name: str) -> str:
    return name.rsplit("__mutmut_", 1)[0]


_SOURCES: dict[Path, dict[str, str]] = {}


def change(root: Path, name: str) -> str:
    """What a mutant changes: the lines its function loses and gains, stripped."""
    import ast
    import difflib

    module = root / "mutants" / (name.split(".x")[0].replace(".", "/") + ".py")
    if module not in _SOURCES:
        src = module.read_text()
        _SOURCES[module] = {
            node.name: ast.get_source_segment(src, node)
            for node in ast.walk(ast.parse(src))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
    functions = _SOURCES[module]
    local = name.rsplit(".", 1)[1]
    orig = functions.get(local.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "")
    mutant = functions.get(local, "")
    lines = difflib.unified_diff(orig.splitlines()[1:], mutant.splitlines()[1:], lineterm="", n=0)
    return " / ".join(
        line[0] + " " + line[1:].strip()
        for line in lines
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def main(root: Path) -> None:
    equivalent = _equivalent(root)
    rows, survivors, listed, used = [], defaultdict(list), [], set()
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(root / "mutants")).removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(
            STATUS.get(code, "killed") if code is not None else "not run" for code in codes.values()
        )
        for name, code in codes.items():
            if STATUS.get(code) not in ("survived", "no tests"):
                continue
            key = (_function(name), change(root, name)) if equivalent else None
            if key in equivalent:
                used.add(key)
                counts[STATUS[code]] -= 1
                counts["equivalent"] += 1
                listed.append((name, key[1], equivalent[key][1]))
                continue
            if STATUS.get(code) in ("survived", "no tests"):
                function = name.rsplit("__mutmut_", 1)[0].split(".")[-1].replace("ǁ", ".")
                survivors[module].append((function.strip(".x"), name, STATUS[code]))
        judged = sum(counts.values()) - counts["skipped"] - counts["not run"] - counts["equivalent"]
        rows.append((module, sum(counts.values()), counts, judged))
    total = Counter()
    print("# Mutation testing of the money path\n")
    print("`make mutate` (mutmut over the modules in pyproject's `[tool.mutmut]`, against")
    print("`tests/unit`). A mutant is one small change (a flipped comparison, a constant, a")
    print("dropped call); *killed* means some unit test failed on it. *No tests*: no unit test")
    print("runs the function at all. *Timeout*: the tests hung under it (caught, as mutmut counts")
    print("it). *Equivalent*: no test could tell it from the original (each")
    print("listed below with why, from `mutation/equivalent.toml`); the score leaves them out.\n")
    print(f"Taken {_when_and_what(root)}.\n")
    print("| module | mutants | killed | timeout | survived | no tests | equivalent | score |")
    print("|---|---|---|---|---|---|---|---|")
    for module, n, counts, judged in rows:
        total.update(counts)
        score = (counts["killed"] + counts["timeout"]) / judged if judged else 0.0
        print(
            f"| `{module}` | {n} | {counts['killed']} | {counts['timeout']} | {counts['survived']} | "
            f"{counts['no tests']} | {counts['equivalent']} | {score:.0%} |"
        )
    judged = sum(total.values()) - total["skipped"] - total["not run"] - total["equivalent"]
    print(
        f"| **all** | {sum(total.values())} | {total['killed']} | {total['timeout']} | "
        f"{total['survived']} | {total['no tests']} | {total['equivalent']} | "
        f"**{(total['killed'] + total['timeout']) / max(1, judged):.0%}** |\n"
    )
    stale = [equivalent[k][0] for k in equivalent.keys() - used]
    if stale:
        print(
            "**Listed as equivalent, but no surviving mutant makes that change** (killed now, or "
            f"the code changed: take them off the list): {', '.join(f'`{n}`' for n in stale)}\n"
        )
    caught = total["killed"] + total["timeout"]
    print(
        f"Counting the equivalent mutants as lived instead: {caught} of {judged + total['equivalent']} "
        f"caught ({caught / max(1, judged + total['equivalent']):.1%}).\n"
    )
    print("## Mutants that lived, by function\n")
    if not survivors:
        print("None: every mutant is killed or listed as equivalent below.\n")
    print("`mutmut show NAME` prints a mutant's change.\n")
    for module, found in survivors.items():
        by_function = defaultdict(list)
        for function, name, status in found:
            by_function[(function, status)].append(name.rsplit("__mutmut_", 1)[1])
        print(f"### `{module}`\n")
        for (function, status), numbers in sorted(by_function.items()):
            print(f"- `{function}` ({status}): {', '.join(sorted(numbers, key=int))}")
        print()
    if listed:
        print("## Equivalent mutants, and why\n")
        for name, what, why in listed:
            print(f"- `{name}` (`{what}`): {why}")
        print()


def _when_and_what(root: Path) -> str:
    """The date of mutmut's records and the commit they were made on, when git can tell."""
    import datetime
    import subprocess

    newest = max((p.stat().st_mtime for p in (root / "mutants").rglob("*.py.meta")), default=0)
    day = datetime.datetime.fromtimestamp(newest, datetime.UTC).strftime("%Y-%m-%d")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    return f"{day}" + (f" on commit {commit}" if commit else "")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
