#!/bin/sh
# shmbctl links as an operator uses it: two real brokers on loopback, B
# dialing A ("east"), each in its own SHMB_DIR.  The table and one link in
# full on both sides, --json (checked with jq), byte counts that add up
# after a pub, a SIGKILLed peer seen from the other side, its return at a
# higher generation, --watch, and wrong use.  Prints a RESULT line like
# the C test programs.  Usage: test-links-cli.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); echo "  $1 ...passed"; }
bad() { failed=$((failed + 1)); echo "  $1 ...FAILED: $2"; }
skip() { skipped=$((skipped + 1)); echo "  $1 ...SKIPPED: $2"; }
ctl_a() { SHMB_DIR=$adir "$build/shmbctl" "$@"; }
ctl_b() { SHMB_DIR=$bdir "$build/shmbctl" "$@"; }
oneline() { tr '\n' '|'; }

adir=$(mktemp -d /dev/shm/shmb-links-cli-a.XXXXXX)
bdir=$(mktemp -d /dev/shm/shmb-links-cli-b.XXXXXX)
cdir=$(mktemp -d /dev/shm/shmb-links-cli-c.XXXXXX)
key=$(mktemp /dev/shm/shmb-links-cli-key.XXXXXX)
apid= bpid= cpid=
trap 'kill -9 $apid $bpid $cpid 2>/dev/null; wait 2>/dev/null
      rm -rf "$adir" "$bdir" "$cdir" "$adir.log" "$bdir.log" "$cdir.log" "$key" "$adir.err"' EXIT

# every check here reads the JSON listing
if ! command -v jq >/dev/null; then
	for t in no_links_neither no_links_listening links_ready_both links_table pub_counts_add_up \
		messages_arrive link_detail json_valid peer_killed peer_back no_such_link watch_frames bad_usage \
		any_uid_lists_links listener_waits; do
		skip "$t" "jq is not installed (tools/install-deps.sh installs it)"
	done
	echo "RESULT test-links-cli passed=$passed failed=$failed skipped=$skipped"
	exit 0
fi

# the pre-shared key: 64 hex digits, mode 0600 (mktemp's)
if command -v openssl >/dev/null; then
	openssl rand -hex 32 >"$key"
else
	od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$key"; echo >>"$key"
fi
chmod 0600 "$key"

# until DEADLINE_S CMD...: run CMD every 0.1 s until it succeeds; 1 when
# the deadline passes first.  The machine may be busy: deadlines are long.
until_ok() {
	end=$(($(date +%s) + $1)); shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -ge "$end" ] && return 1
		sleep 0.1
	done
}

# link NAME of a side (a or b), one field: ctl_x links --json | jq
field() { # SIDE JQ-EXPR-ON-THE-LINK
	"ctl_$1" links --json 2>/dev/null | jq -r ".links[] | select(.name == \"east\") | $2"
}
is_true() { # SIDE JQ-CONDITION-ON-THE-LINK
	[ "$(field "$1" "$2")" = true ]
}

free_port() {
	if command -v python3 >/dev/null; then
		python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
	else
		echo $((20000 + ($$ * 7 + $(date +%N | sed 's/^0*//;s/^$/0/')) % 30000))
	fi
}

start_a() { # the listener, on its directory (again after a kill)
	"$build/shmbd" --dir "$adir" --listen "127.0.0.1:$port" --link-key "$key" \
		--link-heartbeat-ms 100 --link-timeout-ms 500 2>>"$adir.log" &
	apid=$!
	until_ok 20 ctl_a status && grep -q "listening on 127.0.0.1:$port" "$adir.log"
}

# A: a port nobody holds (another test may take the one we found: try again)
tries=0
while :; do
	port=$(free_port)
	start_a && break
	kill -9 $apid 2>/dev/null; wait $apid 2>/dev/null
	tries=$((tries + 1))
	if [ $tries -ge 5 ]; then
		echo "broker A did not start:"; cat "$adir.log"
		echo "RESULT test-links-cli passed=$passed failed=1 skipped=$skipped"
		exit 1
	fi
done

