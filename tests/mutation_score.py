"""The mutation score per module, after ``mutmut run`` (``docs/testing.md``).

``python -m tests.mutation_score`` reads ``mutmut results --all true`` and
the mutants ``docs/testing.md`` accounts for (see :func:`listed`), and prints
one row per module: mutants; killed; killed by hand; survived (no test
failed, or none reached it); text (survivors that change only a string
literal's wording: a log line or an error's prose); equivalent; other (not
run yet); and the score: (killed + by hand) / (killed + by hand + survived).
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


def listed() -> dict[str, str]:
    """Mutants ``docs/testing.md`` accounts for, as ``- `NAME` (KIND): why``
    lines: KIND ``equivalent`` (behaves as the code does) or ``by hand``
    (mutmut cannot switch it on; applied by hand, the test named fails)."""
    pattern = r"^- `([\w.ǁ]+__mutmut_\d+)` \((equivalent|by hand)\)"
    return dict(re.findall(pattern, DOC.read_text(), re.M))


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
    accounted = listed()
    stale = sorted(
        n for n in accounted if statuses.get(n) in KILLED or n not in statuses
    )
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    texts = []
    for name, status in statuses.items():
        kind = accounted.get(name, status)
        if kind in SURVIVED and text_only(name):
            kind = "text only"
            texts.append(name)
        counts[module(name)][kind] += 1
    print(
        f"{'module':<34}{'mutants':>8}{'killed':>7}{'by hand':>8}{'survived':>9}"
        f"{'text':>5}{'equiv.':>7}{'other':>6}{'score':>7}"
    )
    for name in sorted(counts):
        c = counts[name]
        killed = sum(c[s] for s in KILLED)
        survived = sum(c[s] for s in SURVIVED)
        text, by_hand, same = c["text only"], c["by hand"], c["equivalent"]
        other = sum(c.values()) - killed - by_hand - survived - text - same
        scored = killed + by_hand + survived
        score = f"{100 * (killed + by_hand) / scored:.1f}%" if scored else "-"
        print(
            f"{name:<34}{sum(c.values()):>8}{killed:>7}{by_hand:>8}{survived:>9}"
            f"{text:>5}{same:>7}{other:>6}{score:>7}"
        )
    if "--survivors" in sys.argv:
        for name, status in sorted(statuses.items()):
            if status in SURVIVED and name not in accounted and name not in texts:
                print(f"survived: {name}")
    for name in stale:
        print(f"stale: {name} is listed in docs/testing.md but was killed or is gone")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
