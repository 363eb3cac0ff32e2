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

# require_root "$@": go on as root. Otherwise run the calling script again through
# sudo with the same arguments and the caller's BERTH_* variables (sudo resets the
# environment), or, without sudo, say what to do and stop before touching anything.
require_root() {
    [ "$(id -u)" -eq 0 ] && return 0
    local self keep
    self=$(readlink -f -- "$0")
    if command -v sudo >/dev/null 2>&1; then
        keep=$(compgen -e | grep '^BERTH_' | paste -sd, - || true)
        info "not root: running $(basename -- "$self") again through sudo"
        exec sudo ${keep:+"--preserve-env=$keep"} -- bash "$self" "$@"
    fi
    local again
    again=$(printf '%q ' "$0" "$@")
    die "$(basename -- "$self") must run as root and sudo is not installed: run it again as root, for example with: su -c '${again% }'"
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
