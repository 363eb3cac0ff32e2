#!/usr/bin/env bash
# berth: the one idempotent install script.
#
# Installs the host packages berth drives (runc, conmon, crun, iptables,
# busybox-static, PostgreSQL, iproute2, inotify-tools), the Python virtual
# environment at REPO/.venv with the project and its test extra, and CRIU 4.x in a
# private prefix (scripts/criu-setup.sh). Then verifies all of it. Every step is
# skipped when its result is already there, so a repeat run takes seconds.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

VENV=${BERTH_VENV:-$REPO/.venv}
STAMP="$VENV/.berth-install-stamp"
CRIU_PREFIX=${BERTH_CRIU_PREFIX:-/opt/berth/criu}
CRIU_WRAPPER="$CRIU_PREFIX/bin/criu"
CONFIG_DIR=/etc/berth
MIN_PY=(3 11)

BASE_PKGS=(runc conmon crun iptables busybox-static postgresql iproute2 inotify-tools
           skopeo docker-registry containernetworking-plugins catatonit systemd
           gcc libc6-dev tmux)
BENCH_PKGS=(podman containerd hyperfine bats)

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Idempotent install of everything berth needs on a Debian 12 host (run as root):
  1. apt: ${BASE_PKGS[*]}
  2. Python venv at $VENV with \`pip install -e "${REPO}[test]"\`, and the C front end
     (frontend/berth.c) as $VENV/bin/berth
  3. CRIU 4.x from Debian trixie in $CRIU_PREFIX (wrapper $CRIU_WRAPPER)
  4. verification: criu check ("Looks good"), runc/conmon --version, /bin/busybox

Options:
  --bench          also install the benchmark peers: ${BENCH_PKGS[*]}
  --no-criu        skip the CRIU step (and its verification)
  --no-venv        skip the Python step
  --force-criu     re-download and re-unpack CRIU
  --force-pip      re-run pip even if the venv is up to date
  -h, --help       this help

Environment:
  BERTH_PYTHON       interpreter to build the venv with (default: python3 if >= 3.11,
                     else /usr/bin/python3)
  BERTH_VENV         venv path (default REPO/.venv)
  BERTH_CRIU_PREFIX  CRIU prefix (default /opt/berth/criu)
  BERTH_DOCKER_CLI_PREFIX  where the docker CLI goes (default /opt/berth/docker; the
                     client binary only, for the Docker API tests)

Afterwards the engine finds CRIU at $CRIU_WRAPPER (its default), or through
BERTH_CRIU; the path is also written to $CONFIG_DIR/criu-path.
EOF
}

# --- 1. apt ------------------------------------------------------------------------------
install_base_packages() {
    step "apt: base packages"
    apt_ensure "${BASE_PKGS[@]}"
}

install_bench_peers() {
    step "apt: benchmark peers"
    apt_ensure "${BENCH_PKGS[@]}"
}

# --- 2. Python ---------------------------------------------------------------------------
py_ok() {
    # py_ok PYTHON: true when PYTHON runs and is >= MIN_PY
    "$1" -c "import sys; sys.exit(0 if sys.version_info[:2] >= (${MIN_PY[0]}, ${MIN_PY[1]}) else 1)" \
        >/dev/null 2>&1
}

pick_python() {
    local cand
    for cand in "${BERTH_PYTHON:-}" "$(command -v python3 || true)" /usr/bin/python3; do
        [ -n "$cand" ] || continue
        if py_ok "$cand"; then
            printf '%s\n' "$cand"
            return 0
        fi
    done
    return 1
}

venv_usable() {
    [ -x "$VENV/bin/python" ] && py_ok "$VENV/bin/python" && [ -x "$VENV/bin/pip" ]
}

pyproject_hash() {
    sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1
}

setup_venv() {
    local force_pip=$1 py
    step "python: virtual environment at $VENV"
    if venv_usable; then
        info "exists ($("$VENV/bin/python" --version 2>&1))"
    else
        if ! py=$(pick_python); then
            # A plain Debian 12 has /usr/bin/python3 3.11; make sure it is there.
            apt_ensure python3
            py=$(pick_python) || die "no python3 >= ${MIN_PY[0]}.${MIN_PY[1]} found (set BERTH_PYTHON)"
        fi
        # Debian's python3 needs python3-venv for ensurepip; pyenv/upstream builds have it.
        if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            if [ "$(readlink -f "$py")" = "$(readlink -f /usr/bin/python3)" ]; then
                apt_ensure python3-venv
            fi
            "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 \
                || die "$py lacks the venv/ensurepip modules (on Debian: apt-get install python3-venv)"
        fi
        info "creating with $py ($("$py" --version 2>&1))"
        rm -rf "$VENV"
        "$py" -m venv "$VENV" || die "python -m venv $VENV failed"
    fi

    step "python: pip install -e \"${REPO}[test]\""
    local want have=""
    want="$(pyproject_hash) $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')"
    [ -f "$STAMP" ] && have=$(cat "$STAMP")
    if [ "$force_pip" -eq 0 ] && [ "$want" = "$have" ] \
        && "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("berth")' >/dev/null 2>&1; then
        info "up to date (pyproject.toml unchanged since the last install)"
        return 0
    fi
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip \
        || warn "could not upgrade pip; continuing with the venv's own"
    # The build backend (hatchling, see pyproject.toml) makes the editable install a
    # plain .pth path entry, with no import hook for every `berth` start to load.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "${REPO}[test]" \
        || die "pip install -e \"${REPO}[test]\" failed"
    printf '%s\n' "$want" >"$STAMP"
    info "installed berth $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("berth"))')"
}

# The `berth` on PATH ($VENV/bin/berth, where pip put the console script) becomes the
# C front end (frontend/berth.c): it asks the warm command server and runs
# `$VENV/bin/python -P -m berth` itself when there is none. Rebuilt when pip rewrote
# the file or the source is newer; `python -m berth` stays the plain path.
build_frontend() {
    step "front end: $VENV/bin/berth from frontend/berth.c"
    local out="$VENV/bin/berth" src="$REPO/frontend/berth.c" tmp
    if [ "$(head -c 4 "$out" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ] \
        && [ "$out" -nt "$src" ]; then
        info "up to date"
        return 0
    fi
    tmp=$(mktemp "$VENV/bin/.berth.XXXXXX")
    cc -O2 -Wall -Wextra -Werror -DBERTH_PYTHON="\"$VENV/bin/python\"" -o "$tmp" "$src" \
        || { rm -f "$tmp"; die "building the front end ($src) failed"; }
    chmod 755 "$tmp"
    mv -f "$tmp" "$out"
    info "built (BERTH_CLI_SERVER=0 makes it run the Python CLI directly)"
}

# --- 3. CRIU -----------------------------------------------------------------------------
setup_criu() {
    local args=()
    [ "$1" -eq 1 ] && args+=(--force)
    BERTH_CRIU_PREFIX="$CRIU_PREFIX" "$SCRIPT_DIR/criu-setup.sh" "${args[@]}" \
        || die "CRIU setup failed (step 3; see the output above)"
    mkdir -p "$CONFIG_DIR"
    if [ "$(cat "$CONFIG_DIR/criu-path" 2>/dev/null || true)" != "$CRIU_WRAPPER" ]; then
        printf '%s\n' "$CRIU_WRAPPER" >"$CONFIG_DIR/criu-path"
    fi
}

# --- the docker CLI, for the Docker API's tests -------------------------------------------
# Only the client binary, taken out of Debian's docker.io package into a private prefix
# (as CRIU is): Docker's daemon is never installed nor started on anyone's machine.
DOCKER_CLI_PREFIX=${BERTH_DOCKER_CLI_PREFIX:-/opt/berth/docker}
setup_docker_cli() {
    step "docker CLI: $DOCKER_CLI_PREFIX/bin/docker (client only, from Debian's docker.io)"
    if "$DOCKER_CLI_PREFIX/bin/docker" --version >/dev/null 2>&1; then
        info "up to date ($("$DOCKER_CLI_PREFIX/bin/docker" --version))"
        return 0
    fi
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -q docker.io >/dev/null) \
        || { rm -rf "$tmp"; die "apt-get download docker.io failed"; }
    dpkg -x "$tmp"/docker.io_*.deb "$tmp/x" || { rm -rf "$tmp"; die "dpkg -x docker.io failed"; }
    mkdir -p "$DOCKER_CLI_PREFIX/bin"
    install -m 0755 "$tmp/x/usr/bin/docker" "$DOCKER_CLI_PREFIX/bin/docker"
    rm -rf "$tmp"
    "$DOCKER_CLI_PREFIX/bin/docker" --version >/dev/null || die "the docker CLI does not run"
    info "installed $("$DOCKER_CLI_PREFIX/bin/docker" --version)"
}

# --- 4. verify ---------------------------------------------------------------------------
verify_tools() {
    step "verify: runc, conmon, crun, iptables, busybox, skopeo, registry, CNI, catatonit"
    local out
    out=$(runc --version 2>&1) || die "verification failed: \`runc --version\`: $out"
    info "runc: $(printf '%s\n' "$out" | head -n 1)"
    out=$(conmon --version 2>&1) || die "verification failed: \`conmon --version\`: $out"
    info "conmon: $(printf '%s\n' "$out" | head -n 1)"
    out=$(crun --version 2>&1) || die "verification failed: \`crun --version\`: $out"
    info "crun: $(printf '%s\n' "$out" | head -n 1)"
    command -v iptables >/dev/null || die "verification failed: iptables not on PATH (CRIU needs it)"
    [ -x /bin/busybox ] || die "verification failed: /bin/busybox missing (package busybox-static)"
    out=$(/bin/busybox echo ok 2>&1) || die "verification failed: /bin/busybox does not run: $out"
    if command -v ldd >/dev/null && ldd /bin/busybox >/dev/null 2>&1; then
        die "verification failed: /bin/busybox is dynamically linked (need busybox-static, not busybox)"
    fi
    info "busybox: $(/bin/busybox 2>&1 | head -n 1)"
    out=$(skopeo --version 2>&1) || die "verification failed: \`skopeo --version\`: $out"
    info "skopeo: $out"
    [ -x /usr/bin/docker-registry ] \
        || die "verification failed: /usr/bin/docker-registry missing (package docker-registry)"
    local plugin
    for plugin in bridge host-local portmap firewall loopback; do
        [ -x "/usr/lib/cni/$plugin" ] \
            || die "verification failed: CNI plugin /usr/lib/cni/$plugin missing (containernetworking-plugins)"
    done
    info "CNI plugins: /usr/lib/cni (bridge host-local portmap firewall loopback)"
    [ -x /usr/bin/catatonit ] || die "verification failed: /usr/bin/catatonit missing (package catatonit)"
}

# Byte-compile berth's own packages. Where PYTHONDONTWRITEBYTECODE is set, Python
# never writes .pyc files itself and every `berth` start would compile the client
# path from source (~60 ms); it still reads them. compileall skips fresh files.
compile_berth() {
    step "python: byte-compile berth"
    local pkgs=() p
    for p in berth engine bus workers migrations; do
        if [ -d "$REPO/$p" ]; then pkgs+=("$p"); fi
    done
    (cd "$REPO" && "$VENV/bin/python" -m compileall -q "${pkgs[@]}" >/dev/null) \
        || warn "byte-compiling failed; berth still runs, only its start-up is slower"
}

main() {
    local bench=0 criu=1 venv=1 force_criu=0 force_pip=0 argv=("$@")
    while [ $# -gt 0 ]; do
        case "$1" in
            --bench) bench=1 ;;
            --no-criu) criu=0 ;;
            --no-venv) venv=0 ;;
            --force-criu) force_criu=1 ;;
            --force-pip) force_pip=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
        shift
    done
    require_root "${argv[@]}"
    local t0=$SECONDS
    # One install at a time (CI jobs or engineers sharing a host).
    mkdir -p /run/lock
    exec 9>/run/lock/berth-install.lock
    if ! flock -n 9; then
        step "another install.sh is running; waiting for it"
        flock -w 1200 9 || die "timed out waiting for /run/lock/berth-install.lock"
    fi

    install_base_packages
    if [ "$bench" -eq 1 ]; then install_bench_peers; fi
    if [ "$venv" -eq 1 ]; then setup_venv "$force_pip"; compile_berth; build_frontend; fi
    if [ "$criu" -eq 1 ]; then setup_criu "$force_criu"; fi
    setup_docker_cli
    verify_tools

    step "done in $((SECONDS - t0))s"
    if [ "$venv" -eq 1 ]; then
        info "venv:  . $VENV/bin/activate"
    fi
    if [ "$criu" -eq 1 ]; then
        info "CRIU:  $CRIU_WRAPPER  (also in $CONFIG_DIR/criu-path)"
        info "       the engine defaults to it; to be explicit:  export BERTH_CRIU=$CRIU_WRAPPER"
        info "       for runc/conmon by hand: runc --criu $CRIU_WRAPPER ... or PATH=$CRIU_PREFIX/bin:\$PATH"
    fi
}

main "$@"
