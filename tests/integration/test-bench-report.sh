#!/bin/sh
# bench/report.sh on made-up result lines: medians, min-max, the shmb/peer
# ratio, a figure with loss flagged, a spinning row compared with shmb's
# spinning row, a remote link's TCP baseline compared with the link's rows
# (not with the local ones), a peer not measured listed with its reason.  Prints a
# RESULT line like the C test programs.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "  $1 ...passed"; }
bad() { failed=$((failed + 1)); echo "  $1 ...FAILED: $2"; }
d=$(mktemp -d /tmp/shmb-report-test.XXXXXX)
trap 'rm -rf "$d"' EXIT
t=$(printf '\t')
{
	for r in 0 1 2; do
		echo "@R${t}shmb spin${t}oneway${t}64${t}0${t}$r${t}$((4000000 + r * 1000000)).0${t}-1${t}-1${t}-1${t}-1${t}10${t}10${t}0${t}0${t}0${t}-"
		echo "@R${t}AF_UNIX seqpacket${t}oneway${t}64${t}0${t}$r${t}$((400000 + r * 100000)).0${t}-1${t}-1${t}-1${t}-1${t}10${t}10${t}0${t}0${t}0${t}-"
		echo "@R${t}shmb spin${t}rtt${t}64${t}0${t}$r${t}-1${t}$((10 + r))${t}50${t}90${t}99${t}5${t}5${t}0${t}0${t}0${t}-"
		echo "@R${t}iceoryx spin${t}rtt${t}64${t}0${t}$r${t}-1${t}5${t}40${t}80${t}90${t}5${t}5${t}0${t}0${t}0${t}-"
		# a remote link beside its TCP baseline: compared with each other only
		echo "@R${t}shmb link${t}link-oneway${t}64${t}0${t}$r${t}$((900000 + r * 100000)).0${t}-1${t}-1${t}-1${t}-1${t}10${t}10${t}0${t}0${t}0${t}-"
		echo "@R${t}tcp${t}link-oneway${t}64${t}0${t}$r${t}$((200000 + r * 50000)).0${t}-1${t}-1${t}-1${t}-1${t}10${t}10${t}0${t}0${t}0${t}-"
		echo "@R${t}shmb link block${t}link-rtt${t}64${t}0${t}$r${t}-1${t}$((300 + 10 * r))${t}900${t}990${t}999${t}5${t}5${t}0${t}0${t}0${t}-"
		echo "@R${t}tcp${t}link-rtt${t}64${t}0${t}$r${t}-1${t}$((30 + r))${t}60${t}90${t}99${t}5${t}5${t}0${t}0${t}0${t}-"
	done
	echo "@R${t}lossy${t}oneway${t}64${t}0${t}0${t}100.0${t}-1${t}-1${t}-1${t}-1${t}10${t}7${t}3${t}0${t}0${t}-"
	echo "@S${t}nng ipc${t}not built: install it"
} >"$d/raw"
"$top/bench/report.sh" "$d/raw" "$d/out" >"$d/md" 2>&1
# medians 5 M and 500 k: shmb is 10x the socket; min-max from the 3 runs
grep -q '^| shmb spin | 5.00 M (4.00 M–6.00 M) |' "$d/md" && ok "median_min_max" ||
	bad "median_min_max" "$(grep '^| shmb spin' "$d/md" | head -1)"
grep -q '^| AF_UNIX seqpacket | 500.0 k (400.0 k–600.0 k) | 10× |' "$d/md" && ok "ratio_same_run" ||
	bad "ratio_same_run" "$(grep '^| AF_UNIX' "$d/md")"
grep -q '^| lossy | .*3 missing, 0 out of order: does not count' "$d/md" && ok "loss_flagged" ||
	bad "loss_flagged" "$(grep '^| lossy' "$d/md")"
# latency: shmb spin p50 median 11, iceoryx spin 5: shmb / it = 2.20x, vs shmb spin
grep -q '^| iceoryx spin | 5.00 (5.00–5.00) | 40.0 | 80.0 | 90.0 | 2.20× (vs shmb spin) |' "$d/md" && ok "latency_ratio" ||
	bad "latency_ratio" "$(grep '^| iceoryx spin' "$d/md")"
# the link rows: 1.00 M over TCP's 250 k; 310 us over TCP's 31 us, vs the link's blocking row
grep -q '^| tcp | 250.0 k (200.0 k–300.0 k) | 4.00× |' "$d/md" && ok "link_ratio" ||
	bad "link_ratio" "$(grep '^| tcp | 2' "$d/md")"
grep -q '^| tcp | 31.0 (30.0–32.0) | 60.0 | 90.0 | 99.0 | 10× (vs shmb link block) |' "$d/md" && ok "link_latency_ratio" ||
	bad "link_latency_ratio" "$(grep '^| tcp | 3' "$d/md")"
grep -q '^- nng ipc: not built: install it' "$d/md" && ok "skip_listed" || bad "skip_listed" "$(tail -3 "$d/md")"
echo "RESULT test-bench-report passed=$passed failed=$failed skipped=0"
[ $failed -eq 0 ]
