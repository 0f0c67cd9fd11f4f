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

dir=$(mktemp -d /dev/shm/shmb-ctl-test.XXXXXX)
export SHMB_DIR=$dir
"$build/shmbd" --quiet 2>"$dir.log" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$dir" "$dir.log"' EXIT
i=0
until "$build/shmbctl" status >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -gt 200 ] && { echo "broker did not start"; cat "$dir.log"; exit 1; }
	sleep 0.05
done

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
"$build/shmbd" --quiet 2>>"$dir.log" &
broker=$!
i=0
until "$build/shmbctl" status >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -gt 200 ] && break
	sleep 0.05
done
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

# the systemd unit, as `make install` writes it, passes systemd-analyze
# verify with nothing to say (decisions.md 28)
if command -v systemd-analyze >/dev/null 2>&1; then
	u=$dir.unit
	mkdir -p "$u/sbin" && ln -sf "$build/shmbd" "$u/sbin/shmbd"
	sed -e "s|@PREFIX@|$u|" "$top/tools/shmbd.service.in" >"$u/shmbd.service"
	msg=$(systemd-analyze verify "$u/shmbd.service" 2>&1)
	rc=$?
	[ $rc -eq 0 ] && [ -z "$msg" ] && ok "unit_verifies" || bad "unit_verifies" "exit $rc: $msg"
	rm -rf "$u"
else
	skip unit_verifies "systemd-analyze is not installed (apt-get install systemd)"
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
