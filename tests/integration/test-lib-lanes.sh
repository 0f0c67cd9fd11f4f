#!/bin/sh
# test-broker's cases that hold on the direct data path too, against a
# broker started with --lanes (libshmb then publishes into lanes and reads
# them; tests/broker-helper.c passes SHMB_TEST_BROKER_ARGS to shmbd).
# All but scribbling_client, which forges a record in the TX ring, which
# a lane publisher does not write (test-lib-lanes forged_lane forges one
# in a lane instead); see docs/design/data-path.md, section 9, step 3.
# Usage: test-lib-lanes.sh BUILD_DIR.  Prints one RESULT line.
set -u
build=$1
passed=0 failed=0
for t in three_by_three subscriber_killed resume_after_ack other_uid second_broker_refused \
	destroy_delivers_published fallback_and_idle caught_up_not_detached many_topics \
	malformed_control_messages truncating_client punching_client hello_timeout \
	ephemeral_self_close pollable_fd example_program batched_publish drop_oldest \
	ephemeral_publisher_dies publisher_killed takeover_and_stale block_timeout \
	wake_spam_backoff tmpfs_full truncating_client_no_landlock; do
	out=$(SHMB_TEST_BROKER_ARGS=--lanes "$build/tests/test-broker" "$t" 2>&1 </dev/null)
	line=$(echo "$out" | grep '^RESULT ' | tail -n 1)
	p=$(echo "$line" | sed -n 's/.*passed=\([0-9]*\).*/\1/p')
	f=$(echo "$line" | sed -n 's/.*failed=\([0-9]*\).*/\1/p')
	if [ -z "$line" ] || [ "${p:-0}" -ne 1 ] || [ "${f:-1}" -ne 0 ]; then
		echo "$out"
		echo "lanes: $t FAILED"
		failed=$((failed + 1))
	else
		echo "lanes: $t passed"
		passed=$((passed + 1))
	fi
done
echo "RESULT test-lib-lanes.sh passed=$passed failed=$failed skipped=0"
[ "$failed" -eq 0 ]
