#!/usr/bin/env bash
# podman's own system tests (test/system/*.bats of containers/podman) run against berth.
#
# Usage: scripts/podman-conformance.sh SYSTEM_TEST_DIR [NNN ...]
#
# SYSTEM_TEST_DIR is a copy of test/system/ from containers/podman, obtained outside
# this repository (it is never copied into it). The NNN arguments choose files by
# number (default: the files for the verbs berth has: 001-160, 220-221, 280, 300, 400,
# 450, 500, 520, 600-620). The script
#   - starts a private engine (its own BERTH_ROOT/BERTH_RUN under a fresh temporary
#     directory) and a wrapper that runs berth in it, handed to bats as $PODMAN;
#   - builds a stand-in for quay.io/libpod/testimage from the host's static busybox
#     (bench/podman_testimage.py) and loads it with berth's own `image load`;
#   - runs bats on each file with a time bound (BERTH_CONFORMANCE_FILE_SECONDS,
#     default 600; a file cut short counts its unreported tests as failed);
#   - prints pass/fail/skip per file and the total, and keeps the TAP output of each
#     file in the work directory it names at the end.
# Needs root (berth runs containers), bats (apt-get install bats) and busybox-static.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "podman-conformance: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: $0 SYSTEM_TEST_DIR [NNN ...]"
tests=$(cd "$1" 2>/dev/null && pwd) || die "no such directory: $1"
[ -f "$tests/helpers.bash" ] || die "$tests is not podman's test/system (no helpers.bash)"
shift
[ "$(id -u)" = 0 ] || die "run as root: berth runs real containers"
command -v bats >/dev/null || die "bats is missing: apt-get install bats"
[ -x /bin/busybox ] || die "/bin/busybox is missing: apt-get install busybox-static"

python=${BERTH_PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$here/.venv/bin/python" ]; then python=$here/.venv/bin/python; else python=python3; fi
fi
per_file=${BERTH_CONFORMANCE_FILE_SECONDS:-600}
case $per_file in ''|*[!0-9]*) die "BERTH_CONFORMANCE_FILE_SECONDS must be a number of seconds";; esac

in_scope() {  # the files for the verbs berth has
    local n=$((10#$1))
    { [ $n -ge 1 ] && [ $n -le 160 ]; } || [ $n -eq 220 ] || [ $n -eq 221 ] ||
        [ $n -eq 280 ] || [ $n -eq 300 ] || [ $n -eq 400 ] || [ $n -eq 450 ] ||
        [ $n -eq 500 ] || [ $n -eq 520 ] || { [ $n -ge 600 ] && [ $n -le 620 ]; }
}

files=()
if [ $# -gt 0 ]; then
    for want in "$@"; do
        case $want in *[!0-9]*|'') die "not a file number: $want";; esac
        f=$(ls "$tests"/"$(printf %03d $((10#$want)))"-*.bats 2>/dev/null | head -n 1)
        [ -n "$f" ] || die "no file numbered $want in $tests"
        files+=("$f")
    done
else
    for f in "$tests"/[0-9][0-9][0-9]-*.bats; do
        n=$(basename "$f"); n=${n%%-*}
        in_scope "$n" && files+=("$f")
    done
fi

# Short paths: conmon's attach socket lives under BERTH_RUN (sun_path is 108 bytes).
work=$(mktemp -d /tmp/bpc.XXXXXX)
mkdir -p "$work/root" "$work/run" "$work/bin" "$work/tap" "$work/tmp"
cat >"$work/bin/podman" <<WRAP
#!/bin/sh
BERTH_ROOT='$work/root' BERTH_RUN='$work/run' PYTHONPATH='$here'\${PYTHONPATH:+:\$PYTHONPATH} \\
    exec '$python' -P -m berth "\$@"
WRAP
chmod 755 "$work/bin/podman"
podman=$work/bin/podman
# The suite's setup makes TLS certificates for its remote mode (unused here) with
# OpenSSL 3.2's `req -quiet` and `req -CA`; Debian 12 has 3.0. This shim, first on
# the suite's PATH, drops those options (self-signed certificates instead of
# CA-signed ones) so that setup_suite runs; nothing in the local tests reads them.
cat >"$work/bin/openssl" <<'SHIM'
#!/bin/bash
args=()
while [ $# -gt 0 ]; do
    case $1 in
        -quiet) ;;
        -CA|-CAkey) shift ;;
        *) args+=("$1") ;;
    esac
    shift
