#!/usr/bin/env bash
# Three Tandem nodes on this machine, sharing PostgreSQL and Redis — the
# docker-compose.yml topology without Docker. Ctrl-C stops all three.
#
#   scripts/cluster.sh                      # nodes on 8081, 8082, 8083
#   DATABASE=postgresql://… REDIS=redis://… scripts/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

DATABASE=${DATABASE:-postgresql://postgres@127.0.0.1:5432/test}
REDIS=${REDIS:-redis://127.0.0.1:6379/0}
DATA=${DATA:-tandem-data/cluster}
mkdir -p "$DATA"
# One shared secret, so a token from any node works on every node.
if [ -z "${TANDEM_JWT_SECRET:-}" ]; then
  [ -f "$DATA/secret" ] || .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(32))" > "$DATA/secret"
  TANDEM_JWT_SECRET=$(cat "$DATA/secret")
  export TANDEM_JWT_SECRET
fi

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
for i in 1 2 3; do
  .venv/bin/tandem serve --port "808$i" --data "$DATA/node$i" --database "$DATABASE" \
    --redis "$REDIS" --node-id "node$i" --log-level warning &
  pids+=($!)
done
sleep 2
echo "token (valid on every node): $(.venv/bin/tandem token --user dev --data "$DATA/node1")"
echo "nodes: ws://127.0.0.1:8081/collab ws://127.0.0.1:8082/collab ws://127.0.0.1:8083/collab"
wait
