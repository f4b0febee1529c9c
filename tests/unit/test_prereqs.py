"""scripts/prereqs.sh: a missing prerequisite stops with a message saying how to install it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", "-c", f". scripts/prereqs.sh && {script}"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_old_or_missing_python_is_refused_with_instructions() -> None:
    result = _bash("find_python", PYTHON="no-such-python3")
    assert result.returncode == 1
    assert "Python >= 3.11" in result.stderr and "brew install" in result.stderr
    assert _bash("find_python").returncode == 0  # this machine's python3 is new enough


def test_chromium_comes_from_the_environment_first() -> None:
    assert _bash("find_chromium", CHROMIUM="/no/such/chromium").stdout == ""
    assert _bash("find_chromium", CHROMIUM="/bin/sh").stdout.strip() == "/bin/sh"
    assert _bash("find_chromium", CHROMIUM="", CHROMIUM_PATH="", PATH="/nonexistent").stdout == ""


def test_make_test_without_chromium_fails_and_says_how_to_install_it() -> None:
    result = subprocess.run(
        ["scripts/test.sh", "--collect-only", "-q"],
        cwd=ROOT,
        env={**os.environ, "CHROMIUM": "/no/such/chromium", "TANDEM_SKIP_BROWSER": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    for needed in ("no Chromium found", "apt-get install chromium", "brew install", "snap"):
        assert needed in result.stderr, result.stderr
    assert "collected" not in result.stdout  # stopped before running anything
