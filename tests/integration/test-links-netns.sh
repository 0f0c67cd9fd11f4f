#!/bin/sh
# Remote links (issue 6, docs/links.md) across two network namespaces
# joined by a veth pair: broker A listens in one, broker B dials it from
# the other and bridges topic t.  A subscriber and a publisher on each
# side, the link cut twice by taking an end of the veth pair down for
# longer than the heartbeat timeout: each subscriber must get every
# message of both publishers exactly once, in order per publisher, and
# the logs must show the link going down and coming back.
#
# Needs root and a working `ip netns add`; otherwise it prints one SKIP
# line saying why and counts one skip.  That fallback is tested too (as
# uid 65534, and as a user namespace's root whose `ip netns add` fails).
# Prints a RESULT line like the C test programs.
#   Usage: test-links-netns.sh BUILD_DIR
#   SHMB_NETNS_N: messages per publisher (default 20000)
#   SHMB_NETNS_PROBE_ONLY=1: only decide whether the test can run here
#   (what the fallback tests use); creates nothing if it can
set -u
passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); echo "  $1 ...passed"; }
bad() { failed=$((failed + 1)); echo "  $1 ...FAILED: $2"; }
skip() { skipped=$((skipped + 1)); echo "  SKIP $1: $2"; }
result() { echo "RESULT test-links-netns passed=$passed failed=$failed skipped=$skipped"; }

# netns_missing: why this machine cannot run the test (nothing if it can)
netns_missing() {
	uid=$(id -u)
	if [ "$uid" -ne 0 ]; then
		echo "not root (uid $uid): network namespaces and veth pairs need root"
		return
	fi
	if ! command -v ip >/dev/null 2>&1; then
		echo "no 'ip' command (tools/install-deps.sh installs iproute2)"
		return
	fi
	probe=shmb-probe-$$
	if ! err=$(ip netns add "$probe" 2>&1); then
		echo "'ip netns add' failed (a container or chroot?): $(echo "$err" | head -n 1)"
		return
	fi
	ip netns del "$probe" 2>/dev/null
}

why=$(netns_missing)
if [ -n "$why" ]; then
	skip "test-links-netns" "$why"
	result
	exit 0
fi
if [ "${SHMB_NETNS_PROBE_ONLY:-}" = 1 ]; then
	echo "  network namespaces work here"
	result
	exit 0
fi

build=$(cd "${1:-build}" && pwd)
n=${SHMB_NETNS_N:-20000}

# ---- the fallback: the same probe where it must fail -------------------------

# probe_as LABEL WANT CMD...: the script's probe run under CMD (root opens
# this file; the deprived shell reads it from stdin) prints the SKIP line
# with WANT as its reason, counts one skip and exits 0
probe_as() {
	label=$1 want=$2
	shift 2
	out=$("$@" env SHMB_NETNS_PROBE_ONLY=1 sh -s -- "$build" <"$0" 2>&1)
	rc=$?
	if [ $rc -eq 0 ] && echo "$out" | grep -q "^  SKIP test-links-netns: $want" &&
		echo "$out" | grep -qx "RESULT test-links-netns passed=0 failed=0 skipped=1"; then
		ok "$label"
		echo "    it said: $(echo "$out" | head -n 1 | sed 's/^ *//')"
	else
		bad "$label" "exit $rc: $(echo "$out" | tr '\n' '|')"
	fi
}
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
if ! command -v setpriv >/dev/null 2>&1; then
	skip "skipped_when_not_root" "no setpriv to drop root with"
	skip "skipped_when_netns_fails" "no setpriv to drop root with"
else
	probe_as "skipped_when_not_root" "not root (uid 65534)" as_nobody
	# root inside a user namespace of its own, like a container's root:
	# id -u says 0, but `ip netns add` may not mount /run/netns
	if ! as_nobody unshare --user --map-root-user true 2>/dev/null; then
		skip "skipped_when_netns_fails" "uid 65534 may not create a user namespace here"
	else
		probe_as "skipped_when_netns_fails" "'ip netns add' failed" as_nobody unshare --user --map-root-user
	fi
fi

# ---- two namespaces, one veth pair --------------------------------------------

