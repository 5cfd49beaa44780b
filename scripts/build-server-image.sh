#!/usr/bin/env bash
# Builds the server's own container image, enclave/enclave-mcp, offline: no registry, no base
# image, no Dockerfile. The root file system is a tarball holding only the static
# enclave-mcp binary, /etc/passwd and /etc/group (root, and a non-root user "enclave",
# 10001:10001, whose home is /tmp), /etc/nsswitch.conf and a writable /tmp; `docker import`
# turns it into an image and sets its config. It takes seconds.
#
# The server in it drives a Docker engine through the engine's socket (mount the host's
# /var/run/docker.sock, or set DOCKER_HOST) and injects itself into every sandbox as the
# agent, through a Docker volume, so it works with a mounted or a remote engine alike. It
# never pulls: the sandbox images (enclave/python:bookworm, enclave/notebook:bookworm) must
# be on the engine it drives (`enclave-mcp images build --missing` on that host).
#
# Access to the engine's socket is root on that host: whoever controls the server can start
# any container there. The image runs as root by default; to run it as "enclave" instead,
# add the socket's group: docker run --user 10001:10001 --group-add "$(stat -c %g /var/run/docker.sock)".
#
# Usage: scripts/build-server-image.sh [BINARY]   (default bin/enclave-mcp; make server-image)
# An enclave-agent beside BINARY, not older than it, goes into the image too.
# Environment: ENCLAVE_SERVER_IMAGE (repository, default enclave/enclave-mcp),
# ENCLAVE_SERVER_TAGS (space-separated tags, default "<the binary's version> latest").
# Prints the image references it tagged, one a line, on stdout.
set -euo pipefail

log() { printf 'build-server-image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

bin=${1:-bin/enclave-mcp}
repo=${ENCLAVE_SERVER_IMAGE:-enclave/enclave-mcp}
[ -x "$bin" ] || die "no executable $bin: build it first (make build; it must be static, CGO_ENABLED=0)"
command -v docker >/dev/null 2>&1 || die "no docker command: run scripts/ensure-docker.sh"

version=$("$bin" version 2>/dev/null | awk '{print $2}') || true
[ -n "$version" ] || die "$bin version printed no version: is it an enclave-mcp binary for this machine?"
# A tag is [A-Za-z0-9_.-], at most 128 characters, not starting with . or -.
version_tag=$(printf '%s' "$version" | tr -c 'A-Za-z0-9_.-' '_' | sed 's/^[.-]/_/' | cut -c1-128)
read -r -a tags <<<"${ENCLAVE_SERVER_TAGS:-$version_tag latest}"
[ ${#tags[@]} -gt 0 ] || die "ENCLAVE_SERVER_TAGS is empty: want at least one tag"

start=$(date +%s%N)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -d -m 0755 "$root/usr/local/bin" "$root/etc" "$root/var/run"
install -d -m 0700 "$root/root"
install -d -m 1777 "$root/tmp"
install -m 0755 "$bin" "$root/usr/local/bin/enclave-mcp"
# The agent built alone (make build writes it beside the server), which the server injects
# into sandboxes instead of itself: an idle sandbox then costs a quarter of the memory.
agent="$(dirname "$bin")/enclave-agent"
if [ -x "$agent" ] && ! [ "$agent" -ot "$bin" ]; then
  install -m 0755 "$agent" "$root/usr/local/bin/enclave-agent"
else
  log "no up-to-date $agent beside $bin: the server will inject itself as the agent"
fi
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
enclave:x:10001:10001:enclave-mcp:/tmp:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
enclave:x:10001:
nogroup:x:65534:
EOF
# Go's resolver reads it: host files first, then DNS (for a DOCKER_HOST given by name).
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"

# Everything is root's (the enclave user's home is /tmp); the same input makes the same tar.
first="$repo:${tags[0]}"
tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$root" -cf - . |
  docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/enclave-mcp"]' \
    --change 'CMD ["serve", "--http", "0.0.0.0:8000"]' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'EXPOSE 8000' \
    --change 'WORKDIR /' \
    --change 'USER 0:0' \
    --change "LABEL org.opencontainers.image.title=enclave-mcp org.opencontainers.image.version=\"$version\"" \
    --message "enclave-mcp $version: the static binary in an empty root" \
    - "$first" >/dev/null ||
  die "docker import failed: is the engine up (scripts/ensure-docker.sh)?"
for t in "${tags[@]:1}"; do
  docker tag "$first" "$repo:$t"
done

# The binary must run in a root without libc: prove it (a dynamic binary fails here).
if ! out=$(docker run --rm --network none "$first" version 2>&1); then
  for t in "${tags[@]}"; do docker rmi "$repo:$t" >/dev/null 2>&1 || true; done
  die "the image does not run its binary (a binary built without CGO_ENABLED=0 needs a libc this image lacks): $out"
fi
ms=$((($(date +%s%N) - start) / 1000000))
log "built $first ($out) in ${ms} ms"
for t in "${tags[@]}"; do
  printf '%s:%s\n' "$repo" "$t"
done
