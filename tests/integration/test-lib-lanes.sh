#!/bin/sh
# The relay kept covered now that lanes are the broker's default: the
# cases of test-broker, test-restart, test-redial, test-admin and
# test-links run again against a broker started with --no-lanes
# (tests/broker-helper.c passes SHMB_TEST_BROKER_ARGS to shmbd; libshmb
# then publishes into the session's TX ring and the broker routes each
# message into its subscribers' RX rings).  Their default runs in
# `make test` are on lanes (docs/design/data-path.md, section 9, step 3).
# Every test-broker case but scribbling_client, which forges a record in
# the TX ring and so always starts its broker with --no-lanes.  Every test-restart case: a restarted
# broker re-adopts the sessions and routes what their TX rings hold.
# test-redial's four (on the relay the broker routes every message: one
# sent while it is dead arrives after it is back) and test-admin's cases
# but drop_oldest_depth, which always runs on the relay (its figures are
# the RX ring's).  Every test-links case (50 000 messages each way, as
# test-links-short): the broker routes relay publishers' messages to the
# links, through faults and broker SIGKILLs.
# Usage: test-lib-lanes.sh BUILD_DIR.  Prints one RESULT line.
set -u
build=$1
passed=0 failed=0

# run BINARY CASE: one case against a broker with --no-lanes
run() {
	out=$(SHMB_TEST_BROKER_ARGS=--no-lanes "$build/tests/$1" "$2" 2>&1 </dev/null)
	line=$(echo "$out" | grep '^RESULT ' | tail -n 1)
	p=$(echo "$line" | sed -n 's/.*passed=\([0-9]*\).*/\1/p')
	f=$(echo "$line" | sed -n 's/.*failed=\([0-9]*\).*/\1/p')
	if [ -z "$line" ] || [ "${p:-0}" -ne 1 ] || [ "${f:-1}" -ne 0 ]; then
		echo "$out"
		echo "relay: $1 $2 FAILED"
		failed=$((failed + 1))
	else
		echo "relay: $1 $2 passed"
		passed=$((passed + 1))
	fi
}

for t in three_by_three subscriber_killed resume_after_ack other_uid second_broker_refused \
	destroy_delivers_published fallback_and_idle caught_up_not_detached many_topics \
	malformed_control_messages truncating_client punching_client hello_timeout \
	ephemeral_self_close pollable_fd example_program batched_publish drop_oldest \
	ephemeral_publisher_dies publisher_killed takeover_and_stale block_timeout \
	wake_spam_backoff tmpfs_full truncating_client_no_landlock; do
	run test-broker "$t"
done
for t in clean_restart broker_killed sigterm_drain owner_switches_killed drop_oldest_lagging \
	damaged_at_start state_fuzz state_write_fails state_huge_ids state_nul state_churn \
	state_destroy_compacts state_compact_mid_change state_escaped_topic; do
	run test-restart "$t"
done
for t in client_before_broker reconnect_while_streaming broker_killed version_mismatch; do
	run test-redial "$t"
done
for t in list_truncated_tx kick_token_restart kick_ephemeral list_flood listing_pages \
	session_figures kick other_uid malformed_admin; do
	run test-admin "$t"
done
SHMB_LINK_N=50000
export SHMB_LINK_N
for t in origin key_checks refusals stalled faults broker_kills; do
	run test-links "$t"
done
echo "RESULT test-lib-lanes.sh passed=$passed failed=$failed skipped=0"
[ "$failed" -eq 0 ]