tag=$$
nsa=shmb-a-$tag nsb=shmb-b-$tag
va=shmb${tag}a vb=shmb${tag}b # interface names: at most 15 characters
# a /30 that exists only inside the two namespaces, never on the host
addra=10.213.77.1 addrb=10.213.77.2 port=7400
base=$(mktemp -d /dev/shm/shmb-netns-test.XXXXXX)
da=$base/a db=$base/b key=$base/link.key
made_a='' made_b='' pids='' broker_a='' broker_b=''
cleanup() {
	# shellcheck disable=SC2086
	[ -n "$pids$broker_a$broker_b" ] && kill $pids $broker_a $broker_b 2>/dev/null
	wait 2>/dev/null
	[ -n "$made_a" ] && ip netns del "$nsa" 2>/dev/null
	[ -n "$made_b" ] && ip netns del "$nsb" 2>/dev/null
	rm -rf "$base"
}
trap cleanup EXIT
trap 'exit 129' HUP INT TERM

# give_up WHAT: a setup step failed; nothing after it can run
give_up() {
	bad "setup" "$1"
	for f in "$base"/*.log; do
		[ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
	done
	result
	exit 1
}

ip netns add "$nsa" || give_up "ip netns add $nsa"
made_a=1
ip netns add "$nsb" || give_up "ip netns add $nsb"
made_b=1
if ! err=$(ip link add "$va" netns "$nsa" type veth peer name "$vb" netns "$nsb" 2>&1); then
	# a kernel without veth is a machine that cannot run the test
	skip "test-links-netns" "no veth pair: $err"
	result
	exit 0
fi
# `ip -n` and `ip netns exec` enter the namespace and remount /sys; in a
# chroot whose root is not a mount point that fails ("mount --make-rslave
# /" failed): such a machine cannot run the test either
if ! err=$(ip -n "$nsa" link set lo up 2>&1); then
	skip "test-links-netns" "cannot enter a network namespace here (a chroot?): $err"
	result
	exit 0
fi
if ! { ip -n "$nsa" addr add "$addra/30" dev "$va" && ip -n "$nsb" addr add "$addrb/30" dev "$vb" &&
	ip -n "$nsb" link set lo up &&
	ip -n "$nsa" link set "$va" up && ip -n "$nsb" link set "$vb" up; }; then
	give_up "addresses and links"
fi

# the pre-shared key: 64 hex digits, mode 0600
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$key" && echo >>"$key") ||
	give_up "writing the key file"

# count FILE TEXT: lines of FILE holding TEXT
count() { c=$(grep -c -- "$2" "$1" 2>/dev/null); echo "${c:-0}"; }
# wait_log FILE TEXT N SECONDS: until FILE has N lines holding TEXT
wait_log() {
	i=0
	while [ "$(count "$1" "$2")" -lt "$3" ]; do
		i=$((i + 1)); [ $i -gt $(($4 * 20)) ] && return 1
		sleep 0.05
	done
}
# wait_until SECONDS CMD...: until CMD succeeds
wait_until() {
	limit=$(($1 * 20)); shift
	i=0
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -gt $limit ] && return 1
		sleep 0.05
	done
}
ctl_a() { ip netns exec "$nsa" "$build/shmbctl" --dir "$da" "$@"; }
ctl_b() { ip netns exec "$nsb" "$build/shmbctl" --dir "$db" "$@"; }

hb="--link-heartbeat-ms 100 --link-timeout-ms 500"
# shellcheck disable=SC2086
ip netns exec "$nsa" "$build/shmbd" --dir "$da" --listen "$addra:$port" --link-key "$key" $hb \
	2>"$base/a.log" &
broker_a=$!
# shellcheck disable=SC2086
ip netns exec "$nsb" "$build/shmbd" --dir "$db" --link "east=$addra:$port" --link-key "$key" \
	--bridge t $hb 2>"$base/b.log" &
broker_b=$!
wait_until 30 ctl_a status || give_up "broker A did not start"
wait_until 30 ctl_b status || give_up "broker B did not start"
if wait_log "$base/a.log" "link east: up" 1 30 && wait_log "$base/b.log" "link east: up" 1 30 &&
	wait_log "$base/a.log" "asks for 1 topic pattern(s): t" 1 30; then
	ok "link_up_across_namespaces"
else
	give_up "the link did not come up within 30 s"
fi

# ---- streams both ways, the link cut twice ------------------------------------

# subscribed: the side's topic t has a subscriber
subscribed_a() { ctl_a topics | awk '$1 == "t" && $4 >= 1 { f = 1 } END { exit !f }'; }
subscribed_b() { ctl_b topics | awk '$1 == "t" && $4 >= 1 { f = 1 } END { exit !f }'; }
# (clients started in the background run ip netns exec themselves, so that
# $! is the client: ip execs it)
ip netns exec "$nsa" "$build/shmbctl" --dir "$da" sub t --count $((2 * n)) --timeout 60 \
	>"$base/a.out" 2>"$base/a.sub.err" &
sub_a=$!
ip netns exec "$nsb" "$build/shmbctl" --dir "$db" sub t --count $((2 * n)) --timeout 60 \
	>"$base/b.out" 2>"$base/b.sub.err" &
sub_b=$!
pids="$sub_a $sub_b"
wait_until 30 subscribed_a || give_up "A's subscriber never subscribed"
wait_until 30 subscribed_b || give_up "B's subscriber never subscribed"

# PREFIX-1 .. PREFIX-n, about 1000 a second, so the stream outlasts both cuts
lines() {
	seq -f "$1-%.0f" 1 "$n" | awk '{ print } NR % 100 == 0 { fflush(); system("sleep 0.1") }'
}
lines a | ip netns exec "$nsa" "$build/shmbctl" --dir "$da" pub t 2>"$base/a.pub.err" &
pub_a=$!
lines b | ip netns exec "$nsb" "$build/shmbctl" --dir "$db" pub t 2>"$base/b.pub.err" &
pub_b=$!
pids="$pids $pub_a $pub_b"
started=$(date +%s)
# both streams flowing across the link before the first cut
if wait_until 30 grep -q '^b-' "$base/a.out" && wait_until 30 grep -q '^a-' "$base/b.out"; then
	ok "streams_flowing_both_ways"
else
	bad "streams_flowing_both_ways" "no message crossed the link within 30 s"
fi

# cut K NS DEV: take DEV down in NS for 2 s (the timeout is 500 ms), wait
# until both brokers say the link is down, bring it up, wait until both
# say it is up again
cut() {
	k=$1 ns=$2 dev=$3
	down_a=$(count "$base/a.log" "link east: down") down_b=$(count "$base/b.log" "link east: down")
	up_a=$(count "$base/a.log" "link east: up") up_b=$(count "$base/b.log" "link east: up")
	ip -n "$ns" link set "$dev" down || bad "cut${k}" "ip -n $ns link set $dev down failed"
	sleep 2
	if wait_log "$base/a.log" "link east: down" $((down_a + 1)) 30 &&
		wait_log "$base/b.log" "link east: down" $((down_b + 1)) 30; then
		ok "cut${k}_both_see_link_down"
		echo "    A: $(grep -- 'link east: down' "$base/a.log" | tail -n 1 | sed 's/^.*link east: //')"
		echo "    B: $(grep -- 'link east: down' "$base/b.log" | tail -n 1 | sed 's/^.*link east: //')"
	else
		bad "cut${k}_both_see_link_down" "down lines: A $(count "$base/a.log" "link east: down"), B $(count "$base/b.log" "link east: down")"
	fi
	# the publishers still run: messages were published into a cut link
	if kill -0 "$pub_a" 2>/dev/null && kill -0 "$pub_b" 2>/dev/null; then
		ok "cut${k}_mid_stream"
	else
		bad "cut${k}_mid_stream" "a publisher had finished before the link came back (slow machine? lower the pace)"
	fi
	ip -n "$ns" link set "$dev" up || bad "cut${k}" "ip -n $ns link set $dev up failed"
	if wait_log "$base/a.log" "link east: up" $((up_a + 1)) 60 &&
		wait_log "$base/b.log" "link east: up" $((up_b + 1)) 60; then
		ok "cut${k}_link_back_up"
	else
		bad "cut${k}_link_back_up" "not up again within 60 s"
	fi
}
cut 1 "$nsb" "$vb"
cut 2 "$nsa" "$va"

# wait_exit PID SECONDS: its exit status, or 124 after SECONDS
wait_exit() {
	i=0
	while kill -0 "$1" 2>/dev/null; do
		i=$((i + 1)); [ $i -gt $(($2 * 20)) ] && { kill "$1" 2>/dev/null; wait "$1"; return 124; }
		sleep 0.05
	done
	wait "$1"
}
wait_exit "$pub_a" 120; rc_pa=$?
wait_exit "$pub_b" 120; rc_pb=$?
wait_exit "$sub_a" 120; rc_sa=$?
wait_exit "$sub_b" 120; rc_sb=$?
pids=
secs=$(($(date +%s) - started))
if [ $rc_pa -eq 0 ] && [ $rc_pb -eq 0 ] && [ $rc_sa -eq 0 ] && [ $rc_sb -eq 0 ]; then
	ok "clients_exit_0"
else
	bad "clients_exit_0" "pub A $rc_pa, pub B $rc_pb, sub A $rc_sa, sub B $rc_sb: $(cat "$base"/*.pub.err "$base"/*.sub.err | tr '\n' '|')"
fi

# check OUT: every a-i and b-i (1..n) exactly once, in order per prefix
check() {
	awk -v n="$n" '
	{
		lines++
		if (!match($0, /^[ab]-[0-9]+$/)) { junk++; next }
		p = substr($0, 1, 1); i = substr($0, 3) + 0
		if (i < 1 || i > n) { junk++; next }
		if (seen[$0]++) { dup++; next }
		if (i < last[p]) ooo++
		else last[p] = i
		got[p]++
	}
	END {
		miss = (n - got["a"]) + (n - got["b"])
		printf "%d lines: a %d, b %d; %d missing, %d twice, %d out of order, %d malformed\n",
			lines, got["a"], got["b"], miss, dup, ooo, junk
		exit !(lines == 2 * n && miss == 0 && dup == 0 && ooo == 0 && junk == 0)
	}' "$1"
}
for side in a b; do
	up=$(echo $side | tr ab AB)
	if sum=$(check "$base/$side.out"); then
		ok "${side}_subscriber_every_message_once_in_order"
		echo "    $up's subscriber: $sum"
	else
		bad "${side}_subscriber_every_message_once_in_order" "$sum"
	fi
done
echo "    $n messages each way, 2 cuts, $secs s from the first publish to the last delivery"

# the logs tell the story: two downs and three ups on each side
dn_a=$(count "$base/a.log" "link east: down") dn_b=$(count "$base/b.log" "link east: down")
u_a=$(count "$base/a.log" "link east: up") u_b=$(count "$base/b.log" "link east: up")
if [ "$dn_a" -ge 2 ] && [ "$dn_b" -ge 2 ] && [ "$u_a" -ge 3 ] && [ "$u_b" -ge 3 ] &&
	grep -q "nothing heard" "$base/a.log" "$base/b.log"; then
	ok "logs_show_cuts_and_recoveries"
else
	bad "logs_show_cuts_and_recoveries" "down A $dn_a B $dn_b, up A $u_a B $u_b"
fi

# both brokers stop cleanly on SIGTERM
kill -TERM "$broker_a" "$broker_b"
wait_exit "$broker_a" 30; rc_a=$?
wait_exit "$broker_b" 30; rc_b=$?
broker_a='' broker_b=''
if [ $rc_a -eq 0 ] && [ $rc_b -eq 0 ] && grep -q "segments consistent" "$base/a.log" &&
	grep -q "segments consistent" "$base/b.log"; then
	ok "brokers_stop_cleanly"
else
	bad "brokers_stop_cleanly" "exits A $rc_a, B $rc_b"
fi
if [ $failed -gt 0 ]; then
	for side in a b; do
		echo "--- broker $side's log (last 30 lines)"
		tail -n 30 "$base/$side.log"
	done
fi

result
[ $failed -eq 0 ]
