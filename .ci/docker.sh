#!/usr/bin/env bash
# A Docker engine for CI, with a local stand-in for the image's base (Docker Hub is not reachable here).
#   bash .ci/docker.sh start   # prints BASE=<image>: docker build --build-arg BASE=<image> uses it
# As root on Debian: Debian's docker.io engine (dockerd started if none answers), Compose v2 from
# Debian trixie's docker-compose package (bookworm's 1.29 rejects the compose file), and
# <image>:<TF>[-gpu]: debootstrap's minbase bookworm + python3, pip and tensorflow-cpu==<TF> (the
# version requirements-cpu.txt pins), pip trusting the host's CA bundle. The image, the Compose binary
# and the debootstrap tarball stay cached between runs on the machine. Exit 3: no engine can start.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${CACHE:-/var/cache/metadrop-ci}
base=metadrop-ci/tensorflow
tf=$(sed -n 's/^tensorflow-cpu==//p' requirements-cpu.txt)
plugin=/usr/local/lib/docker/cli-plugins/docker-compose
die() { echo "no Docker engine: $*" >&2; exit 3; }

[ "${1:-}" = start ] || { echo "usage: $0 start" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "dockerd needs root"
command -v apt-get > /dev/null || die "no apt-get to install Debian's docker.io"
mkdir -p "$cache"
export DEBIAN_FRONTEND=noninteractive DOCKER_BUILDKIT=0  # no buildx here: the classic builder

apt_install() {
  { apt-get install -y -q --no-install-recommends "$@" || { apt-get update -q && apt-get install -y -q \
    --no-install-recommends "$@"; }; } > "$cache/apt.log" 2>&1 || die "apt-get install $* failed ($cache/apt.log)"
}
command -v dockerd > /dev/null && command -v debootstrap > /dev/null || apt_install docker.io debootstrap

if ! docker info > /dev/null 2>&1; then
  nohup dockerd > "$cache/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info > /dev/null 2>&1 && break; sleep 1; done
  docker info > /dev/null 2>&1 || die "dockerd did not start: $(tail -n 3 "$cache/dockerd.log")"
fi

if ! docker compose version > /dev/null 2>&1; then
  apt=$cache/apt-trixie  # a private apt state, so that the system's sources and lists stay as they are
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  echo "deb http://deb.debian.org/debian trixie main" > "$apt/sources.list"
  opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache")
  apt-get "${opts[@]}" update -q > "$cache/apt.log" 2>&1 || die "no trixie package lists ($cache/apt.log)"
  (cd "$apt" && apt-get "${opts[@]}" download docker-compose) >> "$cache/apt.log" 2>&1 \
    || die "cannot download trixie's docker-compose ($cache/apt.log)"
  rm -rf "$apt/x" && dpkg-deb -x "$(ls "$apt"/docker-compose_*.deb | tail -n 1)" "$apt/x"
  install -D -m 755 "$apt/x/usr/libexec/docker/cli-plugins/docker-compose" "$plugin"
  docker compose version > /dev/null 2>&1 || die "Compose v2 does not run here"
fi

if ! docker image inspect "$base:$tf" "$base:$tf-gpu" > /dev/null 2>&1; then
  if ! docker image inspect metadrop-ci/debian:bookworm > /dev/null 2>&1; then
    if [ ! -s "$cache/bookworm-minbase.tar" ]; then
      root=$(mktemp -d)
      debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian > "$cache/debootstrap.log" 2>&1 \
        || die "debootstrap failed ($cache/debootstrap.log)"
      tar -C "$root" -cf "$cache/bookworm-minbase.tar.part" . && mv "$cache/bookworm-minbase.tar.part" "$cache/bookworm-minbase.tar"
      rm -rf "$root"
    fi
    docker import "$cache/bookworm-minbase.tar" metadrop-ci/debian:bookworm > /dev/null
  fi
  ctx=$(mktemp -d)
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca.crt"
  cat > "$ctx/Dockerfile" << EOF
FROM metadrop-ci/debian:bookworm
COPY host-ca.crt /etc/ssl/certs/host-ca.crt
ENV PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore
RUN apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-pip python-is-python3 \
    && rm -rf /var/lib/apt/lists/* && pip install --no-cache-dir -q tensorflow-cpu==$tf
EOF
  docker build --network host -q -t "$base:$tf" -t "$base:$tf-gpu" "$ctx" > "$cache/base-build.log" 2>&1 \
    || die "the stand-in base did not build ($cache/base-build.log)"
  rm -rf "$ctx"
fi
echo "BASE=$base"
