#!/usr/bin/env bash
# Checks that every change ringway made to this vendored monoio 0.2.4 is marked: it diffs this
# folder against the pristine crate from crates.io and fails if a changed hunk has no
# `ringway patch` comment among its added lines (RINGWAY-PATCH.md, "Checking the marks").
#
# Hunks are those of `diff -U0` (no context lines), so every run of changed lines counts on
# its own and a mark must sit in it (a comment line directly above a changed line joins its
# hunk). A hunk that only deletes lines needs the mark on the line just before or after the
# deletion. A new file is one hunk; a deleted file is a hunk without added lines (so it fails).
#
# The pristine crate is taken from cargo's download cache if it is there, else downloaded from
# crates.io (curl, then cargo); its SHA-256 is checked against the crates.io index's. Needs
# bash, diff, awk, tar, sha256sum, and curl or cargo; no network beyond crates.io.
# Usage: vendor/monoio/check-patch.sh [-v]   (-v lists every hunk, not only unmarked ones)
set -euo pipefail

crate=monoio
version=0.2.4
sha256=3bd0f8bcde87b1949f95338b547543fcab187bc7e7a5024247e359a5e828ba6a
here="$(cd "$(dirname "$0")" && pwd)"
verbose=0
[ "${1:-}" = "-v" ] && verbose=1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
file="$work/$crate-$version.crate"

ok_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]; }

# 1. cargo's download cache.
for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate-$version.crate"; do
  if ok_sha "$f"; then cp "$f" "$file"; break; fi
done
# 2. crates.io's download host.
if ! ok_sha "$file" && command -v curl >/dev/null; then
  curl -sSfL --connect-timeout 20 --max-time 120 -o "$file" \
    "https://static.crates.io/crates/$crate/$crate-$version.crate" || true
fi
# 3. cargo, in a throwaway package (bounded; uses cargo's own registry settings).
if ! ok_sha "$file" && command -v cargo >/dev/null; then
  mkdir -p "$work/p/src"
  printf '[package]\nname = "check-patch-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = { version = "=%s", default-features = false }\n\n[workspace]\n' \
    "$crate" "$version" >"$work/p/Cargo.toml"
  : >"$work/p/src/lib.rs"
  (cd "$work/p" && timeout 300 cargo fetch --quiet) || true
  for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate-$version.crate"; do
    if ok_sha "$f"; then cp "$f" "$file"; break; fi
  done
fi
if ! ok_sha "$file"; then
  echo "check-patch: could not get $crate $version from crates.io (or its SHA-256 differs)" >&2
  exit 2
fi
tar xzf "$file" -C "$work"
pristine="$work/$crate-$version"

# Files of ringway's own that have no upstream counterpart (.cargo-ok is written by cargo when
# it unpacks a crate, not part of the package).
excludes=(-x RINGWAY-PATCH.md -x check-patch.sh -x Cargo.lock -x .cargo-ok)
set +e
diff -rN --unified=0 "${excludes[@]}" "$pristine" "$here" >"$work/diff"
rc=$?
set -e
if [ "$rc" -gt 1 ]; then
  echo "check-patch: diff failed" >&2
  exit 2
fi

# One line per hunk: "<file> <first new line> <added lines> <marked 0/1>".
awk -v new="$here/" '
  function flush() {
    if (inhunk) print file, start, added, marked
    inhunk = 0
  }
  /^diff / { flush(); hdr = 2; next }
  hdr > 0 && /^--- / { hdr--; next }
  hdr > 0 && /^\+\+\+ / {
    hdr--; f = substr($0, 5); sub(/\t.*/, "", f); sub("^" new, "", f); file = f; next
  }
  /^Binary files / { flush(); print "BINARY", $0; next }
  /^@@ / {
    flush(); inhunk = 1; added = 0; marked = 0
    split($3, a, ","); start = substr(a[1], 2) + 0
    next
  }
  inhunk && /^\+/ { added++; if (index($0, "ringway patch")) marked = 1; next }
  END { flush() }
' "$work/diff" >"$work/hunks"

total=0
bad=0
while read -r f start added marked; do
  if [ "$f" = BINARY ]; then
    echo "UNCHECKABLE $start $added $marked"
    bad=$((bad + 1))
    continue
  fi
  total=$((total + 1))
  if [ "$added" -eq 0 ] && [ "$marked" -eq 0 ] && [ -f "$here/$f" ]; then
    # Only deletions, after new line $start: the mark goes on a neighbouring line.
    lo=$((start > 0 ? start : 1))
    if sed -n "${lo},$((start + 1))p" "$here/$f" | grep -q 'ringway patch'; then
      marked=1
    fi
  fi
  if [ "$added" -eq 0 ] && [ ! -f "$here/$f" ]; then
    echo "DELETED   $f (an upstream file is missing here)"
    bad=$((bad + 1))
    continue
  fi
  if [ "$marked" -eq 1 ]; then
    [ "$verbose" -eq 1 ] && echo "marked    $f:$start (+$added)"
  else
    echo "UNMARKED  $f:$start (+$added)"
    bad=$((bad + 1))
  fi
done <"$work/hunks"

echo "check-patch: $total changed hunks against $crate $version, $bad without a 'ringway patch' mark"
[ "$bad" -eq 0 ]
