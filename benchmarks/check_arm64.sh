#!/usr/bin/env bash
# make check-arm64: run the edge runner on arm64 and compare it with this machine.
#
# Builds (once, then reuses) a Debian 12 arm64 userland with debootstrap under qemu-user, installs
# edge/requirements.txt there from aarch64 wheels and this project's code, then hands over to
# benchmarks/check_arm64.py, which runs `crack-edge score` (and `verify`) on real photos on both
# architectures and compares them. Needs root (apt-get, mount, chroot). Nothing is timed: speed
# under emulation means nothing.
#
# Environment overrides:
#   ARM64_ROOT    where the arm64 userland lives (default /var/cache/crackkit-arm64/bookworm)
#   ARM64_SUITE   Debian suite (default bookworm: Python 3.11; trixie: Python 3.13). Results go to
#                 benchmarks/results/arm64.json, or arm64_SUITE.json for another suite
#   ARM64_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   PYTHON        the build machine's Python with crackkit installed (default .venv/bin/python)
# Further arguments go to benchmarks/check_arm64.py (e.g. --run runs/NAME, --photos N).
set -euo pipefail

PROJECT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=${ARM64_SUITE:-bookworm}
ROOT=${ARM64_ROOT:-/var/cache/crackkit-arm64/$SUITE}
MIRROR=${ARM64_MIRROR:-http://deb.debian.org/debian}
HOST_PYTHON=${PYTHON:-$PROJECT/.venv/bin/python}
WORK=$PROJECT/benchmarks/work/arm64          # git-ignored; seen at the same path inside the chroot
DATA=$(cd "$PROJECT/../shared/data" 2>/dev/null && pwd || true)
VENV=/opt/crackkit-venv                      # inside the chroot
SOURCE=/opt/crackkit-src                     # inside the chroot
BOOTSTRAPPED=$ROOT/.crackkit-bootstrapped

say() { printf 'check-arm64: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }
stage() { STAGE_NAME=$1; STAGE_START=$(date +%s); say "$1 ..."; }
stage_done() { say "$STAGE_NAME done in $(( $(date +%s) - STAGE_START )) s"; }

[ "$(id -u)" = 0 ] || die "check-arm64 needs root (apt-get, mount, chroot); run it with sudo"
[ -x "$HOST_PYTHON" ] || die "no Python at $HOST_PYTHON: run 'make setup' first or set PYTHON"
[ -n "$DATA" ] || die "no real photos: $PROJECT/../shared/data does not exist"

install_host_packages() {
    local missing=()
    for package in qemu-user-static binfmt-support debootstrap; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
}

register_binfmt() {
    local binfmt=/proc/sys/fs/binfmt_misc
    mountpoint -q "$binfmt" || mount -t binfmt_misc binfmt_misc "$binfmt"
    if [ ! -e "$binfmt/qemu-aarch64" ]; then
        update-binfmts --enable qemu-aarch64
    fi
    grep -qx enabled "$binfmt/qemu-aarch64" \
        || { say "qemu-aarch64 handler is registered but disabled"; exit 1; }
}

bootstrap_userland() {
    if [ -e "$BOOTSTRAPPED" ]; then
        say "reusing the arm64 userland in $ROOT"
        return
    fi
    rm -rf "$ROOT"
    mkdir -p "$(dirname "$ROOT")"
    # debootstrap runs the second stage itself when the kernel can execute arm64 binaries
    # (binfmt above); qemu-user-static's handler is registered with the F flag, so no copy of
    # the emulator is needed inside the chroot.
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,ca-certificates "$SUITE" "$ROOT" "$MIRROR"
    touch "$BOOTSTRAPPED"
}

MOUNTED=()
bind_mount() {  # bind_mount SOURCE [ro]: SOURCE appears at the same path inside the chroot
    local target=$ROOT$1
    mkdir -p "$target"
    mount --bind "$1" "$target"
    MOUNTED+=("$target")
    if [ "${2:-}" = ro ]; then mount -o remount,bind,ro "$target"; fi
}
unmount_all() {
    local i
    for (( i=${#MOUNTED[@]}-1; i>=0; i-- )); do umount "${MOUNTED[$i]}" || umount -l "${MOUNTED[$i]}" || true; done
}

mount_chroot() {
    trap unmount_all EXIT
    mkdir -p "$WORK"
    mkdir -p "$ROOT/proc"
    mount -t proc proc "$ROOT/proc"
    MOUNTED+=("$ROOT/proc")
    bind_mount /dev
    bind_mount "$DATA" ro
    bind_mount "$WORK"
    # pip needs name resolution and nothing else from the host
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
}

in_chroot() { chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/bin:/bin "$@"; }
# pip in the chroot trusts what this machine trusts: a site that re-signs TLS with its own CA has
# added it to the host's bundle, not to the fresh userland's.
HOST_CA=/etc/ssl/certs/ca-certificates.crt
CHROOT_CA=/etc/ssl/certs/crackkit-host-ca.crt
pip_in_chroot() {
    in_chroot PIP_CERT="$CHROOT_CA" PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" "$@"
}

install_edge_runner() {
    # Same versions as the build machine, so that what differs is the CPU and its kernels.
    local constraints=$WORK/constraints.txt
    "$HOST_PYTHON" -m pip freeze --exclude-editable 2>/dev/null \
        | grep -iE '^(numpy|opencv-python-headless|ai-edge-litert|typer|rich|flatbuffers)==' \
        > "$constraints" || true
    [ -x "$ROOT$VENV/bin/python" ] || in_chroot /usr/bin/python3 -m venv "$VENV"
    cp -L "$HOST_CA" "$ROOT$CHROOT_CA"
    cp "$PROJECT/edge/requirements.txt" "$WORK/requirements.txt"
    local installed=$ROOT$VENV/.crackkit-requirements  # what the last install was asked for
    if ! cat "$WORK/requirements.txt" "$constraints" | cmp -s - "$installed"; then
        if ! pip_in_chroot install --quiet --only-binary=:all: -r "$WORK/requirements.txt" -c "$constraints"; then
            say "no aarch64 wheels for this machine's exact versions; installing the newest that fit"
            pip_in_chroot install --quiet --only-binary=:all: -r "$WORK/requirements.txt"
        fi
        cat "$WORK/requirements.txt" "$constraints" > "$installed"
    fi
    # The project's code, copied fresh each run (an editable install would write into the shared
    # checkout); reinstalled only when pyproject.toml changed.
    rm -rf "$ROOT$SOURCE.new"
    mkdir -p "$ROOT$SOURCE.new"
    tar -C "$PROJECT" --exclude=__pycache__ -cf - pyproject.toml README.md edge training convert \
        | tar -C "$ROOT$SOURCE.new" -xf -
    local installed_pyproject=$ROOT$SOURCE/pyproject.toml
    local need_install=1
    if [ -e "$installed_pyproject" ] && cmp -s "$installed_pyproject" "$ROOT$SOURCE.new/pyproject.toml" \
        && [ -x "$ROOT$VENV/bin/crack-edge" ]; then
        need_install=0
    fi
    rm -rf "$ROOT$SOURCE"
    mv "$ROOT$SOURCE.new" "$ROOT$SOURCE"
    if [ $need_install = 1 ]; then
        pip_in_chroot install --quiet --no-deps -e "$SOURCE"
    fi
}

cd "$PROJECT"
stage "host packages (qemu-user-static, binfmt-support, debootstrap)"; install_host_packages; stage_done
stage "aarch64 binfmt handler"; register_binfmt; stage_done
stage "Debian $SUITE arm64 userland in $ROOT"; bootstrap_userland; stage_done
in_chroot /usr/bin/python3 -c 'import platform; assert platform.machine() == "aarch64", platform.machine()' \
    || { say "the userland in $ROOT does not run as aarch64"; exit 1; }
mount_chroot
stage "edge runner in the arm64 userland ($VENV)"; install_edge_runner; stage_done
stage "compare arm64 with $(uname -m)"
set +e
RESULTS=$PROJECT/benchmarks/results/arm64$([ "$SUITE" = bookworm ] || echo "_$SUITE").json
"$HOST_PYTHON" -m benchmarks.check_arm64 --root "$ROOT" --venv "$VENV" --work "$WORK" --data "$DATA" \
    --results "$RESULTS" "$@"
status=$?
set -e
stage_done
exit $status
