#!/usr/bin/env bash
# Makes a Docker engine answer on this machine: installs Debian's docker.io (and debootstrap,
# which `enclave-mcp images build` uses) when missing, and starts dockerd when no daemon answers.
# Idempotent; safe to run before every `make run` / `make test`.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v docker >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing ${need_pkgs[*]} and not root: install them, then run again"; exit 1
  fi
  log "installing ${need_pkgs[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  log "no Docker engine answers and not root: start dockerd, then run again"; exit 1
fi

# A daemon killed without cleanup leaves pid files behind that make the next one refuse to start.
for pidfile in /var/run/docker.pid /run/containerd/containerd.pid; do
  if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
    rm -f "$pidfile"
  fi
done

log "starting dockerd (log: /var/log/dockerd.log)"
nohup dockerd >/var/log/dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "engine up: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
    exit 0
  fi
  sleep 0.5
done
log "dockerd did not answer within 30 s; last log lines:"
tail -n 20 /var/log/dockerd.log >&2
exit 1
