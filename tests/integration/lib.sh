# tests/integration/lib.sh - sourced by the shell suites, never run: the one
# way they start a test broker.  A fresh SHMB_DIR under /dev/shm, the
# broker's log beside it, a deadline on its start, and everything killed and
# removed on exit, so no suite leaves a broker behind.  Needs $build.

# What a suite has more to clean up on exit (its own children, files):
# it defines its own suite_cleanup after sourcing this file.
suite_cleanup() { :; }

broker_cleanup() {
	suite_cleanup
	kill $broker 2>/dev/null
	wait 2>/dev/null
	rm -rf "$dir" "$dir.log"
}

# broker_spawn [ARGS...]: shmbd --quiet ARGS on $SHMB_DIR in the background,
# its stderr appended to $dir.log; $broker is its pid
broker_spawn() {
	"$build/shmbd" --quiet "$@" 2>>"$dir.log" &
	broker=$!
}

# broker_wait: until `shmbctl status` answers; 1 after 10 s
broker_wait() {
	_bw=0
	until "$build/shmbctl" status >/dev/null 2>&1; do
		_bw=$((_bw + 1))
		[ $_bw -gt 200 ] && return 1
		sleep 0.05
	done
}

# broker_start NAME [ARGS...]: a broker in a fresh directory
# /dev/shm/shmb-NAME.XXXXXX, exported as SHMB_DIR and kept in $dir; exits
# the suite (printing the log) if it does not answer within 10 s
broker_start() {
	dir=$(mktemp -d "/dev/shm/shmb-$1.XXXXXX") || exit 1
	shift
	export SHMB_DIR=$dir
	broker=
	trap broker_cleanup EXIT
	broker_spawn "$@"
	broker_wait || { echo "broker did not start"; cat "$dir.log"; exit 1; }
}
