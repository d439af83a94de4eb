#!/usr/bin/env bash
# callguard vs Kamailio on this machine, in one run, same SIPp load.
#
#   benches/compare-kamailio.sh
#   env: RATES ("1000 2000 4000 5000 6000 8000 10000 12000"), STEP_S (20), WORKERS (4),
#        REJECT_RATES ("1500 4000": the reject path, DNC callee → 603, after the
#        accept sweeps; "" skips it), PAIRED_RATES ("": accept-path rates run
#        after the sweeps, like the rejects),
#        CALLGUARD_BIN (target/release/callguard), ONLY=callguard (skip Kamailio),
#        STATE_BACKEND=redis (callguard's refusals and counts in a redis-server
#        started here on 127.0.0.1:16379, instead of the embedded store),
#        FLOOR=1 (each reject rate also measures benches/floor/reject.rs, the
#        kernel's and the loopback's share of a reject, and the summary gives
#        each proxy's cost above it)
#
# Both proxies run with WORKERS worker processes/threads (Kamailio: UDP
# children; callguard: tokio workers). Kamailio does its gatekeeper check
# (caller-ID prefix rule + DNC htable of 1,000,000 numbers); callguard runs
# its full fr policy (caller-ID category, DNC of the same 1,000,000 numbers,
# contact hours in the callee's zone, holidays). The carrier is
# SIPp's UAS on 127.0.0.1:5080; everything stays on loopback. Installs
# Kamailio and SIPp from Debian when missing. Stops itself after 45 minutes
# (the default sweeps and reject pairs take about 20; long PAIRED_RATES and
# FLOOR=1 add 30 s per step).
#
# The sweeps run one proxy after the other (Kamailio on :5070, then
# callguard on :5072). The reject steps and PAIRED_RATES then alternate
# between the two, both running: kamailio, callguard, kamailio, ... at each
# rate in turn. This box's CPU cost per call drifts by a third over minutes
# (other tenants of the host); alternating puts each callguard step next to
# a Kamailio step taken under the same conditions. Kamailio stays up, idle,
# through callguard's sweep; only the measured proxy's CPU is counted.
set -u
if [ -z "${CG_CMP_INNER:-}" ]; then export CG_CMP_INNER=1; exec timeout --kill-after=15 2700 bash "$0" "$@"; fi
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
. "$HERE/lib-load.sh"
RATES=${RATES-"1000 2000 4000 5000 6000 8000 10000 12000"}
REJECT_RATES=${REJECT_RATES-"1500 4000"}
WORKERS=${WORKERS:-4}
WORK=/tmp/callguard-kam
OUT=${OUT:-$WORK/results-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$WORK/db" "$OUT"
BIN=${CALLGUARD_BIN:-$ROOT/target/release/callguard}

need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v kamailio >/dev/null || need+=(kamailio)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet)

PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	nap 1
	for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
	# Kamailio's children, should its main process have gone first.
	pkill -9 -f "kamailio -f $HERE/kamailio/kamailio.cfg" 2>/dev/null
	wait 2>/dev/null
}
trap cleanup EXIT

if [ ! -s "$WORK/db/dnc" ]; then
	echo "generating 1,000,000 DNC numbers (not among the callees) ..."
	{
		echo "key_name(string) key_type(int) value_type(int) key_value(string) expires(int)"
		awk 'BEGIN{srand(20261122); while(n<1000000){k=sprintf("3361%07d", int(rand()*10000000)); if(!(k in s)){s[k]=1; n++; printf "%s:0:1:1:0\n", k}}}'
	} > "$WORK/db/dnc"
	echo "version(str) table_name(str) table_version(int)" > "$WORK/db/version"
fi
[ -s "$WORK/dnc-callees.txt" ] || awk -F: 'NR>1{print $1}' "$WORK/db/dnc" > "$WORK/dnc-callees.txt"

