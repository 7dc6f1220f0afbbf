"""The examples that docs/embedding.md walks through run as they are."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import tree_env

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_embedding_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "embedding.py")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=tree_env(),
    )
    out = result.stdout
    [alice] = re.findall(r"^alice is (12D3KooW\w+)$", out, re.MULTILINE)
    assert "alice verified 2 peers" in out
    assert "bob echoed b'hi'" in out
    assert f"carol says alice is {alice}" in out  # the verified id, not a claim
    assert "bob refused: UNKNOWN_PROTOCOL (300)" in out
    assert "broadcast answered by 2 of 2" in out
    assert result.stderr == ""


def test_asyncio_example_runs() -> None:
    """An asyncio program: the asyncio reactor on its loop, Deferreds
    awaited as futures, a handler calling asyncio code, a clean stop."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "asyncio_node.py")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=tree_env(),
    )
    assert result.stdout.splitlines() == [
        "reactor AsyncioSelectorReactor",
        "alice verified 1 peer",
        "bob answered b'HI'",
        "gathered [b'ONE', b'TWO', b'THREE']",
        "stopped",
    ]
    assert result.stderr == ""


def test_readme_embedding_snippet_runs(tmp_path: Path) -> None:
    """README.md's two-node snippet, as a newcomer pastes it."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    [snippet] = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    (tmp_path / "snippet.py").write_text(snippet)
    result = subprocess.run(
        [sys.executable, "snippet.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == "b'hi'\n[True]\n" and result.stderr == ""


def test_handler_test_example_passes() -> None:
    """The example test file of "Testing your handlers", run as a user would."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / "test_handlers_example.py"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=EXAMPLES.parent,
        env=tree_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout


def _dkg(*options: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "dkg.py"), *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=tree_env(),
    )
    assert result.stderr == ""
    return result.stdout


def _keys_and_left_out(out: str) -> tuple[set[str], set[str], set[str]]:
    rows = re.findall(
        r"^party (\d): group key (\w+)\.\.\., left out (\[.*\])$", out, re.M
    )
    assert sorted(index for index, _, _ in rows) == ["0", "1", "2", "3", "4"]
    return (
        {key for _, key, _ in rows},
        {left for _, _, left in rows},
        set(re.findall(r"^party \d accused party (\d)$", out, re.M)),
    )


def test_the_dkg_example_gives_every_party_one_group_key() -> None:
    out = _dkg()
    keys, left_out, accused = _keys_and_left_out(out)
    assert len(keys) == 1 and left_out == {"[]"} and accused == set()
    assert "any 3 public shares give the group key back: True" in out


def test_the_dkg_example_survives_cut_links_and_names_a_cheater() -> None:
    """Every link dropped while the shares are in flight, and one party
    sending a bad share: the honest parties still agree, and all of them
    leave out the party the victim names."""
    out = _dkg("--cut", "--cheat")
    assert re.search(r"^cut ([1-9]\d*) links in the middle of round 1$", out, re.M)
    keys, left_out, accused = _keys_and_left_out(out)
    [cheater] = accused
    assert len(keys) == 1 and left_out == {f"[{cheater}]"}
    assert "any 3 public shares give the group key back: True" in out


def test_the_coin_example_runs_and_the_docs_show_its_code() -> None:
    """docs/embedding.md's session example is examples/coin.py's, and runs:
    every party gets the same coin."""
    source = (EXAMPLES / "coin.py").read_text()
    docs = (EXAMPLES.parent / "docs" / "embedding.md").read_text()
    [flip] = re.findall(
        r"^(async def flip\(.*?\n)\n\n", source, re.DOTALL | re.MULTILINE
    )
    assert f"```python\n{flip}```" in docs
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "coin.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=tree_env(),
    )
    [coins] = re.findall(r"^the coins: \[(.*)\]$", result.stdout, re.MULTILINE)
    assert len(set(coins.split(", "))) == 1 and coins[0] in "01"
    assert result.stderr == ""


def test_a_false_accuser_cannot_push_honest_dealers_out() -> None:
    """One party accuses every other dealer: each reveals the disputed share,
    it checks, and nobody is left out."""
    out = _dkg("--accuse")
    keys, left_out, accused = _keys_and_left_out(out)
    assert len(accused) == 4  # every dealer but the accuser was accused
    assert len(keys) == 1 and left_out == {"[]"}
    assert "any 3 public shares give the group key back: True" in out
