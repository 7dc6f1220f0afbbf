"""The mutation score per module, after ``mutmut run`` (``docs/testing.md``).

``python -m tests.mutation_score`` reads ``mutmut results --all true`` and
the equivalent mutants listed in ``docs/testing.md`` (lines that start with
a mutant's name in backquotes), and prints one row per module: mutants,
killed, survived (no test failed, or none reached it), equivalent, other
(not run), and the score: killed / (killed + survived).
Exits 1 if a listed equivalent mutant no longer exists or was killed (the
list is then stale), so the documented figures stay true.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
#: mutmut's statuses that mean a test noticed the mutant, and those that
#: mean none did (a mutant no test reaches survives too).
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
SURVIVED = {"survived", "no tests", "suspicious"}


def results() -> dict[str, str]:
    out = subprocess.run(
        ["mutmut", "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status
    return found


def equivalent() -> set[str]:
    names = re.findall(r"^\s*[-|]?\s*`([\w.ǁ]+__mutmut_\d+)`", DOC.read_text(), re.M)
    return set(names)


def module(name: str) -> str:
    return name.split(".x", 1)[0]


def main() -> int:
    statuses = results()
    listed = equivalent()
    stale = sorted(n for n in listed if statuses.get(n) in KILLED or n not in statuses)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, status in statuses.items():
        kind = "equivalent" if name in listed else status
        counts[module(name)][kind] += 1
    print(
        f"{'module':<36}{'mutants':>8}{'killed':>8}{'survived':>9}{'equiv.':>8}"
        f"{'other':>7}{'score':>8}"
    )
    for name in sorted(counts):
        c = counts[name]
        killed = sum(c[s] for s in KILLED)
        survived = sum(c[s] for s in SURVIVED)
        other = sum(c.values()) - killed - survived - c["equivalent"]
        scored = killed + survived
        score = f"{100 * killed / scored:.1f}%" if scored else "-"
        print(
            f"{name:<36}{sum(c.values()):>8}{killed:>8}{survived:>9}"
            f"{c['equivalent']:>8}{other:>7}{score:>8}"
        )
    for name in stale:
        print(f"stale: {name} is listed as equivalent but was killed or is gone")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
