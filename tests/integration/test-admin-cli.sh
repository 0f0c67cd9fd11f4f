#!/bin/sh
# shmbctl's admin verbs as a user types them: sessions, session NAME,
# topics, kick, --json (checked with jq), --watch.  Prints a RESULT line
# like the C test programs.  Usage: test-admin-cli.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); echo "  $1 ...passed"; }
bad() { failed=$((failed + 1)); echo "  $1 ...FAILED: $2"; }
skip() { skipped=$((skipped + 1)); echo "  $1 ...SKIPPED: $2"; }
ctl() { "$build/shmbctl" "$@"; }
. "$(dirname "$0")/lib.sh"

subpid=
suite_cleanup() { kill $subpid 2>/dev/null; }
broker_start admin-test

# wait_for TEXT CMD...: until CMD's output contains TEXT (deadline 10 s)
wait_for() {
	want=$1; shift
	i=0
	until "$@" 2>/dev/null | grep -q -- "$want"; do
		i=$((i + 1)); [ $i -gt 200 ] && return 1
		sleep 0.05
	done
}

# one detached session with 3 messages waiting, one attached reader
ctl sub news --session idle --count 0 >/dev/null 2>&1
ctl sub news --session live >/dev/null 2>&1 &
subpid=$!
wait_for '"name":"live","id":[0-9]*,"uid":[0-9]*,"pid":[0-9]*,"generation":1,"state":"attached"' \
	ctl sessions --json || bad "live_sub_attached" "never listed as attached"
# through the relay (SHMB_LANES=0): the topics' routed counts the
# messages the broker routed, and it routes none of a lane publisher's
# (test-admin session_figures checks what the figures say on lanes);
# "four" below goes on lanes
SHMB_LANES=0 ctl pub news one two three

out=$(ctl sessions)
if echo "$out" | grep -q '^idle .* detached .* block .* 3/' &&
	echo "$out" | grep -q '^live .* attached'; then
	ok "sessions_table"
else
	bad "sessions_table" "$(echo "$out" | tr '\n' '|')"
fi

if ! command -v jq >/dev/null; then
	skip "sessions_json" "jq is not installed (tools/install-deps.sh installs it)"
	skip "topics_json" "jq is not installed"
else
	if ctl sessions --json | jq -e '.sessions | length == 2 and
		(map(select(.name == "idle"))[0] | .state == "detached" and .rx_depth_msgs == 3 and
		 .detach_reason == "closed by its owner" and .policy == "block" and .ephemeral == false)' \
		>/dev/null; then
		ok "sessions_json"
	else
		bad "sessions_json" "$(ctl sessions --json)"
	fi
	if ctl topics --json | jq -e '.topics | length == 1 and .[0].name == "news" and
		.[0].subscribers == 2 and .[0].routed == 3' >/dev/null; then
		ok "topics_json"
	else
		bad "topics_json" "$(ctl topics --json)"
	fi
	if ctl status --json | jq -e '.sessions == 2 and .attached == 1 and .topics == 1' >/dev/null; then
		ok "status_json"
	else
		bad "status_json" "$(ctl status --json)"
	fi
	if ctl session idle --json | jq -e '.session.name == "idle" and
		(.events | map(.text) | any(startswith("created by pid")))' >/dev/null; then
		ok "session_json"
	else
		bad "session_json" "$(ctl session idle --json)"
	fi
fi

out=$(ctl session idle)
if echo "$out" | grep -q '^state  *detached' && echo "$out" | grep -q 'created by pid' &&
	echo "$out" | grep -q 'detached: closed by its owner' &&
	echo "$out" | grep -q '3 message(s) / .* not yet acknowledged'; then
	ok "session_detail"
else
	bad "session_detail" "$(echo "$out" | tr '\n' '|')"
fi

# the broker runs lanes (its default, not --no-lanes here), so the closed
# reader "idle" is spilled: its lanes are copied into its RX ring
# (nothing yet: "one two three" came through the relay), and session
# NAME says so
out=$(ctl session idle)
if echo "$out" | grep -q '^spool  *its lanes copied into its RX ring for .*: 0 record(s), 0 lane(s) let go when it was full$' &&
	{ ! command -v jq >/dev/null ||
	  ctl session idle --json | jq -e '.session.spilled == true and
		.session.spill_copied == 0 and .session.spill_let_go == 0 and .session.spill_s >= 0' >/dev/null; }; then
	ok "session_spool"
else
	bad "session_spool" "$(echo "$out" | tr '\n' '|') $(ctl session idle --json)"
fi

# a reader killed with SIGKILL: EXIT and its events say so (the broker's
# crash detection: BPF, or PIDFD_INFO_EXIT once the shell reaps it)
method=$(ctl status | sed -n 's/^crash detection *//p')
"$build/shmbctl" sub news --session crash >/dev/null 2>&1 &
crash=$!
wait_for '"name":"crash","id":[0-9]*,"uid":[0-9]*,"pid":[0-9]*,"generation":1,"state":"attached"' \
	ctl sessions --json
kill -9 $crash; wait $crash 2>/dev/null
case "$method" in
*"death only"*)
	skip "exit_reason_listed" "crash detection here is '$method': no reasons to list" ;;
