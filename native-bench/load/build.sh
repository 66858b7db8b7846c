#!/bin/sh
# Builds the C load generator into native-bench/load/build/loadgen with the machine's cc.
set -e
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/build"
${CC:-cc} -O2 -g -Wall -Wextra -Wno-unused-parameter -pthread -o "$here/build/loadgen" "$here/loadgen.c"
