#!/usr/bin/env bash
# Build the reward-server image with buildah (no Docker daemon), and optionally smoke-test it.
#
#   deploy/build-image.sh [--cpu] [--debian-base] [--smoke] [--tag NAME]
#
#   --cpu          the CPU image (the `cpu` extra, torch's CPU build): small, runs anywhere; the
#                  default is the GPU image (CUDA 13 wheels from PyPI, ~5 GB of downloads)
#   --debian-base  build the Python base from Debian's archive (debootstrap) instead of pulling
#                  docker.io/library/python:3.11-slim-bookworm; taken by itself when the pull fails
#                  (a machine without registry access)
#   --smoke        then run the demo in the image as uid 10001: the health check script must say
#                  SERVING and the demo model must score a conversation
#   --tag NAME     image name (default reward-server:0.1.0, reward-server:0.1.0-cpu with --cpu)
#   --docker-format  Docker's image format, which keeps HEALTHCHECK (OCI, the default, drops it)
#
# Needs: buildah (Debian / Ubuntu: `apt-get install -y buildah`), and debootstrap for a Debian base
# (`apt-get install -y debootstrap`, run as root). Inside an unprivileged container buildah needs
# BUILDAH_ISOLATION=chroot and the vfs storage driver; this script sets both when it runs as root in
# a container. The image is OCI format unless --docker-format: HEALTHCHECK is dropped (Kubernetes
# probes replace it).
set -euo pipefail
cd "$(dirname "$0")/.."

variant=gpu smoke=0 debian_base=0 tag="" format=oci
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) variant=cpu ;;
    --debian-base) debian_base=1 ;;
    --smoke) smoke=1 ;;
    --tag) tag="$2"; shift ;;
    --docker-format) format=docker ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$tag" ]; then
  tag=reward-server:0.1.0
  [ "$variant" = gpu ] || tag="$tag-$variant"
fi

if ! command -v buildah >/dev/null; then
  echo "buildah is needed: apt-get install -y buildah (Debian / Ubuntu), dnf install buildah (Fedora)" >&2
  exit 1
fi
if [ -f /.dockerenv ] || [ -f /run/.containerenv ] || grep -qa container= /proc/1/environ 2>/dev/null; then
  export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}" STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
fi

base=docker.io/library/python:3.11-slim-bookworm
if [ "$debian_base" = 0 ] && ! buildah pull -q "$base" >/dev/null 2>&1; then
  echo "cannot pull $base: building the base from Debian's archive instead" >&2
  debian_base=1
fi
if [ "$debian_base" = 1 ]; then
  # Debian 12's own Python (3.11, as CI), a venv module, and useradd: what the Dockerfile needs.
  base=localhost/reward-base:bookworm
  if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "debootstrap is needed: apt-get install -y debootstrap" >&2; exit 1; }
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
      bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    container="$(buildah from scratch)"
    buildah copy -q "$container" "$rootfs" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$container"
    buildah commit -q --rm "$container" "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    echo "base $base built from Debian's archive" >&2
  fi
fi

args=(--layers --format "$format" -f Dockerfile --build-arg "PYTHON_IMAGE=$base" --build-arg "VARIANT=$variant" -t "$tag")
# A folder of local wheels (this machine's torch +cpu, where PyTorch's index is out of reach): mounted
# into the build's RUN steps only, never into the image; CPU image only (pip prefers a local
# 2.13.0+cpu to PyPI's CUDA 2.13.0: `torch==2.13.0` matches both).
if [ "$variant" = cpu ] && [ -n "${PIP_FIND_LINKS:-}" ] && [ -d "$PIP_FIND_LINKS" ]; then
  args+=(--volume "$PIP_FIND_LINKS:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels)
fi
# The CA bundle pip trusts here (a proxy that intercepts TLS): the same, for the build's pip only.
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  args+=(--volume "$PIP_CERT:/build-ca.pem:ro" --build-arg PIP_CERT=/build-ca.pem)
fi
start=$(date +%s)
buildah bud "${args[@]}" .
echo "built $tag in $(( $(date +%s) - start )) s: $(buildah inspect --type image --format '{{.Docker.Config.User}} {{.OCIv1.Config.Entrypoint}}' "$tag")" >&2

if [ "$smoke" = 1 ]; then
  container="$(buildah from "$tag")"
  trap 'buildah rm "$container" >/dev/null' EXIT
  # One `buildah run`: the server in the background, then the health check and a client in the same
  # container. With chroot isolation (in a container) the run shares this machine's network and /proc:
  # a free port, and the health check pointed at our server's pid, keep it off any other server here.
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  buildah run --user 10001:10001 "$container" -- sh -c '
    reward-server serve --model-repository /models --host 127.0.0.1 --port '"$port"' --http-port -1 2>/tmp/server.log &
    server=$!
    for i in $(seq 120); do python3 /opt/reward-server/healthcheck.py --pid $server >/tmp/health.log 2>&1 && break; sleep 1; done
    cat /tmp/health.log; id
    python3 -c "
from reward_client import RewardClient
chat = [{\"role\": \"user\", \"content\": \"Hello! What is your name?\"}, {\"role\": \"assistant\", \"content\": \"I am a reward model.\"}]
with RewardClient(\"127.0.0.1:'"$port"'\", model=\"demo\", timeout=30) as rm:
    print(\"demo score\", repr(rm.get_score(chat)))
"
    status=$?
    kill $server; wait $server
    echo "server exit $?: $(tail -1 /tmp/server.log)"
    exit $status'
fi
