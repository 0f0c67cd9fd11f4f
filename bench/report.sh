#!/bin/sh
# bench/report.sh RAW OUTDIR: turn the @R/@S lines of a benchmark run
# (bench/result.h) into markdown (on stdout) and, where gnuplot is
# installed, PNG plots in OUTDIR.  Every figure is the median of its
# repetitions with the min-max beside it; every ratio compares shmb with
# the row's transport from the same run.
set -eu
raw=$1
out=$2
mkdir -p "$out"

awk -F '\t' -v out="$out" '
function fmt_rate(v) {
	if (v < 0) return "—"
	if (v >= 1e6) return sprintf("%.2f M", v / 1e6)
	if (v >= 1e3) return sprintf("%.1f k", v / 1e3)
	return sprintf("%.0f", v)
}
function fmt_us(v) {
	if (v < 0) return "—"
	if (v >= 1000) return sprintf("%.0f", v)
	if (v >= 10) return sprintf("%.1f", v)
	return sprintf("%.2f", v)
}
# median, min, max of the n values in a[1..n]
function stats(a, n,    i, j, t) {
	for (i = 1; i <= n; i++)
		for (j = i + 1; j <= n; j++)
			if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	MED = a[int((n + 1) / 2)]; MIN = a[1]; MAX = a[n]
}
function ratio(a, b) {
	if (a <= 0 || b <= 0) return "—"
	if (a / b >= 10) return sprintf("%.0f×", a / b)
	return sprintf("%.2f×", a / b)
}
# the shmb row a latency row is compared with: spinning with spinning,
# and the baselines of a remote link with the rows of the link
function shmb_for(t, w,    pre) {
	pre = (w ~ /^link-/) ? "shmb link " : "shmb "
	return pre ((t ~ /spin/) ? "spin" : "block")
}
$1 == "@S" { skip[$2] = $3; nskip++; order_s[nskip] = $2; next }
$1 != "@R" { next }
{
	key = $5 SUBSEP $3 SUBSEP $2 SUBSEP $4
	n = ++cnt[key]
	rate[key, n] = $7; p50[key, n] = $8; p99[key, n] = $9; p999[key, n] = $10; mx[key, n] = $11
	sent[key] += $12; recv[key] += $13; lost[key] += $14; dup[key] += $15; reord[key] += $16
	if ($17 != "-") { x = (key in extra) ? extra[key] "; " $17 : $17; extra[key] = x; ex[key, n] = $17 }
	if (!(($3 SUBSEP $2) in seen_t)) { seen_t[$3, $2] = 1; nt[$3]++; tr[$3, nt[$3]] = $2 }
	if (!(($3 SUBSEP $4) in seen_s)) { seen_s[$3, $4] = 1; ns[$3]++; sz[$3, ns[$3]] = $4 + 0 }
	pins[$5] = 1
	pw[$5, $3] = 1
}
function med_of(key, arr,    i, a) {
	if (!(key in cnt)) return -1
	for (i = 1; i <= cnt[key]; i++) a[i] = arr[key, i] + 0
	stats(a, cnt[key])
	return MED
}
function sort_sizes(w,    i, j, t) {
	for (i = 1; i <= ns[w]; i++)
		for (j = i + 1; j <= ns[w]; j++)
			if (sz[w, j] < sz[w, i]) { t = sz[w, i]; sz[w, i] = sz[w, j]; sz[w, j] = t }
}
function size_name(s) {
	if (s >= 1024 && s % 1024 == 0) return (s / 1024) " KiB"
	return s " B"
}
function table_rate(w, title, pin,    i, j, t, key, k, a, best, bt, line, hdr, sep, loss, m, lo, hi, v) {
	if (!((pin SUBSEP w) in pw)) return
	sort_sizes(w)
	printf("\n### %s (%s)\n\n", title, pin ? "pinned" : "unpinned")
	hdr = "| transport |"; sep = "|---|"
	for (j = 1; j <= ns[w]; j++) { hdr = hdr " " size_name(sz[w, j]) " msgs/s (min–max) | shmb / it |"; sep = sep "---|---|" }
	print hdr; print sep
	for (i = 1; i <= nt[w]; i++) {
		t = tr[w, i]
		for (j = 1; j <= ns[w]; j++)
			if ((pin SUBSEP w SUBSEP t SUBSEP sz[w, j]) in cnt) break
		if (j > ns[w]) continue
		line = "| " t " |"
		for (j = 1; j <= ns[w]; j++) {
			key = pin SUBSEP w SUBSEP t SUBSEP sz[w, j]
			if (!(key in cnt)) { line = line " — | |"; continue }
			for (k = 1; k <= cnt[key]; k++) a[k] = rate[key, k] + 0
			stats(a, cnt[key])
			m = MED; lo = MIN; hi = MAX
			loss = ""
			if (lost[key] > 0 || reord[key] > 0)
				loss = sprintf(" **%d missing, %d out of order: does not count**", lost[key], reord[key])
			# the best shmb row at this size
			best = -1
			for (k = 1; k <= nt[w]; k++) {
				bt = tr[w, k]
				if (bt !~ /^shmb/) continue
				v = med_of(pin SUBSEP w SUBSEP bt SUBSEP sz[w, j], rate)
				if (v > best) best = v
			}
			line = line sprintf(" %s (%s–%s)%s | %s |", fmt_rate(m), fmt_rate(lo), fmt_rate(hi), loss,
					    t ~ /^shmb/ ? "" : ratio(best, m))
			if (w == "oneway")
				printf("%s\t%d\t%s\t%.1f\n", t, sz[w, j], pin, m) > (out "/tput.dat")
		}
		print line
	}
}
function table_lat(w, title, pin,    i, j, t, key, k, a, line, ref, refkey, m50) {
	if (!((pin SUBSEP w) in pw)) return
	sort_sizes(w)
	for (j = 1; j <= ns[w]; j++) {
		printf("\n### %s, %s (%s), µs\n\n", title, size_name(sz[w, j]), pin ? "pinned" : "unpinned")
		print "| transport | p50 (min–max) | p99 | p99.9 | max | shmb / it (p50) |"
		print "|---|---|---|---|---|---|"
		for (i = 1; i <= nt[w]; i++) {
			t = tr[w, i]
			key = pin SUBSEP w SUBSEP t SUBSEP sz[w, j]
			if (!(key in cnt)) continue
			for (k = 1; k <= cnt[key]; k++) a[k] = p50[key, k] + 0
			stats(a, cnt[key]); m50 = MED
			line = sprintf("| %s | %s (%s–%s) | %s | %s |", t, fmt_us(MED), fmt_us(MIN), fmt_us(MAX),
				       fmt_us(med_of(key, p99)), fmt_us(med_of(key, p999)))
			for (k = 1; k <= cnt[key]; k++) a[k] = mx[key, k] + 0
			stats(a, cnt[key])
			ref = shmb_for(t, w); refkey = pin SUBSEP w SUBSEP ref SUBSEP sz[w, j]
			line = line sprintf(" %s | %s |", fmt_us(MAX), t ~ /^shmb/ ? "" : ratio(med_of(refkey, p50), m50) " (vs " ref ")")
			if (lost[key] > 0) line = line sprintf(" **%d lost**", lost[key])
			print line
			if (w == "rtt")
				printf("%s\t%s\t%.3f\t%.3f\t%.3f\n", t, pin, m50, med_of(key, p99), med_of(key, p999)) > (out "/rtt-" sz[w, j] ".dat")
		}
	}
}
# "k=v k=v" over the repetitions of key: the median of each numeric value, with its unit
function extra_median(key,    k, i, j, f, kv, nkeys, names, vals, unit, a, nv, out, num) {
	nkeys = 0
	for (k = 1; k <= cnt[key]; k++) {
		if (!((key SUBSEP k) in ex)) continue
		nf = split(ex[key, k], f, " ")
		for (i = 1; i <= nf; i++) {
			if (split(f[i], kv, "=") != 2) continue
			if (!(kv[1] in seenk)) { seenk[kv[1]] = 1; names[++nkeys] = kv[1] }
			num = kv[2] + 0
			unit[kv[1]] = kv[2]; sub(/^-?[0-9.]+/, "", unit[kv[1]])
			vals[kv[1], ++nval[kv[1]]] = num
		}
	}
	out = ""
	for (i = 1; i <= nkeys; i++) {
		nv = nval[names[i]]
		for (j = 1; j <= nv; j++) a[j] = vals[names[i], j]
		stats(a, nv)
		out = out (out == "" ? "" : ", ") names[i] " " (MED == int(MED) ? MED : sprintf("%.2f", MED)) unit[names[i]]
		delete seenk[names[i]]; nval[names[i]] = 0
	}
	return out
}
function table_scale(pin,    i, j, t, key, ckey, a, k, line) {
	if (!((pin SUBSEP "scale-lat") in pw)) return
	sort_sizes("scale-lat")
	printf("\n### Scale: N idle sessions attached beside one active pair (%s)\n\n", pin ? "pinned" : "unpinned")
	print "| idle sessions | 64 B round trip p50 µs (min–max) | p99 | p99.9 | broker CPU, memory (medians) |"
	print "|---|---|---|---|---|"
	for (j = 1; j <= ns["scale-lat"]; j++) {
		for (i = 1; i <= nt["scale-lat"]; i++) {
			t = tr["scale-lat", i]
			key = pin SUBSEP "scale-lat" SUBSEP t SUBSEP sz["scale-lat", j]
			if (!(key in cnt)) continue
			for (k = 1; k <= cnt[key]; k++) a[k] = p50[key, k] + 0
			stats(a, cnt[key])
			ckey = pin SUBSEP "scale-cpu" SUBSEP "shmb" SUBSEP sz["scale-lat", j]
			line = sprintf("| %d | %s (%s–%s) | %s | %s | %s |", sz["scale-lat", j], fmt_us(MED), fmt_us(MIN),
				       fmt_us(MAX), fmt_us(med_of(key, p99)), fmt_us(med_of(key, p999)),
				       (ckey in cnt) ? extra_median(ckey) : "")
			if (lost[key] > 0) line = line sprintf(" **%d lost**", lost[key])
			print line
		}
	}
}
function table_counts(w, title, pin,    i, j, t, key) {
	if (!((pin SUBSEP w) in pw)) return
	sort_sizes(w)
	printf("\n### %s (%s)\n\n", title, pin ? "pinned" : "unpinned")
	print "| transport | size | runs | sent | received | missing | duplicated | out of order | figures (medians) |"
	print "|---|---|---|---|---|---|---|---|---|"
	for (i = 1; i <= nt[w]; i++)
		for (j = 1; j <= ns[w]; j++) {
			t = tr[w, i]
			key = pin SUBSEP w SUBSEP t SUBSEP sz[w, j]
			if (!(key in cnt)) continue
			printf("| %s | %s | %d | %d | %d | %d | %d | %d | %s |\n", t, sz[w, j], cnt[key], sent[key], recv[key],
			       lost[key], dup[key], reord[key], (key in extra) ? extra_median(key) : "")
		}
}
END {
	for (pin = 0; pin <= 1; pin++) {
		if (!(pin in pins)) continue
		table_rate("oneway", "One-way throughput, every message checked", pin)
		table_lat("rtt", "Round trip", pin)
		table_lat("rtt-load", "Round trip under load (two CPU-bound processes beside)", pin)
		table_rate("fanout", "Fan-out 1 → 8, messages/s received in all", pin)
		table_rate("fanin", "Fan-in 8 → 1, messages/s received", pin)
		table_scale(pin)
		table_rate("link-oneway", "Remote link on loopback (two brokers) beside one TCP connection: one-way, every message checked", pin)
		table_lat("link-rtt", "Remote link on loopback (two brokers) beside one TCP connection: round trip", pin)
		table_counts("recovery-sub", "Recovery: subscriber SIGKILLed during the stream", pin)
		table_counts("recovery-broker", "Recovery: broker SIGKILLed during the stream", pin)
	}
	if (nskip) {
		print "\n### Not measured here\n"
		for (i = 1; i <= nskip; i++) printf("- %s: %s\n", order_s[i], skip[order_s[i]])
	}
}
' "$raw"

