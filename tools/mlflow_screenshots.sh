#!/usr/bin/env bash
# Regenerate docs/mlflow-runs.png, docs/mlflow-parent.png and docs/mlflow-child.png:
# a small real comparison logged to a temporary `mlflow server`, then headless
# Chromium screenshots of it (tools/mlflow_screenshots.py). Needs chromium
# (Debian: apt-get install -y chromium) and the project's .venv. A few minutes on
# a CPU; trained models and scores come from the cherrybench cache when present.
#   tools/mlflow_screenshots.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")
PORT=${1:-5077}
WORK=$(mktemp -d /tmp/mlflow-shots.XXXXXX)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

setsid "$BIN/mlflow" server --host 127.0.0.1 --port "$PORT" --workers 1 \
    --backend-store-uri "sqlite:///$WORK/mlflow.db" --artifacts-destination "$WORK/artifacts" \
    >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill -- -$SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 240); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    kill -0 $SERVER 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
    sleep 0.5
done

"$BIN/cherrybench" compare --selectors ifd,longest --pool-size 24 --eval-size 6 --budget 0.25 --max-length 64 \
    --gen-size 2 --max-new-tokens 8 --seeds 2 --no-progress --device cpu --experiment ui-demo \
    --tracking-uri "http://127.0.0.1:$PORT" --leaderboard-dir "$WORK/leaderboards" >"$WORK/compare.log"
"$PY" tools/mlflow_screenshots.py --tracking-uri "http://127.0.0.1:$PORT" --experiment ui-demo --out-dir docs
