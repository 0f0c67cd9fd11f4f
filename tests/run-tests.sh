#!/bin/sh
# Run test programs, each under a deadline, and sum their RESULT lines into
# the one line `make test` ends with: "N passed, N failed, N skipped".
# A program that crashes, times out or prints no RESULT line is a failure.
# SHMB_TEST_TIMEOUT (seconds, default 600) bounds each program; inside it
# each C test has its own alarm (SHMB_TEST_ALARM, tests/harness.h), whose
# "TIMEOUT in test ..." line the summary repeats.
set -u
timeout_s=${SHMB_TEST_TIMEOUT:-600}
passed=0 failed=0 skipped=0 failures=""
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
	# an entry may carry arguments: "program arg..."
	name=$(basename "${t%% *}")
	echo "=== $name"
	# shellcheck disable=SC2086
	timeout -k 10 "$timeout_s" $t >"$log" 2>&1
	rc=$?
	cat "$log"
	line=$(grep '^RESULT ' "$log" | tail -n 1)
	if [ -z "$line" ]; then
		echo "=== $name: exited $rc without a RESULT line (crash or timeout): counted as 1 failure"
		failures="$failures
$name: exited $rc without a RESULT line $(grep '^TIMEOUT in test ' "$log" | head -n 1)"
		failed=$((failed + 1))
		continue
	fi
	p=$(echo "$line" | sed -n 's/.*passed=\([0-9]*\).*/\1/p')
	f=$(echo "$line" | sed -n 's/.*failed=\([0-9]*\).*/\1/p')
	s=$(echo "$line" | sed -n 's/.*skipped=\([0-9]*\).*/\1/p')
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "=== $name: exited $rc although no test failed: counted as 1 failure"
		f=1
	fi
	[ "$f" -gt 0 ] && failures="$failures
$name: $(grep -E '^ +[0-9]+\. |FAILED' "$log" | head -n 5 | tr '\n' ' ')"
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
done
[ -n "$failures" ] && printf 'failures:%s\n' "$failures"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