done
exec /usr/bin/openssl "${args[@]}" 2>/dev/null
SHIM
chmod 755 "$work/bin/openssl"
# The suite (re)loads its test image from a cache file with `skopeo copy --all
# oci-archive:FILE containers-storage:REF` (podman's store) whenever a test removed
# it (001's `rmi -a`); this shim does that one copy with berth's `image load`, and
# hands every other skopeo call to the real one. The cache file is the stand-in.
cat >"$work/bin/skopeo" <<SHIM
#!/bin/bash
if [ "\$1" = copy ] && [ "\$2" = --all ] && [ "\${3#oci-archive:}" != "\$3" ] &&
   [ "\${4#containers-storage:}" != "\$4" ] && [ \$# -eq 4 ]; then
    exec '$work/bin/podman' image load -i "\${3#oci-archive:}"
fi
exec /usr/bin/skopeo "\$@"
SHIM
chmod 755 "$work/bin/skopeo"

running=
cleanup() {
    # timeout runs bats in a process group of its own: a signal to this script's
    # group does not reach it, so it is passed on (timeout hands it to bats)
    [ -n "$running" ] && kill -TERM "$running" 2>/dev/null && wait "$running" 2>/dev/null
    "$podman" rm -af -t 0 >/dev/null 2>&1
    "$podman" down >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$podman" up -d >"$work/up.log" 2>&1 || die "berth up failed: $(tail -n 5 "$work/up.log")"
PYTHONPATH=$here "$python" "$here/bench/podman_testimage.py" "$work/testimage.tar" ||
    die "cannot build the test image"
mkdir -p "$work/tmp/podman-systest-imagecache-$(id -u)"
cp "$work/testimage.tar" \
    "$work/tmp/podman-systest-imagecache-$(id -u)/quay.io--libpod--testimage--20241011.tar"
"$podman" image load -i "$work/testimage.tar" >"$work/load.log" 2>&1 ||
    die "image load failed: $(cat "$work/load.log")"
loaded=$(sed -n 's/^Loaded image: //p' "$work/load.log" | head -n 1)
if [ "$loaded" != quay.io/libpod/testimage:20241011 ]; then
    "$podman" tag "$loaded" quay.io/libpod/testimage:20241011 >>"$work/load.log" 2>&1 ||
        die "cannot tag the test image: $(cat "$work/load.log")"
fi

printf '%-32s %5s %5s %5s %5s\n' FILE PASS FAIL SKIP TOTAL
tp=0 tf=0 ts=0 tt=0
for f in "${files[@]}"; do
    name=$(basename "$f" .bats)
    tap=$work/tap/$name.tap
    # bats' own temporary directories go under the work directory, cleaned with it
    ( cd "$tests" && PATH=$work/bin:$PATH PODMAN=$podman BATS_TMPDIR=$work/tmp TMPDIR=$work/tmp \
        exec timeout --kill-after=30 "$per_file" bats --tap "$f" ) >"$tap" 2>"$work/tap/$name.err" </dev/null &
    running=$!
    wait "$running"
    rc=$?
    running=
    planned=$(sed -n 's/^1\.\.\([0-9]\+\)$/\1/p' "$tap" | head -n 1)
    pass=$(grep -cE '^ok [0-9]+' "$tap" | head -n 1)
    skip=$(grep -cE '^ok [0-9]+ .*# skip' "$tap")
    fail=$(grep -cE '^not ok [0-9]+' "$tap")
    pass=$((pass - skip))
    total=${planned:-$((pass + fail + skip))}
    note=
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then note=" (cut at ${per_file}s)"; fi
    fail=$((total - pass - skip))  # tests never reported (time bound, crash) failed
    printf '%-32s %5d %5d %5d %5d%s\n' "$name" "$pass" "$fail" "$skip" "$total" "$note"
    tp=$((tp + pass)) tf=$((tf + fail)) ts=$((ts + skip)) tt=$((tt + total))
    "$podman" rm -af -t 0 >/dev/null 2>&1
done
attempted=$((tp + tf))
pct=$(awk -v p=$tp -v a=$attempted 'BEGIN { if (a) printf "%.1f", 100 * p / a; else print "0.0" }')
printf '%-32s %5d %5d %5d %5d\n' TOTAL $tp $tf $ts $tt
echo "passed $tp of $attempted attempted (not skipped): $pct%"
echo "TAP output and logs: $work"
