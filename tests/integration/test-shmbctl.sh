#!/bin/sh
# shmbctl's scripting verbs against a real broker; prints a RESULT line
# like the C test programs.  Usage: test-shmbctl.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
top=$(cd "$(dirname "$0")/../.." && pwd)
passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); echo "  $1 ...passed"; }
bad() { failed=$((failed + 1)); echo "  $1 ...FAILED: $2"; }
skip() { skipped=$((skipped + 1)); echo "  SKIP $1: $2"; }
. "$top/tests/integration/lib.sh"

fxb=
suite_cleanup() { kill $fxb 2>/dev/null; wait $fxb 2>/dev/null; rm -rf "$dir".fx*; }
broker_start ctl-test

# arguments and stdin, in order, to a named session subscribed first
"$build/shmbctl" sub t --session s1 --count 0 >/dev/null 2>&1
"$build/shmbctl" pub t one two && printf 'three\nfour\n' | "$build/shmbctl" pub t
out=$("$build/shmbctl" sub t --session s1 --count 4 --timeout 5 | tr '\n' ' ')
[ "$out" = "one two three four " ] && ok "pub_args_and_stdin" || bad "pub_args_and_stdin" "got '$out'"

# --timeout without messages: exit 3
"$build/shmbctl" sub t --session s1 --timeout 0.2 >/dev/null 2>&1
rc=$?
[ $rc -eq 3 ] && ok "sub_timeout_exit_3" || bad "sub_timeout_exit_3" "exit $rc"

# --null separates with NUL
"$build/shmbctl" pub t "a b" c
out=$("$build/shmbctl" sub t --session s1 --count 2 --null --timeout 5 | tr '\0' '|')
[ "$out" = "a b|c|" ] && ok "sub_null" || bad "sub_null" "got '$out'"

# bad values are refused with a usage error
"$build/shmbctl" sub t --count abc >/dev/null 2>&1
rc=$?
[ $rc -eq 2 ] && ok "bad_count_refused" || bad "bad_count_refused" "exit $rc"

