#!/usr/bin/env bash
# Makes gVisor usable as the sandboxes' runtime (`serve --runtime runsc`): installs Debian's
# runsc package when missing, registers it with the running dockerd as the runtime "runsc",
# and proves a hardened container runs under it. Idempotent.
#
# dockerd is never restarted or stopped (other work may be using the engine): the runtime is
# added to dockerd's config file and the daemon is sent SIGHUP, which reloads its runtimes.
# When runsc cannot run containers on this host, the script says why, with runsc's own error
# and the tail of its debug log, and exits non-zero.
#
# Environment: ENCLAVE_GVISOR_IMAGE (image for the check, default enclave/python:bookworm),
# RUNSC_ARGS (runtime arguments, space-separated; default chosen below).
set -euo pipefail

log() { printf 'ensure-gvisor: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
image=${ENCLAVE_GVISOR_IMAGE:-enclave/python:bookworm}

"$here/ensure-docker.sh"

# 1. The package: Debian's runsc (gVisor, a 2022 release in bookworm); jq edits daemon.json.
need_pkgs=()
command -v runsc >/dev/null 2>&1 || need_pkgs+=(runsc)
command -v jq >/dev/null 2>&1 || need_pkgs+=(jq)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]} and not root: install them (apt-get install ${need_pkgs[*]}), then run again"
  log "installing ${need_pkgs[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
runsc_path=$(command -v runsc)
log "$($runsc_path --version | head -n1) at $runsc_path"

# 2. Runtime arguments. runsc's default network mode copies the container's network
# namespace into gVisor's own stack, after checking that it is not the host's namespace by
# looking for /proc/sys/net/core/rmem_default, which older kernels show only in the initial
# namespace. Newer kernels (6.x) show it in every namespace, so that runsc refuses every
# container ("cannot run with network enabled in root network namespace"; fixed upstream
# after this release). There, runsc runs with --network=none: loopback only inside gVisor,
# which is what a sandbox without network access gets anyway; a sandbox that the operator
# lets use the network gets none under runsc on such a kernel.
if [ -n "${RUNSC_ARGS+set}" ]; then
  read -r -a runtime_args <<<"$RUNSC_ARGS"
elif unshare -n test -e /proc/sys/net/core/rmem_default 2>/dev/null; then
  log "this kernel ($(uname -r)) shows net.core.rmem_default in every network namespace, which this runsc mistakes for the host's: registering it with --network=none"
  runtime_args=(--network=none)
else
  runtime_args=()
