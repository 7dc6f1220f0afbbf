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
