# shellcheck shell=bash
# Shared helpers for berth's scripts/*.sh. Source it; do not run it.

# Step and status messages go to stderr so that stdout stays usable.
step() { printf '==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        die "this script must run as root (it installs Debian packages and writes under /opt and /etc)"
    fi
}

# pkg_installed NAME: true when dpkg reports NAME fully installed.
pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

# The set of packages among "$@" that are not installed, one per line.
missing_pkgs() {
    local p
    for p in "$@"; do
        pkg_installed "$p" || printf '%s\n' "$p"
    done
}

# apt_ensure PKG...: install the missing ones; runs `apt-get update` only when
# something is missing.
apt_ensure() {
    local missing
    missing=$(missing_pkgs "$@" | tr '\n' ' ')
    missing=${missing% }
    if [ -z "$missing" ]; then
        info "already installed: $*"
        return 0
    fi
    info "missing: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing \
        || die "apt-get install failed for: $missing"
}