# plots, where gnuplot is installed
if ! command -v gnuplot >/dev/null 2>&1; then
	echo
	echo "(plots skipped: gnuplot is not installed; tools/install-deps.sh --bench installs it)"
	exit 0
fi
if [ -s "$out/tput.dat" ]; then
	for pin in 0 1; do
		awk -F '\t' -v p=$pin '$3 == p' "$out/tput.dat" >"$out/tput-$pin.dat"
		[ -s "$out/tput-$pin.dat" ] || continue
		mode=$( [ $pin = 1 ] && echo pinned || echo unpinned)
		awk -F '\t' -v o="$out/tput-$pin" '{ if (!($1 in id)) { id[$1] = ++n; print $1 > (o ".names") }
			print $2 "\t" $4 > (o "-" id[$1] ".dat") }' "$out/tput-$pin.dat"
		{
			echo "set terminal png size 900,560 noenhanced; set output '$out/throughput-$mode.png'"
			echo "set title 'One-way throughput by message size ($mode)'"
			echo "set logscale xy; set xlabel 'message bytes'; set ylabel 'messages/s'; set key outside right; set grid"
			printf "plot "
			i=0 sep=""
			while IFS= read -r name; do
				i=$((i + 1))
				printf "%s'%s' using 1:2 with linespoints title '%s'" "$sep" "$out/tput-$pin-$i.dat" "$name"
				sep=", "
			done <"$out/tput-$pin.names"
			echo
		} >"$out/tput-$pin.gp"
		gnuplot "$out/tput-$pin.gp" 2>"$out/gnuplot.err" || echo "(throughput plot failed: $(cat "$out/gnuplot.err"))"
	done
