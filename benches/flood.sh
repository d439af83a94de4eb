#!/usr/bin/env bash
# A tenant's calls while a stranger floods (issue 16), through a real
# callguard process on loopback:
#
#   benches/flood.sh
#   env: RATE (50 calls/s of the tenant), STEP_S (20 s of calls), FLOOD_S (30),
#        CONNECTIONS (20000 idle TCP connections a stranger tries to hold),
#        CALLGUARD_BIN (target/release/callguard)
#
# 1. quiet: the tenant's calls alone (SIPp UAC on 127.0.0.1 → callguard →
#    SIPp UAS), the pass criteria of lib-load.sh (≥ 99.9 % complete).
# 2. udp flood: the same while `benches/flood.rs` sends INVITEs with fresh
#    Call-IDs from 127.0.0.9 (no tenant) as fast as one thread can.
# 3. tcp: the same calls over TCP while 127.0.0.9 opens CONNECTIONS TCP
#    connections and holds them idle.
# Prints for each: completed calls, p99, callguard RSS before/peak/after,
# audit bytes written, strangers' messages answered/dropped.
set -u
if [ -z "${CG_FLOOD_INNER:-}" ]; then export CG_FLOOD_INNER=1; exec timeout --kill-after=15 900 bash "$0" "$@"; fi
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
STEP_S=${STEP_S:-20}
. "$HERE/lib-load.sh"
RATE=${RATE:-50}
FLOOD_S=${FLOOD_S:-30}
CONNECTIONS=${CONNECTIONS:-20000}
WORK=/tmp/callguard-flood
OUT=${OUT:-$WORK/results-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
BIN=${CALLGUARD_BIN:-$ROOT/target/release/callguard}
command -v sipp >/dev/null || { apt-get update -qq && apt-get install -y -qq sip-tester >/dev/null; }
(cd "$ROOT" && cargo build --release --quiet && cargo bench --bench flood --no-run --quiet 2>/dev/null)
FLOODER=$(cd "$ROOT" && cargo bench --bench flood --no-run 2>&1 | grep -o 'target/release/deps/flood-[0-9a-f]*' | head -1)
ulimit -n 65536 2>/dev/null

PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; nap 1; for p in $PIDS; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

cat > "$WORK/callguard.toml" <<TOML
[sip]
listen = ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]
[[carrier]]
name = "sipp-uas"
address = "udp:127.0.0.1:5080"
[admin]
listen = "127.0.0.1:19091"
[state]
data_dir = "$WORK/cg-data"
[audit]
stranger_interval_s = 10
[[tenant]]
id = "bench"
sources = ["127.0.0.1/32"]
rule_set = "fr"
TOML
start_callguard "$WORK/callguard.toml" 19091 "$OUT"

rss() { awk '/^VmRSS/{printf "%.0f", $2/1024}' /proc/$CG/status; }
hwm() { awk '/^VmHWM/{printf "%.0f", $2/1024}' /proc/$CG/status; }
audit_kb() { du -sk "$WORK/cg-data/audit" | cut -f1; }
metric() { curl -s http://127.0.0.1:19091/metrics | awk -v m="$1" '$1==m{print $2}'; }
report() { # report NAME RSS0 AUDIT0
	echo "$1: RSS ${2} MiB before, peak $(hwm) MiB, $(rss) MiB 10 s after; audit +$(( $(audit_kb) - $3 )) KiB;" \
		"strangers answered $(metric 'callguard_stranger_messages_total{outcome="answered"}'), dropped $(metric 'callguard_stranger_messages_total{outcome="dropped"}');" \
		"transactions now $(metric callguard_transactions_active)" | tee -a "$OUT/summary.txt"
}
{
	echo "date: $(date -u +%FT%TZ)"
	echo "host: $(nproc) cpus, kernel $(uname -r); callguard: $("$BIN" --version)"
	echo "tenant: $RATE calls/s for ${STEP_S}s; flood ${FLOOD_S}s from 127.0.0.9; $CONNECTIONS TCP connections"
} | tee "$OUT/summary.txt"
echo "$HEADER" > "$OUT/results.tsv"

r0=$(rss); a0=$(audit_kb)
step quiet 127.0.0.1:5070 "$RATE" "$OUT" $CG
nap 10; report quiet "$r0" "$a0"

r0=$(rss); a0=$(audit_kb)
FLOOD_TARGET=127.0.0.1:5070 FLOOD_FROM=127.0.0.9 FLOOD_SECONDS=$FLOOD_S "$ROOT/$FLOODER" > "$OUT/flood.out" 2>&1 &
FL=$!
PIDS="$PIDS $FL"
nap 3
step udp-flood 127.0.0.1:5070 "$RATE" "$OUT" $CG
wait $FL; cat "$OUT/flood.out" | tee -a "$OUT/summary.txt"
nap 10; report udp-flood "$r0" "$a0"

r0=$(rss); a0=$(audit_kb)
python3 - "$CONNECTIONS" "$((STEP_S + 10))" > "$OUT/tcp-holder.out" 2>&1 <<'PY' &
import errno, socket, sys, time
n, hold = int(sys.argv[1]), float(sys.argv[2])
socks, refused, closed = [], 0, 0

def prune():
    # Drop the connections the proxy has closed (a read sees the end).
    global socks, closed
    keep = []
    for s in socks:
        try:
            if s.recv(1) == b"":
                closed += 1
                s.close()
                continue
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
            s.close()
            continue
        keep.append(s)
    socks = keep

t0 = time.time()
for i in range(n):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        if e.errno != errno.EMFILE:
            raise
        time.sleep(0.05)
        prune()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.9", 0))
    try:
        s.connect(("127.0.0.1", 5070))
        s.setblocking(False)
        socks.append(s)
    except OSError:
        refused += 1
        s.close()
time.sleep(1)
prune()
print(f"{n} connections opened in {time.time()-t0:.1f} s: {closed} closed by the proxy, "
      f"{refused} refused at connect, {len(socks)} held open by the proxy after 1 s")
time.sleep(max(0, hold - (time.time() - t0)))
prune()
print(f"after {time.time()-t0:.0f} s: {len(socks)} still open")
PY
HOLD=$!
nap 3
UAC_EXTRA="-t t1" step tcp-idle-strangers 127.0.0.1:5070 "$RATE" "$OUT" $CG
wait $HOLD; cat "$OUT/tcp-holder.out" | tee -a "$OUT/summary.txt"
nap 10; report tcp "$r0" "$a0"
echo "stranger connections refused: $(metric callguard_stranger_connections_refused_total)" | tee -a "$OUT/summary.txt"

{ echo; column -t -s $'\t' "$OUT/results.tsv"; echo "raw files: $OUT"; } | tee -a "$OUT/summary.txt"
