"""Issue 12, items 5-10: each hole an attack on a running node found, closed.

Each test here failed on the code before its fix (see the report of the
change that added it).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from blueprint_net._adapters.banstore import SqliteBanStore, edit, stored
from blueprint_net._ops.cli import OK, USAGE, main
from blueprint_net._policy.bans import BanRegistry

pytestmark = pytest.mark.timeout(60)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out, err = capsys.readouterr()
    assert isinstance(done.value.code, int)
    return done.value.code, out, err


# -- 9. numeric options are finite and in range ------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["ban", "192.0.2.1", "--duration", "nan"], "--duration: wants a finite"),
        (["ban", "192.0.2.1", "--duration", "inf"], "--duration: wants a finite"),
        (["ban", "192.0.2.1", "--duration", "-100"], "--duration: must be more"),
        (["ban", "192.0.2.1", "--duration", "0"], "--duration: must be more"),
        (["ban", "192.0.2.1", "--duration", "1e300"], "at most"),
        (["ban", "192.0.2.1", "--duration", "soon"], "wants a number"),
        (["ping", "tcp:127.0.0.1:9", "--count", "0"], "--count: must be at least"),
        (["ping", "tcp:127.0.0.1:9", "--count", "1.5"], "--count: wants an integer"),
        (["ping", "tcp:127.0.0.1:9", "--timeout", "nan"], "--timeout: wants a fin"),
        (["request", "tcp:127.0.0.1:9", "p", "--timeout", "-1"], "--timeout: must"),
        (["request", "tcp:127.0.0.1:9", "p", "--timeout", "inf"], "--timeout: wants"),
    ],
)
def test_numeric_options_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    database = tmp_path / "bans.sqlite"
    SqliteBanStore(database)._pool.close()  # type: ignore[union-attr]
    if argv[0] == "ban":
        argv = [*argv, "--database", str(database)]
    code, _, err = _cli(capsys, *argv)
    assert code == USAGE
    assert words in err
    assert len(err.strip().splitlines()) == 1, err  # one line, no usage block
    with edit(database) as connection:
        assert stored(connection) == []  # nothing was banned


def test_a_sane_duration_is_still_taken_and_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "bans.sqlite"
    SqliteBanStore(database)._pool.close()  # type: ignore[union-attr]
    db = ["--database", str(database)]
    assert _cli(capsys, "ban", "192.0.2.1", "--duration", "90", *db)[0] == OK
    code, out, _ = _cli(capsys, "bans", *db)
    assert code == OK and "192.0.2.1/32" in out and " s left" in out


@pytest.mark.parametrize("duration", [math.nan, math.inf, -math.inf, -100.0])
def test_the_registry_refuses_a_nonsense_duration(duration: float) -> None:
    registry = BanRegistry(Clock())
    with pytest.raises(ValueError, match="finite and not negative"):
        registry.ban("192.0.2.1", "x", duration=duration)
    assert registry.bans() == []
