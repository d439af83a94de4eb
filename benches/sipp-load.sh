#!/usr/bin/env bash
# Load test of a running proxy with SIPp: accept path at rising rates.
# Prints the highest rate with < 0.1 % failed calls and the response-time
# percentiles (INVITE → 200, SIPp's 1 ms resolution) of every step.
#
#   benches/sipp-load.sh [PROXY_ADDR] [RATES]
#     PROXY_ADDR  default 127.0.0.1:5060 (it must forward to 127.0.0.1:5080)
#     RATES       default "500 1000 2000 4000 6000 8000"
#   env: STEP_S (20), PROXY_PIDS (for CPU µs/call), OUT (results dir)
# Traffic stays on 127.0.0.1; the script stops itself after 15 minutes.
set -u
if [ -z "${CG_LOAD_INNER:-}" ]; then export CG_LOAD_INNER=1; exec timeout --kill-after=10 900 bash "$0" "$@"; fi
. "$(dirname "$0")/lib-load.sh"
PROXY=${1:-127.0.0.1:5060}
RATES=${2:-"500 1000 2000 4000 6000 8000"}
OUT=${OUT:-/tmp/callguard-load/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
mkdir -p /tmp/callguard-load
command -v sipp >/dev/null || { echo "sipp not found: apt-get install -y sip-tester"; exit 2; }
echo "$HEADER" | tee "$OUT/results.tsv"
sweep proxy "$PROXY" "$RATES" "$OUT" ${PROXY_PIDS:-}
echo "max clean rate (accept path): $MAX calls/s; raw files in $OUT"