*)
	if wait_for 'killed by SIGKILL' ctl sessions && ctl sessions | grep -q '^crash .*killed by SIGKILL' &&
		ctl session crash | grep -q "owner pid $crash killed by SIGKILL"; then
		ok "exit_reason_listed"
	else
		bad "exit_reason_listed" "($method) $(ctl session crash | tr '\n' '|')"
	fi ;;
esac
if ctl session idle | grep -q "^owner's end  *closed normally"; then
	ok "exit_reason_closed_normally"
else
	bad "exit_reason_closed_normally" "$(ctl session idle | tr '\n' '|')"
fi

# --watch: N frames, each a full table
frames=$(ctl sessions --watch --interval 0.1 --count 3 | grep -c '^NAME ')
[ "$frames" = 3 ] && ok "watch_frames" || bad "watch_frames" "$frames frames"

# kick: the live reader is fenced off and exits with an error; the
# session waits, detached, at generation 2, for its next owner
ctl kick live >/dev/null
i=0
while kill -0 $subpid 2>/dev/null; do
	i=$((i + 1)); [ $i -gt 200 ] && break
	sleep 0.05
done
if kill -0 $subpid 2>/dev/null; then
	bad "kick_fences_reader" "the kicked sub still runs"
else
	wait $subpid; rc=$?
	out=$(ctl sessions | grep '^live ')
	if [ $rc -eq 1 ] && echo "$out" | grep -q ' detached .*kicked by an admin'; then
		ok "kick_fences_reader"
	else
		bad "kick_fences_reader" "sub exit $rc; $out"
	fi
fi
subpid=
# its next owner gets what it had not acknowledged
ctl pub news four
out=$(ctl sub news --session live --count 1 --timeout 5 2>/dev/null)
[ "$out" = "four" ] && ok "kicked_session_resumes" || bad "kicked_session_resumes" "got '$out'"

ctl kick --delete idle >/dev/null
ctl session idle >/dev/null 2>"$dir.err"
rc=$?
if [ $rc -eq 1 ] && grep -q "no session 'idle'" "$dir.err"; then
	ok "kick_delete"
else
	bad "kick_delete" "exit $rc: $(cat "$dir.err")"
fi

# wrong use: usage errors (2), a clear refusal (1)
ctl session >/dev/null 2>&1; r1=$?
ctl sessions extra >/dev/null 2>&1; r2=$?
ctl kick live --uid abc >/dev/null 2>&1; r3=$?
ctl kick nosuch 2>"$dir.err"; r4=$?
if [ $r1 = 2 ] && [ $r2 = 2 ] && [ $r3 = 2 ] && [ $r4 = 1 ] && grep -q "no session 'nosuch'" "$dir.err"; then
	ok "bad_usage"
else
	bad "bad_usage" "exits $r1 $r2 $r3 $r4: $(cat "$dir.err")"
fi

# another uid sees only its own sessions and may not kick root's
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
	skip "other_uid_cli" "needs root and setpriv to run shmbctl as nobody"
else
	chmod 0755 "$dir"
	as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$build/shmbctl" "$@"; }
	as_nobody sub mine --session theirs --count 0 >/dev/null 2>&1
	own=$(as_nobody sessions | grep -c -v '^NAME')
	as_nobody kick live --uid 0 2>"$dir.err"; rc=$?
	all=$(ctl sessions | grep -c -v '^NAME')
	if [ "$own" = 1 ] && [ $rc = 1 ] && grep -q "may kick only its own" "$dir.err" && [ "$all" = 3 ]; then
		ok "other_uid_cli"
	else
		bad "other_uid_cli" "nobody saw $own, root $all; kick exit $rc: $(cat "$dir.err")"
	fi
fi
rm -f "$dir.err"

echo "RESULT test-admin-cli passed=$passed failed=$failed skipped=$skipped"
[ $failed -eq 0 ]