# the broker SIGKILLed, one session's rx header damaged: the restarted
# broker says in `status` what it re-adopted and what it moved aside
"$build/shmbctl" sub t --session s2 --count 0 >/dev/null 2>&1
kill -9 $broker; wait $broker 2>/dev/null
rx=$(ls -d "$dir"/sessions/*/rx | head -n 1)
printf '\177' | dd of="$rx" bs=1 seek=40 conv=notrunc 2>/dev/null
broker_spawn
broker_wait # if it does not answer, the check below says so
out=$("$build/shmbctl" status | grep '^last start')
case "$out" in
*"1 session(s) re-adopted, 1 quarantined"*) ok "status_after_restart" ;;
*) bad "status_after_restart" "got '$out'" ;;
esac

# a sub killed with SIGKILL five times resumes each time, and the broker
# killed twice restarts with everything: the demo's proof
kill $broker; wait $broker 2>/dev/null
if DEMO_MESSAGES=20000 "$top/tools/demo.sh" "$build" >"$dir.demo" 2>&1; then
	ok "sub_killed_and_resumed"
else
	bad "sub_killed_and_resumed" "$(tail -n 8 "$dir.demo" | tr '\n' ' ')"
fi
rm -f "$dir.demo"

# shmbd's config file: an unknown key is refused naming its line; a key
# sets what its flag sets; a flag on the command line wins over the file
cfg=$dir.conf
printf '# a comment\n\nsession-ttl = 7\nbogus = 1\n' >"$cfg"
msg=$("$build/shmbd" --config "$cfg" 2>&1)
rc=$?
case "$rc:$msg" in
"2:"*"$cfg:4: unknown key 'bogus'"*) ok "config_unknown_key" ;;
*) bad "config_unknown_key" "exit $rc, '$msg'" ;;
esac
cfgdir=$dir.cfgdir
flagdir=$dir.flagdir
printf 'dir = %s\nsession-ttl = 7\nquiet = yes\n' "$cfgdir" >"$cfg"
served() { # DIR ARGS...: start shmbd with ARGS; does it answer on DIR?
	d=$1; shift
	"$build/shmbd" "$@" 2>>"$dir.log" &
	pid=$!
	i=0 r=1
	while [ $i -lt 100 ]; do
		SHMB_DIR=$d "$build/shmbctl" status >/dev/null 2>&1 && { r=0; break; }
		i=$((i + 1)); sleep 0.05
	done
	kill $pid 2>/dev/null; wait $pid 2>/dev/null
	return $r
}
if served "$cfgdir" --config "$cfg" && served "$flagdir" --config "$cfg" --dir "$flagdir"; then
	ok "config_file_and_flags"
else
	bad "config_file_and_flags" "the broker did not serve where the file and then the flag said"
fi
rm -rf "$cfg" "$cfgdir" "$flagdir"
# lanes are on by default (the broker makes SHMB_DIR/lanes); --no-lanes,
# or no-lanes = yes in the file, turns them off; --lanes after the file's
# no-lanes turns them on again
ld=$dir.lanes
printf 'no-lanes = yes\nquiet = yes\n' >"$cfg"
lanes_made() { [ -d "$ld/lanes" ]; }
if served "$ld" --dir "$ld" --quiet && lanes_made && rm -rf "$ld" &&
	served "$ld" --dir "$ld" --quiet --no-lanes && ! lanes_made && rm -rf "$ld" &&
	served "$ld" --dir "$ld" --config "$cfg" && ! lanes_made && rm -rf "$ld" &&
	served "$ld" --dir "$ld" --config "$cfg" --lanes && lanes_made; then
	ok "lanes_default_and_no_lanes"
else
	bad "lanes_default_and_no_lanes" "lanes/ made or not made against the flags and the file"
fi
rm -rf "$cfg" "$ld"

# ---- crash forensics: why a session's owner went (docs/design/service.md) ---
# Each case starts its own broker; every wait has a deadline.
fx=$dir.fx
ec=$build/tests/exit-client
until_true() { # SECONDS COMMAND...: run COMMAND until it succeeds, at most SECONDS
	_ut=$(($1 * 20)); shift
	while [ $_ut -gt 0 ]; do
		"$@" && return 0
		_ut=$((_ut - 1)); sleep 0.05
	done
	return 1
}
in_log() { grep -q -- "$1" "$fx.log"; }
fx_status() { SHMB_DIR=$fx "$build/shmbctl" status 2>/dev/null; }
fx_up() { fx_status >/dev/null; }
fx_start() { # ARGS...: a broker on $fx with ARGS (run as $fx_as if set); 0 once it answers
	rm -rf "$fx" "$fx.log" && mkdir -p "$fx" || return 1
	[ -n "${fx_as:-}" ] && chown "$fx_as" "$fx"
	if [ -n "${fx_as:-}" ]; then
		setpriv --reuid="${fx_as%:*}" --regid="${fx_as#*:}" --clear-groups \
			"$build/shmbd" --dir "$fx" "$@" 2>"$fx.log" &
	else
		"$build/shmbd" --dir "$fx" "$@" 2>"$fx.log" &
	fi
	fxb=$!
	until_true 10 fx_up && return 0
	kill $fxb 2>/dev/null; wait $fxb 2>/dev/null
	return 1
}
fx_stop() { kill $fxb 2>/dev/null; wait $fxb 2>/dev/null; }
method_is() { fx_status | grep -q "^crash detection  $1\$"; }
# A `shmbctl sub` owning session NAME, SIGKILLed and reaped by this shell:
# prints its pid.
sub_killed() {
	SHMB_DIR=$fx "$build/shmbctl" sub t --session "$1" >/dev/null 2>&1 &
	p=$!
	until_true 10 in_log "session $1 (id [0-9]*, uid [0-9]*) created" || echo "no session $1" >&2
	kill -9 $p; wait $p 2>/dev/null
	echo $p
}
# exit-client hold: a child owning session NAME is SIGKILLed and left
# unreaped until `hold_reap`; sets hp (the holder) and cp (the child).
hold_kill() {
	rm -f "$fx.fifo" "$fx.out" && mkfifo "$fx.fifo"
	SHMB_DIR=$fx "$ec" "$1" hold <"$fx.fifo" >"$fx.out" &
	hp=$!
	exec 3>"$fx.fifo"
	until_true 10 grep -q '^ready ' "$fx.out"
	cp=$(sed -n 's/^ready //p' "$fx.out")
	[ -n "$cp" ] && kill -9 "$cp"
	until_true 10 in_log "session $1 detached"
}
hold_reap() { echo >&3; exec 3>&-; wait $hp; }
ulimit -c 0 2>/dev/null

is_root=0; [ "$(id -u)" = 0 ] && is_root=1

# (1) bpf: as root where the tracer loads
if [ $is_root = 0 ]; then
	skip "exit_reasons_bpf" "not root (the exit tracer needs CAP_BPF and CAP_PERFMON)"
elif ! fx_start --exit-reasons bpf; then
	skip "exit_reasons_bpf" "the tracer cannot load here: $(grep -o 'exit-reasons bpf.*' "$fx.log")"
else
	if ! method_is 'bpf (tp_btf/sched_process_exit)'; then
		bad "exit_reasons_bpf_status" "$(fx_status | grep crash)"
	else
		ok "exit_reasons_bpf_status"
	fi
	p=$(sub_killed x)
	if until_true 10 in_log "session x (uid 0): owner pid $p killed by SIGKILL\$"; then
		ok "exit_reasons_bpf_sigkill"
	else
		bad "exit_reasons_bpf_sigkill" "$(grep 'session x' "$fx.log" | tail -n 2 | tr '\n' ' ')"
	fi
	SHMB_DIR=$fx "$ec" e3 exit 3 >/dev/null; rc=$?
	if [ $rc = 3 ] && until_true 10 in_log "session e3 (uid 0): owner pid [0-9]* exited 3\$"; then
		ok "exit_reasons_bpf_exit_3"
	else
		bad "exit_reasons_bpf_exit_3" "rc $rc; $(grep 'session e3' "$fx.log" | tail -n 1)"
	fi
	# exit(5) from a second thread: the tracer fires per thread and must
	# report the group's status, whichever thread goes last
	SHMB_DIR=$fx "$ec" e5 thread-exit 5 >/dev/null; rc=$?
	if [ $rc = 5 ] && until_true 10 in_log "session e5 (uid 0): owner pid [0-9]* exited 5\$"; then
		ok "exit_reasons_bpf_thread_exit"
	else
		bad "exit_reasons_bpf_thread_exit" "rc $rc; $(grep 'session e5' "$fx.log" | tail -n 1)"
	fi
	SHMB_DIR=$fx "$ec" sg signal 11 >/dev/null 2>&1
	if until_true 10 in_log "session sg (uid 0): owner pid [0-9]* killed by SIGSEGV\$"; then
		ok "exit_reasons_bpf_sigsegv"
	else
		bad "exit_reasons_bpf_sigsegv" "$(grep 'session sg' "$fx.log" | tail -n 1)"
	fi
	# the tracer knows before anyone reaps the process
	hold_kill hb
	if until_true 10 in_log "session hb (uid 0): owner pid $cp killed by SIGKILL\$"; then
		ok "exit_reasons_bpf_before_reap"
	else
		bad "exit_reasons_bpf_before_reap" "$(grep 'session hb' "$fx.log" | tail -n 1)"
	fi
	hold_reap
	fx_stop
fi

# (2) pidfd + PIDFD_INFO_EXIT: the reason comes with the reap
if ! fx_start --exit-reasons pidfd; then
	bad "exit_reasons_pidfd" "the broker did not start: $(tail -n 3 "$fx.log" | tr '\n' ' ')"
elif method_is 'pidfd (death only: reasons unknown)'; then
	skip "exit_reasons_pidfd" "this kernel ($(uname -r)) has no PIDFD_INFO_EXIT (6.15+)"
	fx_stop
else
	method_is 'pidfd + PIDFD_INFO_EXIT' && ok "exit_reasons_pidfd_status" ||
		bad "exit_reasons_pidfd_status" "$(fx_status | grep crash)"
	u=$(id -u)
	p=$(sub_killed x)
	if until_true 10 in_log "session x (uid $u): owner pid $p killed by SIGKILL\$"; then
		ok "exit_reasons_pidfd_sigkill"
	else
		bad "exit_reasons_pidfd_sigkill" "$(grep 'session x' "$fx.log" | tail -n 2 | tr '\n' ' ')"
	fi
	SHMB_DIR=$fx "$ec" e3 exit 3 >/dev/null
	until_true 10 in_log "session e3 (uid $u): owner pid [0-9]* exited 3\$" &&
		ok "exit_reasons_pidfd_exit_3" ||
		bad "exit_reasons_pidfd_exit_3" "$(grep 'session e3' "$fx.log" | tail -n 1)"
	# dead and detached, but no reason until its parent reaps it
	hold_kill hp
	if in_log "session hp (uid $u): owner pid $cp"; then
		bad "exit_reasons_pidfd_after_reap" "a reason before the reap: $(grep 'session hp' "$fx.log" | tail -n 1)"
		hold_reap
	else
		hold_reap
		until_true 10 in_log "session hp (uid $u): owner pid $cp killed by SIGKILL\$" &&
			ok "exit_reasons_pidfd_after_reap" ||
			bad "exit_reasons_pidfd_after_reap" "$(grep 'session hp' "$fx.log" | tail -n 1)"
	fi
	fx_stop
fi

# (3) off: deaths are seen, their reasons are not
if ! fx_start --exit-reasons off; then
	bad "exit_reasons_off" "the broker did not start: $(tail -n 3 "$fx.log" | tr '\n' ' ')"
else
	p=$(sub_killed x)
	if method_is 'pidfd (death only: reasons unknown)' &&
	   until_true 10 in_log "session x (uid $(id -u)): owner pid $p died, reason unknown\$"; then
		ok "exit_reasons_off"
	else
		bad "exit_reasons_off" "$(fx_status | grep crash); $(grep 'session x' "$fx.log" | tail -n 1)"
	fi
	fx_stop
fi

# the config file's key sets what the flag sets
printf 'exit-reasons = off\n' >"$fx.conf"
if fx_start --config "$fx.conf" && method_is 'pidfd (death only: reasons unknown)'; then
	ok "exit_reasons_config_key"
else
	bad "exit_reasons_config_key" "$(fx_status | grep crash)"
fi
fx_stop
printf 'exit-reasons = sometimes\n' >"$fx.conf"
msg=$("$build/shmbd" --dir "$fx" --config "$fx.conf" 2>&1)
case "$?:$msg" in
"2:"*"bad value for 'exit-reasons'"*) ok "exit_reasons_bad_value" ;;
*) bad "exit_reasons_bad_value" "$msg" ;;
esac
rm -f "$fx.conf"

# (4) unprivileged: auto says once that BPF is unavailable, falls back to
# the pidfd, and still learns why; bpf refuses to start
if [ $is_root = 0 ] || ! command -v setpriv >/dev/null 2>&1; then
	skip "exit_reasons_unprivileged" "needs root and setpriv to start shmbd as uid 65534"
else
	fx_as=65534:65534
	if ! fx_start --exit-reasons auto; then
		bad "exit_reasons_unprivileged" "no broker as uid 65534: $(tail -n 3 "$fx.log" | tr '\n' ' ')"
	else
		nb=$(grep -c 'BPF exit tracer unavailable (no CAP_BPF and CAP_PERFMON)' "$fx.log")
		p=$(sub_killed x)
		if [ "$nb" = 1 ] && method_is 'pidfd + PIDFD_INFO_EXIT' &&
		   until_true 10 in_log "session x (uid 0): owner pid $p killed by SIGKILL\$"; then
			ok "exit_reasons_unprivileged"
		elif [ "$nb" = 1 ] && method_is 'pidfd (death only: reasons unknown)' &&
		   until_true 10 in_log "session x (uid 0): owner pid $p died, reason unknown\$"; then
			ok "exit_reasons_unprivileged"
		else
			bad "exit_reasons_unprivileged" "$nb line(s) about BPF; $(fx_status | grep crash);"\
" $(grep 'session x\|BPF' "$fx.log" | tr '\n' ' ')"
		fi
		fx_stop
	fi
	msg=$(setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$build/shmbd" --dir "$fx" --exit-reasons bpf 2>&1)
	case "$?:$msg" in
	"1:"*"--exit-reasons bpf: the exit tracer cannot be used: no CAP_BPF and CAP_PERFMON"*)
		ok "exit_reasons_bpf_refused" ;;
	*) bad "exit_reasons_bpf_refused" "$msg" ;;
	esac
	fx_as=
fi
# in a pid namespace the tracer's pids are not the broker's: auto says so
# and falls back, bpf refuses
if [ $is_root = 0 ] || ! command -v unshare >/dev/null 2>&1; then
	skip "exit_reasons_pidns" "needs root and unshare"
elif ! why=$(unshare --pid --fork --mount-proc true 2>&1); then
	# a chroot or a container may not allow a new mount namespace
	skip "exit_reasons_pidns" "this machine refuses a pid namespace: $why"
else
	rm -rf "$fx" && mkdir -p "$fx"
	msg=$(unshare --pid --fork --mount-proc "$build/shmbd" --dir "$fx" --exit-reasons bpf 2>&1)
	case "$?:$msg" in
	"1:"*"--exit-reasons bpf: the exit tracer cannot be used: the broker runs in a pid namespace"*)
		ok "exit_reasons_pidns" ;;
	*) bad "exit_reasons_pidns" "$msg" ;;
	esac
fi
rm -rf "$fx" "$fx.log" "$fx.fifo" "$fx.out"

# the systemd unit, as `make install` writes it, passes systemd-analyze
# verify with nothing to say (docs/design/service.md, unit check)
if command -v systemd-analyze >/dev/null 2>&1; then
	u=$dir.unit
	mkdir -p "$u/sbin" && ln -sf "$build/shmbd" "$u/sbin/shmbd"
	sed -e "s|@PREFIX@|$u|" "$top/tools/shmbd.service.in" >"$u/shmbd.service"
	msg=$(systemd-analyze verify "$u/shmbd.service" 2>&1)
	rc=$?
	[ $rc -eq 0 ] && [ -z "$msg" ] && ok "unit_verifies" || bad "unit_verifies" "exit $rc: $msg"
	rm -rf "$u"
else
	skip "unit_verifies" "systemd-analyze is not installed (apt-get install systemd)"
fi

# the man pages render with no warning, with each renderer there is
# (man-db's checks of the macros, groff's of everything)
man_warnings() { # PAGE: what the renderers say about it, and their exit status
	if command -v man >/dev/null 2>&1; then
		LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 "$1" 2>&1 >/dev/null ||
			echo "man exited $?"
	fi
	if command -v groff >/dev/null 2>&1; then
		groff -man -ww -z "$1" 2>&1 || echo "groff exited $?"
	fi
}
if command -v man >/dev/null 2>&1 || command -v groff >/dev/null 2>&1; then
	for page in shmbd.8 shmbctl.1 shmb.3; do
		msg=$(man_warnings "$top/man/$page")
		[ -z "$msg" ] && ok "man_renders_$page" || bad "man_renders_$page" "$msg"
	done
else
	skip man_renders "neither man nor groff is installed (apt-get install man-db groff-base)"
fi

# the pages cannot fall behind the code: every long option that --help
# prints is named in the page (as \-\-name, as the page writes options),
# and every function of <shmb.h> in shmb(3)
missing_opts() { # PROGRAM PAGE: the long options of PROGRAM --help not in PAGE
	"$1" --help | grep -o -- '--[a-z][a-z-]*' | sort -u | while read -r o; do
		grep -qF -- "$(printf '%s' "$o" | sed 's/-/\\-/g')" "$2" || printf '%s ' "$o"
	done
}
msg=$(missing_opts "$build/shmbd" "$top/man/shmbd.8")
[ -z "$msg" ] && ok "man_shmbd_has_every_option" || bad "man_shmbd_has_every_option" "not in man/shmbd.8: $msg"
msg=$(missing_opts "$build/shmbctl" "$top/man/shmbctl.1")
[ -z "$msg" ] && ok "man_shmbctl_has_every_option" || bad "man_shmbctl_has_every_option" "not in man/shmbctl.1: $msg"
msg=$(sed -n 's/^[a-z][^(]*[ *]\(shmb_[a-z_]*\)(.*/\1/p' "$top/libclient/include/shmb.h" | while read -r f; do
	# in the synopsis, and described: under a heading of its own or by name
	grep -qE "^\.BI? .*[ *]$f\(" "$top/man/shmb.3" &&
		grep -qE "^\.(SS .*\b$f\(\)|BR $f \(\))" "$top/man/shmb.3" || printf '%s ' "$f"
done)
[ -z "$msg" ] && ok "man_shmb3_has_every_function" || bad "man_shmb3_has_every_function" "not in man/shmb.3: $msg"
echo "RESULT test-shmbctl passed=$passed failed=$failed skipped=$skipped"
[ $failed -eq 0 ]
