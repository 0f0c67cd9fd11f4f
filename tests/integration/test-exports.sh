#!/bin/sh
# What the client libraries offer a program: libshmb.so exports only the
# names libclient/libshmb.map lists, each at the version the map gives it;
# every function of <shmb.h> is in the map and nothing else is; libshmb.a
# defines no global name but shmb_*; the API example links against
# libshmb.a alone.  Usage: test-exports.sh BUILD.  Prints a RESULT line like
# the C test programs.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: test-exports.sh BUILD}
map=$top/libclient/libshmb.map
hdr=$top/libclient/include/shmb.h
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "  $1 ...passed"; }
bad() { failed=$((failed + 1)); echo "  $1 ...FAILED: $2"; }
d=$(mktemp -d /tmp/shmb-exports-test.XXXXXX)
trap 'rm -rf "$d"' EXIT

# the map as "name@VERSION" lines: names under a node's global: part, comments
# dropped, a one-name glob such as shmb_connec[t] read as its name
sed -e 's|/\*.*\*/||' -e '/\/\*/,/\*\//d' "$map" | awk '
	/^[A-Za-z_][A-Za-z0-9_.]* *\{/ { node = $1; sect = ""; next }
	/global:/ { sect = "g"; next }
	/local:/ { sect = "l"; next }
	/^}/ { node = ""; next }
	node != "" && sect == "g" && /^[ \t]*[A-Za-z_][][A-Za-z0-9_]*;/ {
		n = $1; sub(/;.*/, "", n); gsub(/[][]/, "", n); print n "@" node
	}' | sort -u >"$d/map"
cut -d@ -f1 "$d/map" | sort -u >"$d/map-names"
# the functions <shmb.h> declares (the same rule `make install` uses for man links)
sed -n 's/^[a-z][^(]*[ *]\(shmb_[a-z_]*\)(.*/\1/p' "$hdr" | sort -u >"$d/hdr"

if [ ! -s "$d/map" ] || [ ! -s "$d/hdr" ]; then
	bad "inputs_read" "no names read from $map or $hdr"
else
	ok "inputs_read"
fi

# every name libshmb.so exports, at its version (@@ default or @ old)
nm -D --defined-only --with-symbol-versions "$build/libshmb.so" >"$d/so-raw" 2>&1 ||
	bad "so_readable" "$(head -3 "$d/so-raw")"
# the version nodes themselves show as absolute symbols named SHMB_x
awk '$2 != "A" { s = $3; sub(/@@/, "@", s); print s }' "$d/so-raw" | sort -u >"$d/so"
unlisted=$(comm -23 "$d/so" "$d/map" | tr '\n' ' ')
[ -s "$d/so" ] && [ -z "$unlisted" ] && ok "so_exports_only_the_map" ||
	bad "so_exports_only_the_map" "exported but not in the map at that version: ${unlisted:-nothing exported}"
other=$(awk '$2 != "A" && $3 !~ /^shmb_/ { print $3 }' "$d/so-raw" | tr '\n' ' ')
[ -z "$other" ] && ok "so_exports_shmb_only" || bad "so_exports_shmb_only" "$other"
unversioned=$(awk '$2 != "A" && $3 !~ /@/ { print $3 }' "$d/so-raw" | tr '\n' ' ')
[ -z "$unversioned" ] && ok "so_every_name_versioned" || bad "so_every_name_versioned" "$unversioned"
missing=$(cut -d@ -f1 "$d/so" | sort -u | comm -13 - "$d/map-names" | tr '\n' ' ')
[ -z "$missing" ] && ok "so_exports_all_the_map" || bad "so_exports_all_the_map" "listed but not exported: $missing"

# the map and the header name the same functions
missing=$(comm -23 "$d/hdr" "$d/map-names" | tr '\n' ' ')
[ -z "$missing" ] && ok "header_functions_in_map" || bad "header_functions_in_map" "not in the map: $missing"
extra=$(comm -13 "$d/hdr" "$d/map-names" | tr '\n' ' ')
[ -z "$extra" ] && ok "map_names_in_header" || bad "map_names_in_header" "not in <shmb.h>: $extra"

# libshmb.a: a static program gets shmb_* and nothing else
nm -g --defined-only "$build/libshmb.a" >"$d/a-raw" 2>&1 || bad "a_readable" "$(head -3 "$d/a-raw")"
other=$(awk 'NF == 3 && $3 !~ /^shmb_/ { print $3 }' "$d/a-raw" | tr '\n' ' ')
n=$(awk 'NF == 3 && $3 ~ /^shmb_/' "$d/a-raw" | wc -l)
[ -z "$other" ] && [ "$n" -gt 0 ] && ok "a_defines_shmb_only" ||
	bad "a_defines_shmb_only" "$n shmb_* names; others: $other"
missing=$(awk 'NF == 3 { print $3 }' "$d/a-raw" | sort -u | comm -13 - "$d/hdr" | tr '\n' ' ')
[ -z "$missing" ] && ok "a_defines_every_function" || bad "a_defines_every_function" "missing: $missing"

# the API example, linked against libshmb.a by `make test`, needs no libshmb.so
if [ -x "$build/example-pubsub-static" ]; then
	if ldd "$build/example-pubsub-static" 2>/dev/null | grep -q libshmb; then
		bad "static_example" "example-pubsub-static loads libshmb.so"
	else
		ok "static_example"
	fi
else
	bad "static_example" "$build/example-pubsub-static not built"
fi

echo "RESULT test-exports passed=$passed failed=$failed skipped=0"
[ $failed -eq 0 ]