# a broker with no links at all says so, and so does a listener nobody dialed yet
"$build/shmbd" --dir "$cdir" 2>"$cdir.log" &
cpid=$!
if until_ok 20 env SHMB_DIR="$cdir" "$build/shmbctl" status; then
	out=$(SHMB_DIR=$cdir "$build/shmbctl" links 2>&1); rc=$?
	json=$(SHMB_DIR=$cdir "$build/shmbctl" links --json 2>&1)
	if [ $rc = 0 ] && echo "$out" | grep -q "^no links: this broker neither dials nor listens" &&
		echo "$json" | jq -e '.links == [] and .listening == false' >/dev/null; then
		ok "no_links_neither"
	else
		bad "no_links_neither" "exit $rc: $out / $json"
	fi
else
	bad "no_links_neither" "broker C did not start: $(oneline <"$cdir.log")"
fi
kill $cpid; wait $cpid 2>/dev/null; cpid=
out=$(ctl_a links 2>&1); rc=$?
if [ $rc = 0 ] && echo "$out" | grep -q "^no links yet: this broker listens for them" &&
	ctl_a links --json | jq -e '.links == [] and .listening == true' >/dev/null; then
	ok "no_links_listening"
else
	bad "no_links_listening" "exit $rc: $out"
fi

# B dials A and bridges t; a kept session on A collects what comes over
ctl_a sub t --session far --count 0 >/dev/null 2>&1
"$build/shmbd" --dir "$bdir" --link "east=127.0.0.1:$port" --bridge t --link-key "$key" \
	--link-heartbeat-ms 100 --link-timeout-ms 500 2>"$bdir.log" &
bpid=$!
if until_ok 30 is_true b '.state == "ready"' && until_ok 30 is_true a '.state == "ready"' &&
	is_true b '.role == "dialer" and .address == "127.0.0.1:'"$port"'" and .generation >= 1' &&
	is_true a '.role == "listener" and .address == "127.0.0.1:'"$port"'"'; then
	ok "links_ready_both"
else
	bad "links_ready_both" "B: $(ctl_b links --json 2>&1) A: $(ctl_a links --json 2>&1) $(tail -n 5 "$bdir.log" | oneline)"
fi
out_b=$(ctl_b links) out_a=$(ctl_a links)
if echo "$out_b" | grep -q '^NAME  *ROLE  *STATE  *PEER  *GEN  *BACKOFF  *SENT  *ACKED  *REPLAYED  *RECEIVED  *LAST REASON$' &&
	echo "$out_b" | grep -q "^east  *dialer  *ready  *127.0.0.1:$port " &&
	echo "$out_a" | grep -q "^east  *listener  *ready  *127.0.0.1:[0-9]"; then
	ok "links_table"
else
	bad "links_table" "B: $(echo "$out_b" | oneline) A: $(echo "$out_a" | oneline)"
fi

# N messages on B's t: B sent bytes, A routed them all and said so
n=200
seq 1 $n | ctl_b pub t
# acked == sent and A's received == B's sent: the bytes of both ends agree
agree() {
	s=$(field b .sent) k=$(field b .acked) r=$(field a .received)
	[ -n "$s" ] && [ "$s" -gt 0 ] && [ "$s" = "$k" ] && [ "$s" = "$r" ]
}
if until_ok 30 agree && is_true b ".msgs_out == $n" &&
	is_true a ".msgs_in == $n and .no_topic == 0 and .sent == 0"; then
	ok "pub_counts_add_up"
else
	bad "pub_counts_add_up" "B: $(ctl_b links --json 2>&1) A: $(ctl_a links --json 2>&1)"
fi
got=$(ctl_a sub t --session far --count $n --timeout 20 2>&1 | wc -l)
[ "$got" = $n ] && ok "messages_arrive" || bad "messages_arrive" "A's subscriber got $got of $n"

out=$(ctl_b links east)
if echo "$out" | grep -q '^name  *east$' && echo "$out" | grep -q '^role  *dialer, dials 127.0.0.1:'"$port" &&
	echo "$out" | grep -q '^state  *ready, generation [0-9]' &&
	echo "$out" | grep -q "^messages  *$n out, 0 in" &&
	echo "$out" | grep -q '^events (oldest first' && echo "$out" | grep -q '  up (127.0.0.1:' &&
	ctl_a links east | grep -q "^peer asks for  *1 topic pattern(s): t$"; then
	ok "link_detail"
