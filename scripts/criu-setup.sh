#!/usr/bin/env bash
# Set up CRIU 4.x from Debian's next release (trixie) in a private prefix.
#
# Debian 12's CRIU 3.17 fails on this kernel (vDSO). The next release's CRIU works
# when its .deb and the libraries it needs are unpacked with `dpkg -x` into one
# prefix and run through that prefix's own dynamic loader. Nothing is installed
# into the system: the .debs are downloaded with a private apt configuration
# (private sources list, lists, cache and an empty dpkg status), so the system's
# apt state and its libc6 are never touched.
#
# Result: PREFIX/bin/criu, a wrapper the engine uses as `runc --criu PATH` or puts
# first on runc's PATH. PREFIX defaults to /opt/berth/criu (env BERTH_CRIU_PREFIX).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

PREFIX=${BERTH_CRIU_PREFIX:-/opt/berth/criu}
WORKDIR=${BERTH_CRIU_WORKDIR:-/var/cache/berth/criu-apt}
SUITE=${BERTH_CRIU_SUITE:-trixie}
WRAPPER="$PREFIX/bin/criu"
STAMP="$PREFIX/.berth-criu-stamp"

# The set seen working on this machine kind. The real list is the Depends closure
# of `criu` in SUITE's index (computed below); this one is cross-checked against it
# so that a renamed package (t64 transitions) is reported by name.
KNOWN_GOOD_PKGS=(
    criu libc6 libbsd0 libmd0 libgnutls30t64 libp11-kit0 libidn2-0 libunistring5
    libtasn1-6 libhogweed6t64 libnettle8t64 libgmp10 libffi8 libnftables1 libnftnl11
    libmnl0 libxtables12 libjansson4 libprotobuf-c1 libnl-3-200 libnet1 libuuid1
)

