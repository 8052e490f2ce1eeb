#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv outside the checkout (its declared dependencies
# only, pinned by constraints.txt) and run `ntp-bench` from outside the checkout.
# Usage: .ci/wheel_check.sh   (PYTHON: the interpreter for the fresh venv, default python3)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
phase() { echo "wheel-check: $1 ($((SECONDS - start)) s)"; }

# Build from a copy of the files git knows (tracked and new, not ignored), so that a stale
# build/ folder or an untracked leftover in the checkout cannot reach the wheel.
mkdir "$work/src"
git -C "$root" ls-files -z --cached --others --exclude-standard \
    | (cd "$root" && tar --null --no-recursion --ignore-failed-read -T - -cf -) | tar -xf - -C "$work/src"

"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" wheel --no-deps --wheel-dir "$work/dist" "$work/src" > "$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
wheel=("$work"/dist/ntp_gym-*.whl)
phase "built ${wheel[0]##*/}"

# --no-compile: no .pyc for torch & co. (halves the install's CPU time; imports still work)
"${pip[@]}" install --no-compile -c "$root/constraints.txt" "${wheel[0]}" > "$work/install.log" 2>&1 \
    || { grep -v '^WARNING: Location' "$work/install.log"; exit 1; }
phase "installed it and its declared dependencies into a fresh venv"

cd "$work"  # outside the checkout: only the installed packages can be imported
location="$("$work/venv/bin/python" -c 'import evaluation; print(evaluation.__file__)')"
case "$location" in
    "$work/venv/"*) ;;
    *) echo "wheel-check: evaluation imported from $location, not the venv" >&2; exit 1 ;;
esac
"$work/venv/bin/ntp-bench" --help > /dev/null
"$work/venv/bin/ntp-bench" reproduce --only quick --out "$work/out" --quiet > "$work/reproduce.log" \
    || { cat "$work/reproduce.log"; exit 1; }
tail -n 1 "$work/reproduce.log"
phase "ntp-bench --help and reproduce --only quick ran from the wheel"