else
	bad "link_detail" "$(echo "$out" | oneline) A: $(ctl_a links east | oneline)"
fi

if ctl_b links --json | jq -e '.listening == false and (.links | length == 1)' >/dev/null &&
	ctl_a links --json | jq -e '.listening == true and .links[0].peer_topics == ["t"]' >/dev/null &&
	ctl_b links east --json | jq -e '.link.name == "east" and .link.state == "ready" and
		(.link.peer_broker | test("^[0-9a-f]{16}$")) and (.link.idle_ms | type == "number") and
		(.events | length > 0) and (.events | map(.text) | any(startswith("up (")))' >/dev/null; then
	ok "json_valid"
else
	bad "json_valid" "$(ctl_b links east --json 2>&1)"
fi

# A is killed: B sees the link go down, says why, and redials
gen0=$(field b .generation)
kill -9 $apid; wait $apid 2>/dev/null; apid=
down() { is_true b '.state != "ready" and .last_reason != ""'; }
if until_ok 30 down &&
	ctl_b links east --json | jq -e '.events | map(.text) | any(startswith("down: "))' >/dev/null &&
	ctl_b links | grep -q "^east  *dialer  *[a-z]* .*$(field b .last_reason)\$"; then
	ok "peer_killed"
else
	bad "peer_killed" "$(ctl_b links east 2>&1 | oneline)"
fi

# A again on its directory: the link comes back from links/, B is ready
# again at a higher attempt generation, and the byte counts carried over
if start_a && until_ok 30 is_true b ".state == \"ready\" and .generation > $gen0" &&
	until_ok 30 is_true a '.state == "ready"' && agree; then
	ok "peer_back"
else
	bad "peer_back" "gen was $gen0; B: $(ctl_b links --json 2>&1) A: $(ctl_a links --json 2>&1)"
fi

ctl_b links nosuch >/dev/null 2>"$adir.err"; r1=$?
ctl_b links nosuch --json >/dev/null 2>>"$adir.err"; r2=$?
if [ $r1 = 1 ] && [ $r2 = 1 ] && [ "$(grep -c "no link 'nosuch'" "$adir.err")" = 2 ]; then
	ok "no_such_link"
else
	bad "no_such_link" "exits $r1 $r2: $(oneline <"$adir.err")"
fi

frames=$(ctl_b links --watch --interval 0.1 --count 3 | grep -c '^NAME ')
one=$(ctl_b links east --watch --interval 0.1 --count 2 | grep -c '^name  *east$')
[ "$frames" = 3 ] && [ "$one" = 2 ] && ok "watch_frames" || bad "watch_frames" "$frames and $one frames"

ctl_b links east extra >/dev/null 2>&1; r1=$?
ctl_b links --interval 0 >/dev/null 2>&1; r2=$?
[ $r1 = 2 ] && [ $r2 = 2 ] && ok "bad_usage" || bad "bad_usage" "exits $r1 $r2"

# links are the broker's: any uid lists them (docs/operations.md)
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
	skip "any_uid_lists_links" "needs root and setpriv to run shmbctl as nobody"
else
	chmod 0755 "$bdir"
	out=$(SHMB_DIR=$bdir setpriv --reuid=65534 --regid=65534 --clear-groups "$build/shmbctl" links --json 2>&1)
	if echo "$out" | jq -e '.links[0].name == "east"' >/dev/null; then
		ok "any_uid_lists_links"
	else
		bad "any_uid_lists_links" "$out"
	fi
fi

# B is killed: A's listener link stays, waiting for B to dial in again
kill -9 $bpid; wait $bpid 2>/dev/null; bpid=
if until_ok 30 is_true a '.state == "waiting" and .last_reason != "" and .idle_ms == null' &&
	ctl_a links | grep -q "^east  *listener  *waiting "; then
	ok "listener_waits"
else
	bad "listener_waits" "$(ctl_a links east 2>&1 | oneline)"
fi

echo "RESULT test-links-cli passed=$passed failed=$failed skipped=$skipped"
[ $failed -eq 0 ]
