#!/bin/bash
# check-layers.sh — fails on any #include that points up or sideways against the declared layer
# order (docs/ARCHITECTURE.md), and on third-party headers outside the layers allowed to use them.
# Prints each offending line as FILE:LINE: ... and exits 1; exits 0 when all is well.
# Usage: scripts/check-layers.sh [ROOT]   (ROOT: the checkout, default: this script's parent)
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root" || { echo "check-layers: cannot enter '$root'" >&2; exit 2; }

# Bottom to top. Folders on one line of the same rank are siblings: neither includes the other.
layers=(
    "0 kernels"
    "1 quantizers"
    "1 metrics"
    "1 tasks"
    "2 harness/io"
    "3 harness/store"
    "4 harness/run"
    "5 reports"
    "6 harness/cli"
)
# Third-party headers and the folders that may include them (STYLE.md: only the harness and the
# reports touch SQLite and cJSON; PCRE2 only where tokenizers are read).
allowed_sys() { # $1 header, $2 folder -> 0 when allowed
    case "$1" in
    sqlite3.h) case "$2" in harness/store|harness/run|harness/cli|reports) return 0 ;; esac; return 1 ;;
    cjson/*) case "$2" in harness/*|reports) return 0 ;; esac; return 1 ;;
    pcre2.h) case "$2" in harness/io) return 0 ;; esac; return 1 ;;
    *) return 0 ;;
    esac
}

declare -A rank_of folder_of
for l in "${layers[@]}"; do
    r=${l%% *} d=${l#* }
    rank_of[$d]=$r
    [ -d "$d" ] || { echo "check-layers: declared layer '$d' does not exist" >&2; exit 2; }
    for h in "$d"/*.h; do [ -e "$h" ] && folder_of[$(basename "$h")]=$d; done
done

bad=0
for l in "${layers[@]}"; do
    d=${l#* } r=${rank_of[$d]}
    for f in "$d"/*.c "$d"/*.h; do
        [ -e "$f" ] || continue
        while IFS= read -r hit; do
            n=${hit%%:*} line=${hit#*:}
            if [[ $line =~ \#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]]; then
                inc=${BASH_REMATCH[1]}
                to=${folder_of[$(basename "$inc")]:-}
                if [ -z "$to" ]; then
                    echo "$f:$n: $line — '$inc' is not in any layer"; bad=1; continue
                fi
                [ "$to" = "$d" ] && continue
                tr=${rank_of[$to]}
                if [ "$tr" -gt "$r" ]; then
                    echo "$f:$n: $line — points up ($d -> $to)"; bad=1
                elif [ "$tr" -eq "$r" ]; then
                    echo "$f:$n: $line — points sideways ($d -> $to)"; bad=1
                fi
            elif [[ $line =~ \#[[:space:]]*include[[:space:]]*\<([^\>]+)\> ]]; then
                inc=${BASH_REMATCH[1]}
                if ! allowed_sys "$inc" "$d"; then
                    echo "$f:$n: $line — <$inc> is not for $d"; bad=1
                fi
            fi
        done < <(grep -n '^[[:space:]]*#[[:space:]]*include' "$f")
    done
done
if [ $bad -ne 0 ]; then
    echo "check-layers: includes against the layer order (docs/ARCHITECTURE.md)" >&2
    exit 1
fi
echo "check-layers: ok (${#layers[@]} layers)"
