"""The mutation score per module, after ``mutmut run`` (``docs/testing.md``).

``python -m tests.mutation_score`` reads ``mutmut results --all true`` and
the equivalent mutants listed in ``docs/testing.md`` (lines that start with
a mutant's name in backquotes), and prints one row per module: mutants,
killed, survived (no test failed, or none reached it), text (survivors that
change only a string literal's wording: a log line or an error's prose),
equivalent, other (not run), and the score: killed / (killed + survived).
``--survivors`` also lists the survivors counted in that score.
Exits 1 if a listed equivalent mutant no longer exists or was killed (the
list is then stale), so the documented figures stay true.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
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


def _shape(lines: list[str]) -> list[tuple[int, str]]:
    """The tokens of ``lines``, every string literal's text left out."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO("\n".join(lines)).readline))
    except (tokenize.TokenError, SyntaxError):
        return [(-1, line) for line in lines]
    return [(t.type, "" if t.type == tokenize.STRING else t.string) for t in tokens]


def text_only(name: str) -> bool:
    """Whether the mutant changes only the wording of a string literal (a
    message for a log or a person), leaving every decision alone."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    path = module(name).replace(".", "/") + ".py"
    diff = get_diff_for_mutant(name, path=path).splitlines()[2:]
    removed = [line[1:] for line in diff if line.startswith("-")]
    added = [line[1:] for line in diff if line.startswith("+")]
    return bool(removed) and _shape(removed) == _shape(added)


def main() -> int:
    statuses = results()
    listed = equivalent()
    stale = sorted(n for n in listed if statuses.get(n) in KILLED or n not in statuses)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    texts = []
    for name, status in statuses.items():
        kind = "equivalent" if name in listed else status
        if kind in SURVIVED and text_only(name):
            kind = "text only"
            texts.append(name)
        counts[module(name)][kind] += 1
    print(
        f"{'module':<36}{'mutants':>8}{'killed':>8}{'survived':>9}{'text':>6}"
        f"{'equiv.':>8}{'other':>7}{'score':>8}"
    )
    for name in sorted(counts):
        c = counts[name]
        killed = sum(c[s] for s in KILLED)
        survived = sum(c[s] for s in SURVIVED)
        text = c["text only"]
        other = sum(c.values()) - killed - survived - text - c["equivalent"]
        scored = killed + survived
        score = f"{100 * killed / scored:.1f}%" if scored else "-"
        print(
            f"{name:<36}{sum(c.values()):>8}{killed:>8}{survived:>9}{text:>6}"
            f"{c['equivalent']:>8}{other:>7}{score:>8}"
        )
    if "--survivors" in sys.argv:
        for name, status in sorted(statuses.items()):
            if status in SURVIVED and name not in listed and name not in texts:
                print(f"survived: {name}")
    for name in stale:
        print(f"stale: {name} is listed as equivalent but was killed or is gone")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