fi
for f in "$out"/rtt-*.dat; do
	[ -s "$f" ] || continue
	s=$(basename "$f" .dat | sed 's/rtt-//')
	for pin in 0 1; do
		awk -F '\t' -v p=$pin '$2 == p { print $1 "\t" $3 "\t" $4 "\t" $5 }' "$f" >"$f.$pin"
		[ -s "$f.$pin" ] || continue
		name=latency-$s-$( [ $pin = 1 ] && echo pinned || echo unpinned)
		cat >"$out/$name.gp" <<EOF
set terminal png size 1000,560 noenhanced; set output '$out/$name.png'
set title 'Round-trip latency, $s B ($( [ $pin = 1 ] && echo pinned || echo unpinned)), microseconds'
set style data histograms; set style histogram clustered gap 1; set style fill solid 0.8 border -1
set logscale y; set ylabel 'µs'; set grid ytics; set xtics rotate by -30; set key top left
set datafile separator '\t'
plot '$f.$pin' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title 'p99.9'
EOF
		gnuplot "$out/$name.gp" 2>"$out/gnuplot.err" || echo "(latency plot failed: $(cat "$out/gnuplot.err"))"
	done
done
echo
echo "plots: $(ls "$out"/*.png 2>/dev/null | tr '\n' ' ')"
