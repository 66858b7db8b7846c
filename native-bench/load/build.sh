#!/bin/sh
# Builds the C load generator into native-bench/load/build/loadgen with the machine's cc.
# Compiles to a temporary file and renames it into place, so a runner that is executing the old
# binary meanwhile (a second run.mjs started while one runs) never finds a half-written or
# non-executable file; skips the compile when the binary is newer than the source and this script.
set -e
here=$(cd "$(dirname "$0")" && pwd)
out="$here/build/loadgen"
mkdir -p "$here/build"
if [ -x "$out" ] && [ "$out" -nt "$here/loadgen.c" ] && [ "$out" -nt "$0" ]; then exit 0; fi
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
${CC:-cc} -O2 -g -Wall -Wextra -Wno-unused-parameter -pthread -o "$tmp" "$here/loadgen.c"
mv -f "$tmp" "$out"