# paired: each PAIRED_RATES rate (accept path), then each REJECT_RATES rate
# (reject path), one step per proxy in turn at every rate.
paired() {
	# A sweep that ended past the proxy's limit leaves transactions that
	# retransmit to the carrier's port for up to 64×T1: let them end, or
	# the next UAS counts them as failed calls and the proxy's CPU as ours.
	[ -n "$RATES" ] && nap 35
	local r
	for r in ${PAIRED_RATES:-}; do
		[ -n "${KAM_PIDS:-}" ] && { nap 3; step kamailio 127.0.0.1:5070 "$r" "$OUT" $KAM_PIDS || true; }
		nap 3
		step callguard 127.0.0.1:5072 "$r" "$OUT" $CG || true
	done
	for r in $REJECT_RATES; do
		if [ -n "${KAM_PIDS:-}" ]; then
			nap 3
			UAC_SCEN=uac_dnc.xml DNC_CALLEES="$WORK/dnc-callees.txt" step kamailio-reject 127.0.0.1:5070 "$r" "$OUT" $KAM_PIDS || true
		fi
		nap 3
		UAC_SCEN=uac_dnc.xml DNC_CALLEES="$WORK/dnc-callees.txt" step callguard-reject 127.0.0.1:5072 "$r" "$OUT" $CG || true
		if [ -n "${FLOOR_PID:-}" ]; then
			nap 3
			UAC_SCEN=uac_dnc.xml DNC_CALLEES="$WORK/dnc-callees.txt" step floor-reject 127.0.0.1:5074 "$r" "$OUT" $FLOOR_PID || true
		fi
	done
}

{
	echo "date: $(date -u +%FT%TZ)"
	echo "host: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
	echo "kamailio: $(kamailio -v 2>/dev/null | head -1)"
	echo "sipp: $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1)"
	echo "callguard: $("$BIN" --version) ($BIN)"
	echo "workers: $WORKERS, step: ${STEP_S}s, rates: $RATES"
} | tee "$OUT/summary.txt"
echo "$HEADER" > "$OUT/results.tsv"

KAM_MAX=${KAM_MAX:-?}
if [ "${ONLY:-both}" != callguard ]; then
# --- Kamailio
rm -f "$WORK/ctl"
(cd "$WORK" && exec kamailio -f "$HERE/kamailio/kamailio.cfg" -DD -E -x fm -m 2048 -M 1024 -A CHILDREN="$WORKERS" \
	-A "DB_URL=\"text://$WORK/db\"" -A "CTL_SOCK=\"unix:$WORK/ctl\"" > "$OUT/kamailio.log" 2>&1) &
KAM=$!
PIDS="$PIDS $KAM"
for _ in $(seq 1 240); do kamcmd -s "unix:$WORK/ctl" core.uptime >/dev/null 2>&1 && break; nap 0.5; done
KAM_PIDS="$(pgrep -f "kamailio -f $HERE/kamailio/kamailio.cfg" | tr '\n' ' ')"
echo "kamailio up: $(echo $KAM_PIDS | wc -w) processes" | tee -a "$OUT/summary.txt"
sweep kamailio 127.0.0.1:5070 "$RATES" "$OUT" $KAM_PIDS
KAM_MAX=$MAX
fi

STATE_KEYS=""
if [ "${STATE_BACKEND:-embedded}" = redis ]; then
	redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" > "$OUT/redis.log" 2>&1 &
	PIDS="$PIDS $!"
	STATE_KEYS=$'backend = "redis"\n[state.redis]\nurl = "redis://127.0.0.1:16379/0"'
	echo "callguard state: redis-server $(redis-server --version | grep -o 'v=[^ ]*')" | tee -a "$OUT/summary.txt"
