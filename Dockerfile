# Tandem server image: the wheel built from this repository (with the demo's
# assets), installed into python:3.11-slim, run as an unprivileged user.
#   docker build -t tandem .
#   docker run -p 8080:8080 -v tandem-data:/data -e TANDEM_JWT_SECRET=… tandem
# Linted with hadolint (tests/unit/test_containers.py). Not built by CI: there is
# no Docker engine on our machines (README, "Containers").

# 1. The demo's browser assets: Quill's build from the locked npm packages.
FROM node:20-bookworm-slim AS client
WORKDIR /src/client
COPY client/package.json client/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

# 2. The wheel: setup.py copies client/demo, client/src and Quill into tandem/static.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md LICENSE ./
COPY src ./src
COPY client/demo ./client/demo
COPY client/src ./client/src
COPY --from=client /src/client/node_modules/quill ./client/node_modules/quill
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# 3. The image: the wheel and its dependencies, nothing else.
FROM python:3.11-slim
COPY --from=wheel /dist /dist
RUN pip install --no-cache-dir /dist/*.whl \
    && rm -rf /dist \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin tandem \
    && mkdir -p /data \
    && chown tandem:tandem /data
ENV TANDEM_HOST=0.0.0.0 \
    TANDEM_PORT=8080 \
    TANDEM_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
USER 10001
WORKDIR /data
EXPOSE 8080
# /readyz: 200 once the node serves (storage answering); 503 while it starts,
# drains or cannot reach its database.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('TANDEM_PORT', '8080'), timeout=2)"]
# SIGTERM drains and stops it (docs/runbook.md, "What SIGTERM does") within
# shutdown_timeout + 3 s, 13 s by default: stop it with `docker stop -t 15`.
STOPSIGNAL SIGTERM
CMD ["tandem", "serve"]
