"""``OpRecord`` and the sequencer's ``Commit`` are values nobody changes.

They are slotted dataclasses that are not frozen at run time (a frozen one
costs ~5x as much to build, on every committed op), so the rule "nothing
assigns to a field" is kept by the type checker: ``value_record`` makes mypy
see them as frozen. These tests run mypy over a snippet to show it does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tandem.ot.delta import Delta
from tandem.records import OpRecord

MYPY = shutil.which("mypy", path=str(Path(sys.executable).parent))


def test_records_compare_by_value() -> None:
    a = OpRecord("d", 1, Delta().insert("x"), "c@u", 1, "u", 2.0)
    assert a == OpRecord("d", 1, Delta().insert("x"), "c@u", 1, "u", 2.0)
    assert a != a.with_crdt(b"\x00")
    assert a.with_crdt(b"\x00").with_crdt(None) == a
    assert not hasattr(a, "__dict__")


def _mypy(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    assert MYPY is not None, "mypy is installed with the test extras"
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        textwrap.dedent(
            """\
            from tandem.ot.delta import Delta
            from tandem.ot.document import Document
            from tandem.records import OpRecord
            from tandem.sequencer import Commit

            record = OpRecord("d", 1, Delta(), "c@u", 1, "u", 0.0)
            commit = Commit(record, Document(""))
            """
        )
        + textwrap.dedent(body)
    )
    return subprocess.run(
        [
            MYPY,
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_type_checker_accepts_reading_and_with_crdt(tmp_path: Path) -> None:
    result = _mypy(tmp_path, "newer = commit.entry.with_crdt(b'')\nprint(newer.version)\n")
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("line", "name"),
    [("record.version = 2", "version"), ("commit.entry = record", "entry")],
)
def test_the_type_checker_rejects_assigning_a_field(tmp_path: Path, line: str, name: str) -> None:
    result = _mypy(tmp_path, line + "\n")
    assert result.returncode == 1
    assert f'Property "{name}" defined in' in result.stdout
    assert "is read-only" in result.stdout