fi
# --- callguard: the full fr policy, with the same 1,000,000 DNC numbers,
# its clock set inside the legal hours so calls are allowed.
[ -s "$WORK/dnc.txt" ] || awk -F: 'NR>1{print "+" $1}' "$WORK/db/dnc" > "$WORK/dnc.txt"
cat > "$WORK/callguard.toml" <<TOML
[sip]
listen = ["udp:127.0.0.1:5072"]
workers = $WORKERS
[[carrier]]
name = "sipp-uas"
address = "udp:127.0.0.1:5080"
[admin]
listen = "127.0.0.1:19090"
[state]
data_dir = "$WORK/cg-data"
$STATE_KEYS
[[dnc_list]]
name = "bench"
file = "dnc.txt"
[[tenant]]
id = "bench"
sources = ["127.0.0.1/32"]
rule_set = "fr"
dnc_lists = ["bench"]
TOML
start_callguard "$WORK/callguard.toml" 19090 "$OUT"
[ -n "$RATES" ] && [ -n "${KAM_PIDS:-}" ] && nap 35
sweep callguard 127.0.0.1:5072 "$RATES" "$OUT" $CG
CG_MAX=$MAX
if [ "${FLOOR:-0}" = 1 ] && [ -n "$REJECT_RATES" ]; then
	rustc --edition 2021 -O "$HERE/floor/reject.rs" -o "$WORK/reject-floor" || exit 1
	"$WORK/reject-floor" 127.0.0.1:5074 > "$OUT/floor.log" 2>&1 &
	FLOOR_PID=$!
	PIDS="$PIDS $FLOOR_PID"
fi
paired
RSS=$(awk '/VmHWM/{print $2/1024 " MiB"}' /proc/$CG/status)

{
	echo
	column -t -s $'\t' "$OUT/results.tsv"
	echo
	ratio="-"
	# Rounded, not truncated by bc's scale: 7,500 against 5,000 is 1.50.
	[[ "$KAM_MAX" =~ ^[1-9][0-9]*$ && "$CG_MAX" =~ ^[0-9]+$ ]] &&
		ratio=$(awk -v c="$CG_MAX" -v k="$KAM_MAX" 'BEGIN { printf "%.2f", c / k }')
	echo "highest clean rate: kamailio $KAM_MAX calls/s, callguard $CG_MAX calls/s, ratio $ratio"
	awk -F'\t' '$14=="PASS" && $9+0<=50 {if($2+0>m[$1]) m[$1]=$2+0} END{printf "highest rate with p99 <= 50 ms: kamailio %d, callguard %d\n", m["kamailio"], m["callguard"]}' "$OUT/results.tsv"
	echo "CPU per call, callguard / kamailio, at every rate both pass (the headline; a rate listed"
	echo "more than once in RATES or REJECT_RATES: the median of its passing steps, and every value):"
	awk -F'\t' 'function median(list,   v, n, i, j, t) {
			n = split(list, v, " ")
			for (i = 2; i <= n; i++) { t = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
			return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		}
		$14=="PASS" {p=$1; path="accept"; if (sub(/-reject$/, "", p)) path="reject"; us[p, path, $2]=us[p, path, $2] " " $12; seen[path, $2]=1}
		END{for (k in seen) {split(k, a, SUBSEP); c=us["callguard", a[1], a[2]]; m=us["kamailio", a[1], a[2]];
			if (c != "" && m != "" && median(m) > 0) printf "  %s %5d calls/s: callguard %s us (%s), kamailio %s us (%s), ratio %.2f\n", a[1], a[2], median(c), substr(c, 2), median(m), substr(m, 2), median(c) / median(m)
			f = us["floor", a[1], a[2]]
			if (c != "" && m != "" && f != "" && median(m) > median(f)) printf "  %s %5d calls/s above the floor of %s us (%s): callguard %s us, kamailio %s us, ratio %.2f\n", a[1], a[2], median(f), substr(f, 2), median(c) - median(f), median(m) - median(f), (median(c) - median(f)) / (median(m) - median(f))}}' \
		"$OUT/results.tsv" | sort -k1,1 -k2,2n
	echo "callguard peak RSS: $RSS"
	echo "raw files: $OUT"
} | tee -a "$OUT/summary.txt"