usage() {
    cat <<EOF
Usage: $(basename "$0") [--force] [--verify-only] [--help]

Download CRIU 4.x and its libraries from Debian ${SUITE} (.debs only, private apt
state), unpack them into ${PREFIX} and write the wrapper ${WRAPPER}.
Then verify it with \`criu check\` ("Looks good" required).

  --force         re-download and re-unpack even if the prefix is already set up
  --verify-only   only run the verification of an existing prefix
  -h, --help      this help

Environment:
  BERTH_CRIU_PREFIX    install prefix            (default /opt/berth/criu)
  BERTH_CRIU_WORKDIR   private apt state/.debs   (default /var/cache/berth/criu-apt)
  BERTH_CRIU_SUITE     Debian suite to take CRIU from (default trixie)
  BERTH_DEBIAN_URI     Debian archive URI to use instead of the one found in the
                       machine's apt sources
EOF
}

# --- architecture ----------------------------------------------------------------
case "$(dpkg --print-architecture)" in
    amd64) TRIPLET=x86_64-linux-gnu; LOADER=ld-linux-x86-64.so.2 ;;
    arm64) TRIPLET=aarch64-linux-gnu; LOADER=ld-linux-aarch64.so.1 ;;
    *) die "unsupported architecture $(dpkg --print-architecture) (amd64 and arm64 are known)" ;;
esac

# --- the Debian archive URI, from the machine's own apt sources ----------------------
# Prints "URI<TAB>SIGNED_BY" for the first source that serves the release suite
# (the codename itself, not -updates/-security). Reads one-line *.list entries
# (`deb [opts] URI SUITE COMP...`) and deb822 *.sources stanzas (URIs:/Suites:).
find_debian_source() {
    local codename files=()
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || codename=bookworm
    local etc=${BERTH_APT_ETC:-/etc/apt}
    [ -f "$etc/sources.list" ] && files+=("$etc/sources.list")
    local f
    for f in "$etc"/sources.list.d/*.list "$etc"/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ "${#files[@]}" -gt 0 ] || return 1
    local file
    for file in "${files[@]}"; do
        case "$file" in
            *.sources)
                awk -v want="$codename" '
                    function flush() {
                        if (types ~ /(^| )deb( |$)/ && enabled != "no" && uris != "") {
                            n = split(suites, s, " ")
                            for (i = 1; i <= n; i++) if (s[i] == want) {
                                split(uris, u, " "); print u[1] "\t" signed; found = 1; exit
                            }
                        }
                        types = ""; uris = ""; suites = ""; signed = ""; enabled = ""
                    }
                    /^[ \t]*#/ { next }
                    /^[ \t]*$/ { flush(); next }
                    /^[ \t]/ {
                        # folded continuation of the previous field
                        val = $0; sub(/^[ \t]+/, "", val)
                        if (key == "types") types = types " " val
                        else if (key == "uris") uris = uris " " val
                        else if (key == "suites") suites = suites " " val
                        next
                    }
                    {
                        key = $0; sub(/:.*/, "", key); key = tolower(key)
                        val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                        if (key == "types") types = val
                        else if (key == "uris") uris = val
                        else if (key == "suites") suites = val
                        else if (key == "signed-by") signed = val
                        else if (key == "enabled") enabled = tolower(val)
                    }
                    END { if (!found) flush() }
                ' "$file"
                ;;
            *)
                awk -v want="$codename" '
                    /^[ \t]*#/ { next }
                    $1 == "deb" {
                        i = 2; signed = ""
                        if ($2 ~ /^\[/) {
                            # options block: [a=b c=d]
                            while (i <= NF) {
                                o = $i; gsub(/[\[\]]/, "", o)
                                if (o ~ /^signed-by=/) { signed = o; sub(/^signed-by=/, "", signed) }
                                if ($i ~ /\]$/) { i++; break }
                                i++
                            }
                        }
                        if ($(i + 1) == want) { print $i "\t" signed; exit }
                    }
                ' "$file"
                ;;
        esac
    done | head -n 1
}

# --- private apt -----------------------------------------------------------------------
APT_OPTS=()
setup_private_apt() {
    local uri signed line keyring
    if [ -n "${BERTH_DEBIAN_URI:-}" ]; then
        uri=$BERTH_DEBIAN_URI; signed=""
    else
        line=$(find_debian_source || true)
        [ -n "$line" ] || die "could not find the Debian archive in /etc/apt/sources.list, sources.list.d/*.list or *.sources (a 'deb' source whose suite is this release's codename); set BERTH_DEBIAN_URI"
        uri=${line%%$'\t'*}
        signed=${line#*$'\t'}
    fi
    # The full archive keyring holds the next release's keys; a suite-specific
    # Signed-By (e.g. a bookworm-only key file) would not verify SUITE.
    if [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    elif [ -n "$signed" ] && [ -f "$signed" ]; then
        keyring=$signed
    else
        die "no Debian archive keyring found (install debian-archive-keyring)"
    fi
    info "Debian archive: $uri (suite $SUITE, keyring $keyring)"

    mkdir -p "$WORKDIR/etc/sources.list.d" "$WORKDIR/etc/preferences.d" "$WORKDIR/lists/partial" "$WORKDIR/cache/archives/partial" \
        "$WORKDIR/debs"
    : >"$WORKDIR/status"
    printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$uri" "$SUITE" >"$WORKDIR/etc/sources.list"
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$WORKDIR/etc/sources.list"
        -o "Dir::Etc::SourceParts=$WORKDIR/etc/sources.list.d"
        -o "Dir::Etc::Preferences=$WORKDIR/etc/preferences"
        -o "Dir::Etc::PreferencesParts=$WORKDIR/etc/preferences.d"
        -o "Dir::State::Lists=$WORKDIR/lists"
        -o "Dir::State::status=$WORKDIR/status"
        -o "Dir::State::extended_states=$WORKDIR/extended_states"
        -o "Dir::Cache=$WORKDIR/cache"
        -o "APT::Sandbox::User=root"
        -o "Acquire::Languages=none"
        -o "APT::Get::List-Cleanup=true"
    )
}

private_apt_get() { apt-get "${APT_OPTS[@]}" "$@"; }
private_apt_cache() { apt-cache "${APT_OPTS[@]}" "$@"; }

in_index() {
    # true when PKG has a candidate in the private index
    local cand
    cand=$(private_apt_cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
    [ -n "$cand" ] && [ "$cand" != "(none)" ]
}

# Depends/Pre-Depends closure of criu in SUITE, one real package per line.
resolve_packages() {
    private_apt_cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances criu \
        | awk '/^[^ <]/ {print $1}' | sort -u
}

# --- install ------------------------------------------------------------------------------
is_installed() {
    [ -f "$STAMP" ] && [ -x "$WRAPPER" ] \
        && [ -x "$PREFIX/usr/sbin/criu" ] \
        && "$WRAPPER" --version 2>/dev/null | grep -q '^Version: [4-9]\.'
}

write_wrapper() {
    local dest_prefix=$1 wrapper=$2
    mkdir -p "$(dirname "$wrapper")" "$dest_prefix/usr/lib/criu"
    cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# Generated by berth scripts/criu-setup.sh. Runs CRIU from Debian ${SUITE}, unpacked
# in ${dest_prefix}, through that prefix's own dynamic loader (the system libc is
# older). CRIU_LIBS_DIR keeps CRIU from loading the system's /usr/lib/criu plugins.
P='${dest_prefix}'
L="\$P/usr/lib/${TRIPLET}"
CRIU_LIBS_DIR="\${CRIU_LIBS_DIR:-\$P/usr/lib/criu}"
export CRIU_LIBS_DIR
exec "\$L/${LOADER}" --library-path "\$L" "\$P/usr/sbin/criu" "\$@"
EOF
    chmod 0755 "$wrapper.tmp"
    mv -f "$wrapper.tmp" "$wrapper"
}

install_criu() {
    step "CRIU: preparing a private apt configuration for Debian $SUITE (system apt state untouched)"
    setup_private_apt
    step "CRIU: apt-get update of the private $SUITE index"
    private_apt_get update -qq || die "private apt-get update for $SUITE failed (sources: $WORKDIR/etc/sources.list)"

    local cand
    cand=$(private_apt_cache policy criu | awk '/Candidate:/ {print $2; exit}')
    case "$cand" in
        4.* | [5-9].* | 1:4.* | 1:[5-9].*) info "criu candidate in $SUITE: $cand" ;;
        "" | "(none)") die "package criu not found in Debian $SUITE" ;;
        *) die "criu in Debian $SUITE is $cand, not 4.x" ;;
    esac

    step "CRIU: resolving the dependency closure of criu in $SUITE"
    local pkgs=() p missing_known=()
    mapfile -t pkgs < <(resolve_packages)
    [ "${#pkgs[@]}" -gt 0 ] || die "could not resolve the dependencies of criu in $SUITE"
    for p in "${KNOWN_GOOD_PKGS[@]}"; do
        if ! printf '%s\n' "${pkgs[@]}" | grep -qx -- "$p"; then
            if in_index "$p"; then
                pkgs+=("$p")   # known needed; keep it even if not in the closure
            else
                missing_known+=("$p")
            fi
        fi
    done
    if [ "${#missing_known[@]}" -gt 0 ]; then
        for p in "${missing_known[@]}"; do
            local alt
            case "$p" in *t64) alt=${p%t64} ;; *) alt=${p}t64 ;; esac
            if in_index "$alt"; then
                warn "package $p is not in $SUITE; $alt is (renamed, t64 transition?) — using the closure instead"
            else
                warn "package $p (seen working before) is not in $SUITE, nor $alt; relying on criu's Depends closure"
            fi
        done
    fi
    info "packages (${#pkgs[@]}): ${pkgs[*]}"

    step "CRIU: downloading ${#pkgs[@]} .debs (download only, nothing installed)"
    rm -f "$WORKDIR/debs/"*.deb
    (cd "$WORKDIR/debs" && private_apt_get download -qq "${pkgs[@]}") \
        || die "apt-get download failed for: ${pkgs[*]} (a name above is missing from $SUITE?)"

    step "CRIU: unpacking into $PREFIX"
    local stage="${PREFIX}.stage.$$" deb
    rm -rf "$stage"
    mkdir -p "$stage"
    for deb in "$WORKDIR/debs/"*.deb; do
        dpkg -x "$deb" "$stage" || die "dpkg -x $deb failed"
    done
    [ -x "$stage/usr/sbin/criu" ] || die "the criu .deb did not provide usr/sbin/criu"
    local L="$stage/usr/lib/$TRIPLET"
    [ -x "$L/$LOADER" ] || die "libc6 from $SUITE did not provide usr/lib/$TRIPLET/$LOADER"

    # Every shared library must resolve inside the prefix.
    local listing notfound
    listing=$("$L/$LOADER" --library-path "$L" --list "$stage/usr/sbin/criu" 2>&1) \
        || die "the loader cannot load criu:"$'\n'"$listing"
    notfound=$(printf '%s\n' "$listing" | grep 'not found' || true)
    [ -z "$notfound" ] || die "criu needs libraries missing from the prefix (add their packages):"$'\n'"$notfound"
    if printf '%s\n' "$listing" | grep '=>' | grep -v -- "$stage" | grep -qv 'linux-vdso'; then
        warn "some libraries resolve outside the prefix:"
        printf '%s\n' "$listing" | grep '=>' | grep -v -- "$stage" >&2 || true
    fi

    # Swap the new prefix into place, then write the wrapper with the final path.
    local old="${PREFIX}.old.$$"
    mkdir -p "$(dirname "$PREFIX")"
    if [ -e "$PREFIX" ]; then mv "$PREFIX" "$old"; fi
    mv "$stage" "$PREFIX"
    rm -rf "$old"
    write_wrapper "$PREFIX" "$WRAPPER"
    {
        echo "suite=$SUITE"
        echo "criu=$cand"
        echo "debs=$(cd "$WORKDIR/debs" && echo *.deb)"
    } >"$STAMP"
    info "installed CRIU $cand into $PREFIX"
}

verify_criu() {
    step "CRIU: verifying $WRAPPER check"
    [ -x "$WRAPPER" ] || die "CRIU verification failed: $WRAPPER does not exist (run $0 --force)"
    local out rc=0
    out=$("$WRAPPER" check 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] || ! printf '%s\n' "$out" | grep -q 'Looks good'; then
        # shellcheck disable=SC2016  # the backticks are literal
        printf 'ERROR: CRIU verification failed: `%s check` exited %s without "Looks good". Output:\n%s\n' \
            "$WRAPPER" "$rc" "$out" >&2
        if ! command -v iptables >/dev/null 2>&1; then
            printf 'ERROR: iptables is not installed; CRIU needs it (apt-get install iptables)\n' >&2
        fi
        exit 1
    fi
    info "$("$WRAPPER" --version | head -n 1): Looks good"
}

main() {
    local force=0 verify_only=0 argv=("$@")
    while [ $# -gt 0 ]; do
        case "$1" in
            --force) force=1 ;;
            --verify-only) verify_only=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
        shift
    done
    require_root "${argv[@]}"
    if [ "$verify_only" -eq 0 ]; then
        if [ "$force" -eq 0 ] && is_installed; then
            step "CRIU: already set up in $PREFIX ($(sed -n 's/^criu=//p' "$STAMP")); skipping download (use --force to redo)"
        else
            install_criu
        fi
    fi
    verify_criu
}

main "$@"
