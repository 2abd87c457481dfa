#!/usr/bin/env bash
# Makes the base images deploy/Dockerfile names (`FROM rust:1.95-bookworm`, `FROM
# gcr.io/distroless/cc-debian12:nonroot`) from Debian packages, for machines that reach no
# container registry, so the Dockerfile users build is built here unchanged:
#
#   rust:1.95-bookworm                     Debian bookworm (debootstrap) with the build tools and
#                                          this machine's Rust toolchain and CA bundle
#   gcr.io/distroless/cc-debian12:nonroot  exactly the packages of distroless' cc-debian12
#                                          (static + base + cc in GoogleContainerTools/distroless:
#                                          base-files netbase tzdata media-types libc6 libssl3
#                                          libgomp1 libstdc++6 libgcc-s1 gcc-12-base), its CA
#                                          bundle, users and nonroot defaults. No zlib: a binary
#                                          that needs libz.so.1 fails here as it would there.
#
# And, for the compose stack test (tests/image), one image in place of the stack's third-party
# services, which cannot be pulled here:
#
#   vodbridge-stand-in/services:bookworm-2 Debian bookworm with rabbitmq-server (management
#                                          plugin on, guest allowed from other hosts, as in the
#                                          official image), nats-server, redis-server (Valkey's
#                                          stand-in), prometheus, curl, and this machine's tansu
#                                          (the Kafka stand-in)
#
# Starts dockerd (--iptables=false) when no engine answers. Root filesystems are cached in
# $VODBRIDGE_IMAGE_CACHE (default ~/.cache/vodbridge/images); an image already in Docker is kept.
# Usage: bash scripts/image-stand-ins.sh   (as root)
set -euo pipefail

cache="${VODBRIDGE_IMAGE_CACHE:-$HOME/.cache/vodbridge/images}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
build_image="rust:1.95-bookworm"
runtime_image="gcr.io/distroless/cc-debian12:nonroot"
services_image="vodbridge-stand-in/services:bookworm-2"
log() { printf '==> %s\n' "$*" >&2; }

ensure_docker() {
  docker info >/dev/null 2>&1 && return
  command -v dockerd >/dev/null 2>&1 || {
    log "installing docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  }
  log "starting dockerd"
  (setsid dockerd --iptables=false >/tmp/vodbridge-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 0.5
  done
  log "dockerd did not start (see /tmp/vodbridge-dockerd.log)"
  exit 1
}

runtime_stand_in() {
  docker image inspect "$runtime_image" >/dev/null 2>&1 && return
  local root="$cache/distroless-cc-debian12" debs="$cache/distroless-debs"
  if [ ! -f "$root/.complete" ]; then
    log "assembling $runtime_image from Debian packages"
    rm -rf "$root" && mkdir -p "$root" "$debs"
    (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root base-files netbase tzdata media-types libc6 libssl3 \
      libgomp1 libstdc++6 libgcc-s1 gcc-12-base ca-certificates >/dev/null)
    for deb in "$debs"/*.deb; do
      case "$(basename "$deb")" in
        ca-certificates_*) ;; # its bundle is generated below, the package itself is not in the image
        *) dpkg-deb -x "$deb" "$root" ;;
      esac
    done
    mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot" "$root/root"
    chmod 1777 "$root/tmp"
    chown 65532:65532 "$root/home/nonroot"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
    printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' >"$root/etc/nsswitch.conf"
    # Documentation and package metadata are not in distroless either.
    rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian"
    touch "$root/.complete"
  fi
  tar --exclude=./.complete -C "$root" -c . | docker import \
    --change 'USER 65532' --change 'WORKDIR /home/nonroot' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    - "$runtime_image" >/dev/null
}

build_stand_in() {
  docker image inspect "$build_image" >/dev/null 2>&1 && return
  local root="$cache/rust-bookworm"
  command -v debootstrap >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  if [ ! -f "$root/.complete" ]; then
    log "debootstrap bookworm for $build_image (a few minutes, once)"
    rm -rf "$root"
    debootstrap --variant=minbase \
      --include=ca-certificates,gcc,g++,make,libc6-dev,pkg-config,perl,python3,curl,git \
      bookworm "$root" "$mirror" >/dev/null
    rm -rf "$root/var/cache/apt/archives"/*.deb
    touch "$root/.complete"
  fi
  # The machine's toolchain (no registry serves another), under the official image's paths.
  local sysroot toolchain
  sysroot="$(rustc --print sysroot)"
  toolchain="$(basename "$sysroot")"
  log "importing $build_image with the toolchain $toolchain"
  local staging
  staging="$(mktemp -d)"
  mkdir -p "$staging/usr/local/rustup/toolchains" "$staging/usr/local/cargo/bin" "$staging/etc/ssl/certs"
  cp -a "$(readlink -f "$sysroot")" "$staging/usr/local/rustup/toolchains/$toolchain"
  rm -rf "$staging/usr/local/rustup/toolchains/$toolchain/share/doc"
  for tool in cargo rustc rustdoc; do
    ln -s "/usr/local/rustup/toolchains/$toolchain/bin/$tool" "$staging/usr/local/cargo/bin/$tool"
  done
  tar --exclude=./.complete -C "$root" -c . | tar -C "$staging" -x
  # cargo inside the build reaches the registry through this machine's TLS chain (after the
  # root filesystem, whose own bundle it replaces).
  cp /etc/ssl/certs/ca-certificates.crt "$staging/etc/ssl/certs/ca-certificates.crt"
  tar -C "$staging" -c . | docker import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    - "$build_image" >/dev/null
  rm -rf "$staging"
}

services_stand_in() {
  docker image inspect "$services_image" >/dev/null 2>&1 && return
  local root="$cache/services-bookworm-2" tansu
  tansu="$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")"
  [ -x "$tansu" ] || { log "tansu is missing (cargo install tansu --features dynostore,libsql --locked)"; exit 1; }
  if [ ! -f "$root/.complete" ]; then
    log "debootstrap bookworm for $services_image (a few minutes, once)"
    rm -rf "$root"
    debootstrap --variant=minbase \
      --include=ca-certificates,curl,rabbitmq-server,nats-server,redis-server,prometheus \
      bookworm "$root" "$mirror" >/dev/null
    rm -rf "$root/var/cache/apt/archives"/*.deb "$root/usr/share/doc" "$root/usr/share/man"
    # What the official rabbitmq:*-management image sets: the management plugin (it loads the
    # stack's definitions file), and guest allowed from other containers.
    printf '[rabbitmq_management].\n' >"$root/etc/rabbitmq/enabled_plugins"
    printf 'loopback_users.guest = false\nlisteners.tcp.default = 5672\n' >"$root/etc/rabbitmq/rabbitmq.conf"
    touch "$root/.complete"
  fi
  log "importing $services_image with $tansu"
  install -m 0755 "$tansu" "$root/usr/local/bin/tansu"
  tar --exclude=./.complete -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$services_image" >/dev/null
}

ensure_docker
runtime_stand_in
build_stand_in
services_stand_in
log "stand-ins ready: $build_image, $runtime_image, $services_image"
