#!/usr/bin/env bash
# Builds the datakiln image and runs it for real, on a machine that may have no Docker engine,
# no registry and no TLS to the package index from inside containers:
#   1. installs and starts a Docker engine if none answers (Debian docker.io, own data root);
#   2. makes the base image locally with debootstrap (no registry) unless it exists;
#   3. builds wheels on the host and the image with OFFLINE=1 from them;
#   4. bakes the demo corpus with the container's entrypoint, verifies it from the host;
#   5. runs docker/compose.yaml (scheduler, two workers, a bake), verifies /data/cache;
#   6. starts the compose file's bake service, submits a job over HTTP, waits, verifies it.
# Idempotent: re-running reuses the engine, the base image and the wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=${DATAKILN_DOCKER_WORK:-/tmp/datakiln-docker}
BASE_TAG=datakiln-base:bookworm
mkdir -p "$WORK"
log() { printf '== %s\n' "$*"; }

started_engine=""
if ! docker info >/dev/null 2>&1; then
  export DOCKER_HOST=unix://$WORK/docker.sock
  if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null \
        || ! command -v docker-compose >/dev/null; then
      log "installing docker.io, docker-compose and debootstrap"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io docker-compose debootstrap >/dev/null
    fi
    log "starting dockerd (data root $WORK/data)"
    dockerd --data-root="$WORK/data" --exec-root="$WORK/exec" -H "$DOCKER_HOST" \
      --pidfile "$WORK/dockerd.pid" >"$WORK/dockerd.log" 2>&1 &
    started_engine=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null
  fi
fi
cleanup() {
  DATAKILN_DATA="$WORK/compose-data" docker-compose -f docker/compose.yaml --profile service \
    down -v \
    >/dev/null 2>&1 || true
  if [ -n "$started_engine" ]; then kill "$started_engine" 2>/dev/null || true; fi
}
trap cleanup EXIT

if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  log "making $BASE_TAG with debootstrap"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" >/dev/null
  chroot "$WORK/rootfs" apt-get install -y -qq --no-install-recommends \
    python3 python3-venv >/dev/null
  chroot "$WORK/rootfs" apt-get clean
  tar -C "$WORK/rootfs" -c . | docker import - "$BASE_TAG" >/dev/null
fi

log "building wheels on the host"
"$PY" -m pip wheel -q --wheel-dir docker/wheelhouse '.[service]' 2>&1 | grep -v '^WARNING' || true
# the image builds datakiln from its own source, so its build backend must be there too
"$PY" -m pip download -q -d docker/wheelhouse 'setuptools>=68' wheel 2>&1 | grep -v '^WARNING' || true
log "building datakiln:latest"
DOCKER_BUILDKIT=0 docker build -q -f docker/Dockerfile --build-arg BASE="$BASE_TAG" \
  --build-arg OFFLINE=1 -t datakiln:latest . >/dev/null

log "docker run: bake the demo corpus with the entrypoint"
rm -rf "$WORK/run-data" && mkdir -p "$WORK/run-data" && chmod 777 "$WORK/run-data"
docker run --rm -v "$WORK/run-data:/data" datakiln:latest demo --out /data/demo-cache -q \
  | tail -n 3
"$PY" -m datakiln verify "$WORK/run-data/demo-cache"

log "docker-compose: scheduler + 2 workers + bake"
rm -rf "$WORK/compose-data" && mkdir -p "$WORK/compose-data" && chmod 777 "$WORK/compose-data"
DATAKILN_DATA="$WORK/compose-data" docker-compose -f docker/compose.yaml up --no-color \
  --abort-on-container-exit --exit-code-from bake 2>&1 \
  | grep -E 'bake_1.*(inputs|baked )|exited with code' || true
"$PY" -m datakiln verify "$WORK/compose-data/cache"
"$PY" -m datakiln inspect "$WORK/compose-data/cache" | head -n 3

log "docker-compose: the bake service, a job over HTTP"
DATAKILN_TOKEN="smoke-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
export DATAKILN_TOKEN
DATAKILN_DATA="$WORK/compose-data" docker-compose -f docker/compose.yaml --profile service \
  up -d --no-color service >/dev/null 2>&1
cache=$("$PY" - <<'EOF'
import os
import time

import datakiln

client = datakiln.Client("http://127.0.0.1:8765", token=os.environ["DATAKILN_TOKEN"])
deadline = time.monotonic() + 120
while True:
    try:
        client.jobs()
        break
    except datakiln.DatakilnError:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
spec = {"sources": ["/data/raw"], "image": {"height": 32, "width": 32, "labels": "parent"}}
print(client.ensure(spec, timeout_s=600))
EOF
)
echo "service baked $cache"
"$PY" -m datakiln verify "$WORK/compose-data/caches/${cache#/data/caches/}"
log "smoke test passed"
