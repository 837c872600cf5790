#!/usr/bin/env bash
# build-image.sh: build the pyweb/debian-systemd:<suite> test-host image (bookworm|trixie),
# from debian:<suite> when a registry is reachable, else from a debootstrap rootfs.
#
# Usage: scripts/build-image.sh <bookworm|trixie>
# Env:   PYWEB_IMAGE_PATH=auto|registry|debootstrap  (default auto: registry, then debootstrap)
#        PYWEB_DEBIAN_MIRROR   (default http://deb.debian.org/debian)
#        PYWEB_PULL_TIMEOUT    seconds allowed for pulling debian:<suite> (default 20)
#        PYWEB_FORCE_BUILD=1   rebuild even when the image is up to date
set -euo pipefail

me=build-image.sh
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 <bookworm|trixie>"
suite=$1
case $suite in
    bookworm | trixie) ;;
    *) die "unsupported suite '$suite' (expected bookworm or trixie)" ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
recipe_dir=$(cd "$here/../images/debian-systemd" && pwd)
script_path="$here/$(basename "${BASH_SOURCE[0]}")"
image="pyweb/debian-systemd:$suite"
label=org.pyweb.recipe
mode=${PYWEB_IMAGE_PATH:-auto}
mirror=${PYWEB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
pull_timeout=${PYWEB_PULL_TIMEOUT:-20}

command -v docker >/dev/null 2>&1 || die "docker CLI not found; run scripts/ensure-docker.sh first"

# Recipe hash: suite + this script + every recipe file except docs (*.md).
recipe_hash() {
    {
        printf 'suite=%s\n' "$suite"
        sha256sum "$script_path" | cut -d' ' -f1
        (cd "$recipe_dir" && find . -type f ! -name '*.md' -print0 | LC_ALL=C sort -z |
            xargs -0 sha256sum)
    } | sha256sum | cut -c1-16
}
hash=$(recipe_hash)

current=$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$image" 2>/dev/null || true)
if [[ $current == "$hash" && ${PYWEB_FORCE_BUILD:-0} != 1 ]]; then
    echo "$me: image $image is up to date"
    exit 0
fi

# One build per suite at a time (parallel molecule scenarios may call us together).
exec 9>"/tmp/pyweb-build-image-$suite.lock"
flock 9
current=$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$image" 2>/dev/null || true)
if [[ $current == "$hash" && ${PYWEB_FORCE_BUILD:-0} != 1 ]]; then
    echo "$me: image $image is up to date"
    exit 0
fi

start=$SECONDS
packages=$(grep -v -e '^#' -e '^[[:space:]]*$' "$recipe_dir/packages.txt" | tr -s '[:space:]' ' ')

# Run a command with its output kept back, shown only when it fails.
quiet() {
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    if [[ $rc -ne 0 ]]; then
        printf '%s\n' "$out" >&2
        log "command failed ($rc): $*"
        return "$rc"
    fi
}

base_available() {
    if docker image inspect "debian:$suite" >/dev/null 2>&1; then
        return 0
    fi
    log "pulling debian:$suite (timeout ${pull_timeout}s)"
    timeout "$pull_timeout" docker pull -q "debian:$suite" >/dev/null 2>&1
}

build_registry() {
    log "building $image from debian:$suite (recipe $hash)"
    quiet docker build -q --build-arg "SUITE=$suite" --build-arg "RECIPE=$hash" \
        -t "$image" "$recipe_dir"
}

rootfs=
cleanup() {
    [[ -n $rootfs && -d $rootfs ]] || return 0
    # Never rm -rf through a still-mounted proc/sys/dev of the chroot.
    local m
    awk -v r="$rootfs" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

build_debootstrap() {
    [[ $(id -u) -eq 0 ]] || die "the debootstrap fallback needs root (or a reachable registry for debian:$suite)"
    if ! command -v debootstrap >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            log "installing debootstrap"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 || {
                DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
            }
        else
            die "debootstrap is missing; install it (apt-get install debootstrap)"
        fi
    fi
    rootfs=$(mktemp -d /var/tmp/pyweb-rootfs-"$suite".XXXXXX)
    log "debootstrap $suite from $mirror into $rootfs (recipe $hash)"
    local include
    include=$(echo "$packages" | tr ' ' ',' | sed 's/,$//')
    if ! debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" \
        >"$rootfs.log" 2>&1; then
        tail -n 30 "$rootfs.log" >&2
        die "debootstrap failed (full log: $rootfs.log)"
    fi
    rm -f "$rootfs.log"
    cp "$recipe_dir/setup.sh" "$rootfs/tmp/pyweb-setup.sh"
    chroot "$rootfs" /bin/sh /tmp/pyweb-setup.sh
    rm -f "$rootfs/tmp/pyweb-setup.sh"
    # docker import cannot set STOPSIGNAL, so import a bare rootfs under a temporary
    # pyweb/* tag and add the metadata with a Dockerfile build (no network needed).
    local tmp_tag="pyweb/debian-systemd-rootfs:$suite"
    log "importing rootfs as $tmp_tag"
    tar --numeric-owner --xattrs -C "$rootfs" -c . | docker import - "$tmp_tag" >/dev/null
    quiet docker build -q -t "$image" - <<DOCKERFILE
FROM $tmp_tag
ENV container=docker PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL $label=$hash
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
DOCKERFILE
    docker rmi "$tmp_tag" >/dev/null
}

case $mode in
    registry)
        base_available || die "debian:$suite is not present and cannot be pulled"
        build_registry
        ;;
    debootstrap) build_debootstrap ;;
    auto)
        if base_available; then
            build_registry
        else
            log "debian:$suite not available from a registry; using debootstrap"
            build_debootstrap
        fi
        ;;
    *) die "PYWEB_IMAGE_PATH must be auto, registry or debootstrap (got '$mode')" ;;
esac

# Drop the previous (now untagged) build of this image, if nothing else uses it.
docker image prune -f --filter "label=$label" >/dev/null 2>&1 || true
log "built $image in $((SECONDS - start))s"
