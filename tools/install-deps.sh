#!/bin/sh
# Install what building and testing shmb needs, from Debian's packages.
# As root it installs what is missing; otherwise it prints the command.
#   tools/install-deps.sh           build + test dependencies
#   tools/install-deps.sh --bench   also the peers `make bench` compares with
set -eu
pkgs="build-essential pkg-config liburing-dev libbpf-dev libcunit1-dev libsodium-dev clang bpftool systemd jq groff-base man-db iproute2"
case "${1:-}" in
--bench) pkgs="$pkgs iceoryx libiceoryx-binding-c-dev mosquitto libmosquitto-dev libzmq3-dev libnng-dev gnuplot-nox" ;;
"") ;;
*) echo "usage: $0 [--bench]" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
	echo "install-deps: everything needed is installed"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing:$missing"
	echo "install-deps: run as root:  apt-get update && apt-get install -y$missing"
	exit 1
fi
echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
