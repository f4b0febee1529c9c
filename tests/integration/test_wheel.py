"""The built wheel, installed into an empty venv, serves a demo a person can type in.

``python -m build`` makes the sdist and, from it, the wheel (so MANIFEST.in and
setup.py's asset copy are both exercised); the wheel goes into a fresh venv
with nothing else; ``tandem serve`` runs from that venv in an unrelated folder;
headless Chromium loads the demo page and types, and the server's REST API
must then hold the typed text. No source checkout is on the server's path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import free_port

ROOT = Path(__file__).resolve().parents[2]
TYPE_IN_DEMO = ROOT / "client" / "test" / "support" / "type-in-demo.mjs"

pytestmark = pytest.mark.integration


def _run(*args: str | Path, **kwargs: object) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs
    )  # type: ignore[call-overload]
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return str(result.stdout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the wheel built from this repository (and its dependencies)."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    _run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
    wheels = list(dist.glob("tandem-*.whl"))
    assert len(wheels) == 1 and list(dist.glob("tandem-*.tar.gz")), list(dist.iterdir())
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    _run(env_dir / "bin" / "python", "-m", "pip", "install", "--quiet", wheels[0])
    return env_dir


def _clean_env() -> dict[str, str]:
    """This process's environment without Tandem settings or a path into the checkout."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TANDEM_") and key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }


@pytest.fixture
def served(installed: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [installed / "bin" / "tandem", "serve", "--port", str(port), "--data", data, "--dev"],
            cwd=tmp_path,
            env=_clean_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no /healthz in 30 s:\n" + log.read_text()
            try:
                if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url, data
    finally:
        process.terminate()
        process.wait(15)


def test_the_wheel_carries_the_demo_and_serves_it(
    installed: Path, served: tuple[str, Path]
) -> None:
    url, _ = served
    layout = _run(
        installed / "bin" / "python",
        "-c",
        "from tandem.assets import find_assets; a = find_assets(); print(a.layout, a.missing())",
        cwd=installed,
        env=_clean_env(),
    )
    assert layout.split() == ["installed", "[]"], layout
    for path in ("/", "/demo/app.js", "/client/index.js", "/vendor/quill/dist/quill.js"):
        response = httpx.get(url + path)
        assert response.status_code == 200, path
    assert "Tandem" in httpx.get(url + "/").text


@pytest.mark.skipif(bool(os.environ.get("TANDEM_SKIP_BROWSER")), reason="TANDEM_SKIP_BROWSER")
def test_chromium_types_in_the_installed_demo(installed: Path, served: tuple[str, Path]) -> None:
    url, data = served
    node = shutil.which("node")
    assert node, "Node.js is needed for the browser tests (see the README's prerequisites)"
    typed = "typed into the demo served from the wheel"
    page = json.loads(_run(node, TYPE_IN_DEMO, url, "wheel-doc", typed).strip().splitlines()[-1])
    assert typed in page["text"]
    token = _run(
        installed / "bin" / "tandem", "token", "--user", "check", "--data", data, env=_clean_env()
    ).strip()
    stored = httpx.get(
        f"{url}/api/docs/wheel-doc", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert typed in json.dumps(stored), stored
