#!/bin/sh
# make bench: run every benchmark once, one at a time (the machine has few
# CPUs; two benchmarks at once would measure each other), and keep the
# markdown it prints in $BUILD/bench/results.md.
set -eu
build=${1:-build}
out="$build/bench/results.md"
{
	echo "# shmb benchmarks — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, kernel $(uname -r)"
	"$build/bench/bench-ring"
	"$build/bench/bench-broker"
} | tee "$out"
echo
echo "results written to $out"
