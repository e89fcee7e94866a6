#!/bin/bash
# fixtures.sh — `make fixtures`: makes the fixtures folder DIR hold every file of fixtures/MANIFEST.
#
#   scripts/fixtures.sh [--check] DIR [PATH...]
#
# For each entry (or only the PATHs given): a file already in DIR with the listed SHA-256 is left
# alone; a file in DIR with another SHA-256 is left alone too, and reported (exit 2); a missing
# file is downloaded (curl, else wget) into a temporary file beside its place, checked, and only
# then renamed into place, so that DIR never holds half a file or a file with the wrong bytes.
# Entries "derive:SRC:OFFSET:COUNT" are cut from SRC (found in DIR, else in this repository's
# fixtures/) into this repository's fixtures/; entries with source "-" are kept in the repository.
# --check verifies without downloading anything.
#
# Environment: FIXTURES_MANIFEST (default: fixtures/MANIFEST of this repository); FIXTURES_MIRROR,
# a URL prefix that replaces every source by MIRROR/PATH (e.g. file:///srv/fixtures, as the tests
# use). Exit status: 0 every file present and correct; 1 (--check) files missing; 2 a checksum
# mismatch or a bad manifest; 3 no network or a failed download.
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
manifest=${FIXTURES_MANIFEST:-$repo/fixtures/MANIFEST}
mirror=${FIXTURES_MIRROR:-}
check=0
if [ "${1:-}" = "--check" ]; then check=1; shift; fi
if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "usage: scripts/fixtures.sh [--check] DIR [PATH...]" >&2
    exit 2
fi
dir=$1
shift
want_paths=("$@")
[ -r "$manifest" ] || { echo "fixtures: cannot read the manifest '$manifest'" >&2; exit 2; }

tmp_files=()
cleanup() { for t in "${tmp_files[@]}"; do rm -f "$t"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

status=0
n_ok=0 n_new=0 n_missing=0
worst() { [ "$1" -gt "$status" ] && status=$1; }

sha_of() { sha256sum "$1" | cut -c1-64; }

# A temporary file beside $1 (same folder, so that the rename is atomic), removed on exit.
temp_beside() {
    local t
    mkdir -p "$(dirname "$1")" || return 1
    t=$(mktemp "$(dirname "$1")/.$(basename "$1").part.XXXXXX") || return 1
    tmp_files+=("$t")
    echo "$t"
}

# Downloads URL to FILE. Returns 0, 6 when the host cannot be reached (no network), else 1.
fetch() {
    local url=$1 out=$2 rc
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 2 --connect-timeout 20 -o "$out" "$url" 2>"$out.err"
        rc=$?
        case $rc in
            0) rm -f "$out.err"; return 0 ;;
            5|6|7|28|35) rm -f "$out.err"; return 6 ;; # proxy/host not resolved, no connection, timeout
        esac
    elif command -v wget >/dev/null 2>&1; then
        wget -q -T 20 -O "$out" "$url" 2>"$out.err"
        rc=$?
        [ $rc -eq 0 ] && { rm -f "$out.err"; return 0; }
        [ $rc -eq 4 ] && { rm -f "$out.err"; return 6; } # network failure
    else
        echo "fixtures: neither curl nor wget is installed" >&2
        return 1
    fi
    sed 's/^/fixtures:   /' "$out.err" >&2
    rm -f "$out.err"
    return 1
}

# Moves a checked temporary file into place, or reports the mismatch and removes it.
install_checked() {
    local tmp=$1 target=$2 sha=$3 size=$4 what=$5 got got_size
    got=$(sha_of "$tmp")
    got_size=$(stat -c %s "$tmp")
    if [ "$got" != "$sha" ] || [ "$got_size" != "$size" ]; then
        rm -f "$tmp"
        echo "fixtures: checksum mismatch: $what: SHA-256 $got, $got_size bytes;" \
             "the manifest says $sha, $size bytes; nothing written to '$target'" >&2
        worst 2
        return 1
    fi
    mv -f "$tmp" "$target" || { echo "fixtures: cannot write '$target'" >&2; worst 3; return 1; }
    echo "fixtures: $target"
    n_new=$((n_new + 1))
}

