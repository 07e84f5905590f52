"""Write the mutation-testing report (`make mutate`): per money-path module, how many of
mutmut's mutants `tests/unit` killed, and each that lived, by function. Reads mutmut's own
records (mutants/**/*.py.meta), so it needs no second run.

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


def main(root: Path) -> None:
    rows, survivors = [], defaultdict(list)
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(root / "mutants")).removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(
            STATUS.get(code, "killed") if code is not None else "not run" for code in codes.values()
        )
        for name, code in codes.items():
            if STATUS.get(code) in ("survived", "no tests"):
                function = name.rsplit("__mutmut_", 1)[0].split(".")[-1].replace("ǁ", ".")
                survivors[module].append((function.strip(".x"), name, STATUS[code]))
        judged = sum(counts.values()) - counts["skipped"] - counts["not run"]
        rows.append((module, sum(counts.values()), counts, judged))
    total = Counter()
    print("# Mutation testing of the money path\n")
    print("`make mutate` (mutmut over the modules in pyproject's `[tool.mutmut]`, against")
    print("`tests/unit`). A mutant is one small change (a flipped comparison, a constant, a")
    print("dropped call); *killed* means some unit test failed on it. *No tests*: no unit test")
    print("runs the function at all.\n")
    print(f"Taken {_when_and_what(root)}.\n")
    print("| module | mutants | killed | survived | no tests | score |")
    print("|---|---|---|---|---|---|")
    for module, n, counts, judged in rows:
        total.update(counts)
        score = counts["killed"] / judged if judged else 0.0
        print(
            f"| `{module}` | {n} | {counts['killed']} | {counts['survived']} | "
            f"{counts['no tests']} | {score:.0%} |"
        )
    judged = sum(total.values()) - total["skipped"] - total["not run"]
    print(
        f"| **all** | {sum(total.values())} | {total['killed']} | {total['survived']} | "
        f"{total['no tests']} | **{total['killed'] / max(1, judged):.0%}** |\n"
    )
    print("## Mutants that lived, by function\n")
    print("`mutmut show NAME` prints a mutant's change.\n")
    for module, found in survivors.items():
        by_function = defaultdict(list)
        for function, name, status in found:
            by_function[(function, status)].append(name.rsplit("__mutmut_", 1)[1])
        print(f"### `{module}`\n")
        for (function, status), numbers in sorted(by_function.items()):
            print(f"- `{function}` ({status}): {', '.join(sorted(numbers, key=int))}")
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