fi
args_json='[]'
if [ ${#runtime_args[@]} -gt 0 ]; then
  args_json=$(printf '%s\n' "${runtime_args[@]}" | jq -R . | jq -cs .)
fi
want=$(jq -cn --arg path "$runsc_path" --argjson a "$args_json" '{path: $path} + (if ($a | length) > 0 then {runtimeArgs: $a} else {} end)')

# 3. Register with dockerd, through its config file, and reload it with SIGHUP.
dockerd_pid=""
if [ -f /var/run/docker.pid ] && [ "$(cat /proc/"$(cat /var/run/docker.pid)"/comm 2>/dev/null)" = dockerd ]; then
  dockerd_pid=$(cat /var/run/docker.pid)
else
  pids=$(pgrep -x dockerd || true)
  [ "$(printf '%s\n' "$pids" | grep -c .)" = 1 ] || die "cannot tell which dockerd serves this machine (found: ${pids:-none}); register runsc by hand: https://gvisor.dev/docs/user_guide/install/"
  dockerd_pid=$pids
fi
cmdline=$(tr '\0' ' ' </proc/"$dockerd_pid"/cmdline)
config=/etc/docker/daemon.json
if [[ $cmdline =~ --config-file[=\ ]([^ ]+) ]]; then
  config=${BASH_REMATCH[1]}
fi
case "$cmdline" in
  *--add-runtime*) die "dockerd (pid $dockerd_pid) was started with --add-runtime; a \"runtimes\" key in $config would then stop it from reloading (and starting): add --add-runtime runsc=$runsc_path to its command line instead" ;;
esac

have=$(docker info --format '{{json .Runtimes}}' | jq -c '.runsc // empty')
if [ "$(jq -c '{path, runtimeArgs}' <<<"${have:-null}" 2>/dev/null)" = "$(jq -c '{path, runtimeArgs}' <<<"$want")" ]; then
  log "runsc is registered with dockerd already: $have"
else
  [ "$(id -u)" = 0 ] || die "runsc is not registered with dockerd and not root: add \"runtimes\": {\"runsc\": $want} to $config, then send dockerd SIGHUP"
  current='{}'
  if [ -s "$config" ]; then
    current=$(jq -e . "$config") || die "$config is not valid JSON; fix it first (dockerd would not start with it either)"
  fi
  mkdir -p "$(dirname "$config")"
  [ -e "$config" ] && [ ! -e "$config.before-gvisor" ] && cp -p "$config" "$config.before-gvisor"
  jq --argjson rt "$want" '.runtimes.runsc = $rt' <<<"$current" >"$config.tmp"
  mv "$config.tmp" "$config"
  log "added runtime runsc to $config: $want; reloading dockerd (pid $dockerd_pid) with SIGHUP, no restart"
  kill -HUP "$dockerd_pid"
  registered=""
  for _ in $(seq 1 40); do
    have=$(docker info --format '{{json .Runtimes}}' | jq -c '.runsc // empty')
    if [ "$(jq -c '{path, runtimeArgs}' <<<"${have:-null}" 2>/dev/null)" = "$(jq -c '{path, runtimeArgs}' <<<"$want")" ]; then
      registered=yes
      break
    fi
    sleep 0.25
  done
  if [ -z "$registered" ]; then
    [ -f /var/log/dockerd.log ] && tail -n 5 /var/log/dockerd.log >&2
    die "dockerd did not take the runsc runtime after SIGHUP (its log says why; a reload error leaves the old config in force)"
  fi
fi

# 4. Prove it: a container with the sandboxes' hardening runs under gVisor's kernel.
docker image inspect "$image" >/dev/null 2>&1 || die "image $image is not on the engine: build it first (make setup)"
host_release=$(uname -r)
if ! out=$(docker run --rm --runtime=runsc --network=none --read-only --cap-drop ALL \
  --security-opt no-new-privileges --pids-limit 256 --memory 256m --user 1000:1000 \
  --ulimit core=0 --ulimit nofile=1024:4096 "$image" sh -c 'uname -r; dmesg 2>/dev/null | head -n1' 2>&1); then
  log "docker run --runtime=runsc failed:"
  printf '%s\n' "$out" >&2
  debug_dir=$(mktemp -d /tmp/runsc-debug.XXXXXX)
  log "running runsc directly with debug logs in $debug_dir:"
  "$runsc_path" --debug --debug-log="$debug_dir/" "${runtime_args[@]}" do true >&2 || true
  for f in "$debug_dir"/*; do
    [ -f "$f" ] || continue
    log "--- $(basename "$f") (last lines)"
    grep -E 'level=(error|warning)|^[EW][0-9]{4}|rror' "$f" | tail -n 10 >&2 || tail -n 10 "$f" >&2
  done
  die "gVisor (runsc) cannot run containers on this host (kernel $host_release): see the error above"
fi
gvisor_release=$(printf '%s\n' "$out" | head -n1)
if [ "$gvisor_release" = "$host_release" ]; then
  die "a container run with --runtime=runsc reports the host's kernel $host_release: it did not run under gVisor ($out)"
fi
log "ok: a hardened container runs under gVisor (kernel inside: $gvisor_release; host: $host_release; $(printf '%s\n' "$out" | sed -n 2p))"
