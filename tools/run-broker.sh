#!/bin/sh
# make run: shmbd in the foreground on a SHMB_DIR of its own under /dev/shm.
set -eu
build=${1:-build}
dir=${SHMB_DIR:-/dev/shm/shmb-$(id -un)}
mkdir -p "$dir"
echo "shmbd on SHMB_DIR=$dir  (Ctrl-C stops it)"
echo "in a second terminal:"
echo "    export SHMB_DIR=$dir"
echo "    $build/shmbctl sub news --session me       # prints what arrives; resumes after a kill"
echo "    $build/shmbctl pub news hello world        # publishes two messages"
echo "    $build/shmbctl status"
echo "    $build/shmbctl sessions --watch            # every session, redrawn each second"
echo
exec "$build/shmbd" --dir "$dir"