offline=""
line_no=0
while read -r sha size path source extra || [ -n "${sha:-}" ]; do
    line_no=$((line_no + 1))
    case "$sha" in ''|'#'*) continue ;; esac
    if [ ${#sha} -ne 64 ] || [ -z "$source" ] || [ -n "${extra:-}" ] || ! [ "$size" -eq "$size" ] 2>/dev/null; then
        echo "fixtures: $manifest:$line_no: expected 'SHA256 BYTES PATH SOURCE'" >&2
        exit 2
    fi
    if [ ${#want_paths[@]} -gt 0 ]; then
        keep=0
        for p in "${want_paths[@]}"; do [ "$p" = "$path" ] && keep=1; done
        [ $keep -eq 1 ] || continue
    fi
    case "$source" in
        -|derive:*) target=$repo/fixtures/$path ;;
        *) target=$dir/$path ;;
    esac
    if [ -f "$target" ]; then
        if [ "$(sha_of "$target")" = "$sha" ]; then
            n_ok=$((n_ok + 1))
        else
            echo "fixtures: '$target' is there but its SHA-256 is not the manifest's $sha: left as it is;" \
                 "remove it to download it again" >&2
            worst 2
        fi
        continue
    fi
    if [ $check -eq 1 ] || [ "$source" = "-" ]; then
        echo "fixtures: missing: $target" >&2
        n_missing=$((n_missing + 1))
        worst 1
        continue
    fi
    if [ "${source#derive:}" != "$source" ]; then
        IFS=: read -r _ src off count <<<"$source"
        from=$dir/$src
        [ -f "$from" ] || from=$repo/fixtures/$src
        if [ ! -f "$from" ]; then
            echo "fixtures: cannot make '$target': '$src' is missing (in '$dir' too)" >&2
            n_missing=$((n_missing + 1))
            worst 3
            continue
        fi
        tmp=$(temp_beside "$target") || { worst 3; continue; }
        dd if="$from" of="$tmp" bs=65536 iflag=skip_bytes,count_bytes skip="$off" count="$count" status=none
        install_checked "$tmp" "$target" "$sha" "$size" "bytes $off..$((off + count)) of '$from'"
        continue
    fi
    if [ -n "$offline" ]; then
        n_missing=$((n_missing + 1))
        continue
    fi
    url=${source%%#*}
    member=""
    [ "$url" != "$source" ] && member=${source#*#}
    if [ -n "$mirror" ]; then
        url=${mirror%/}/$path
        member=""
    fi
    tmp=$(temp_beside "$target") || { worst 3; continue; }
    if [ -n "$member" ]; then
        zip=$(temp_beside "$target.zip") || { worst 3; continue; }
        fetch "$url" "$zip"
        rc=$?
        if [ $rc -eq 0 ] && ! python3 -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as m, open(sys.argv[3], "wb") as o:
    shutil.copyfileobj(m, o)' "$zip" "$member" "$tmp" 2>/dev/null; then
            echo "fixtures: '$url' holds no '$member'" >&2
            rc=1
        fi
        rm -f "$zip"
    else
        fetch "$url" "$tmp"
        rc=$?
    fi
    if [ $rc -eq 6 ]; then
        host=${url#*://}
        host=${host%%/*}
        offline=$host
        echo "fixtures: no network: cannot reach $host; the missing files are not downloaded." >&2
        echo "fixtures: copy them by hand (sources and SHA-256 in fixtures/MANIFEST) into '$dir'," \
             "or point FIXTURES at a folder that has them" >&2
        rm -f "$tmp"
        n_missing=$((n_missing + 1))
        worst 3
        continue
    fi
    if [ $rc -ne 0 ]; then
        rm -f "$tmp"
        echo "fixtures: cannot download '$path' from $url" >&2
        n_missing=$((n_missing + 1))
        worst 3
        continue
    fi
    install_checked "$tmp" "$target" "$sha" "$size" "'$path' from $url"
done < "$manifest"

echo "fixtures: $dir: $n_ok present, $n_new added, $n_missing missing" >&2
exit $status
