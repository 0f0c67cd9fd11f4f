#!/bin/sh
# make bench: run every benchmark program once, one at a time (the machine
# has few CPUs; two benchmarks at once would measure each other), collect
# their result lines (bench/result.h) in $BUILD/bench/raw.txt, and turn
# them into $BUILD/bench/results.md and the plots (bench/report.sh).
# SHMB_BENCH_QUICK=1 (make bench QUICK=1): a tenth of every count.
set -eu
build=${1:-build}
dir="$build/bench"
raw="$dir/raw.txt"
out="$dir/results.md"
start=$(date +%s)
install="sudo tools/install-deps.sh --bench"
: >"$raw"
# the last run's plots and their data go: only this run's are shown
rm -f "$dir"/*.dat "$dir"/*.dat.[01] "$dir"/*.png "$dir"/*.gp "$dir"/*.names

run() { # NAME: one program, its lines into raw (and the rest on the screen)
	echo "== $1" >&2
	if "$dir/$1" >"$dir/$1.out"; then :; else
		printf '@S\t%s\texited with status %s (see %s)\n' "$1" "$?" "$dir/$1.out" >>"$raw"
	fi
	grep '^@' "$dir/$1.out" >>"$raw" || true
	grep -v '^@' "$dir/$1.out" >&2 || true
}

run bench-ring
run bench-lane
run bench-broker
run bench-ops
run bench-links
for p in sockets zmq nng mosquitto iceoryx; do
	if [ -x "$dir/peer-$p" ]; then
		run "peer-$p"
	else
		case $p in
		zmq) what="ZeroMQ ipc (libzmq3-dev)" ;;
		nng) what="nng ipc (libnng-dev)" ;;
		mosquitto) what="Mosquitto (mosquitto, libmosquitto-dev)" ;;
		iceoryx) what="iceoryx (iceoryx, libiceoryx-binding-c-dev)" ;;
		*) what=$p ;;
		esac
		printf '@S\t%s\tnot built: install it with %s, then make bench again\n' "$what" "$install" >>"$raw"
	fi
done

{
	echo "# shmb benchmarks — $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), kernel $(uname -r)," \
		"$(bench_reps=${SHMB_BENCH_REPS:-3}; echo "$bench_reps") repetitions per figure: median (min–max)." \
		"${SHMB_BENCH_QUICK:+QUICK run: a tenth of every count.}"
	echo "Ratios are shmb / the row's transport, from this same run; for latency the"
	echo "spinning rows are compared with shmb spin and the blocking ones with shmb block;"
	echo "in the remote-link tables, with shmb's link rows (shmb link spin, shmb link block)."
	bench/report.sh "$raw" "$dir"
	echo
	echo "Run time: $(( $(date +%s) - start )) s."
} >"$out"
cat "$out"
echo
echo "results written to $out (raw lines: $raw)"
