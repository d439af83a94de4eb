#!/usr/bin/env bash
# Reload under load: SIPp places calls through a real callguard at RATE
# calls/s for STEP_S seconds while the configuration is reloaded three
# times: SIGHUP with a changed DNC list, POST /v1/reload with a broken
# config (refused, the running one stays), SIGHUP with the config fixed and
# a tenant added. Passes when every call completed (0 failed at the dialer
# and at the carrier), every call was allowed, and the reload counters read
# 2 successes and 1 failure. Loopback only; stops itself after 3 minutes.
#
#   sipp-scenarios/reload-under-load.sh          # target/release/callguard
#   CALLGUARD_BIN=path RATE=200 STEP_S=30 SIPP_BASE_PORT=16060 sipp-scenarios/reload-under-load.sh
set -u
if [ -z "${CG_RELOAD_INNER:-}" ]; then
	export CG_RELOAD_INNER=1
	exec timeout --kill-after=10 180 bash "$0" "$@"
fi
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN=${CALLGUARD_BIN:-$ROOT/target/release/callguard}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet) || { echo "build failed"; exit 2; }
for tool in sipp curl bc; do
	command -v "$tool" >/dev/null || { echo "$tool not found (.ci/run installs it)"; exit 2; }
done

RATE=${RATE:-200}
export STEP_S=${STEP_S:-30}
BASE=${SIPP_BASE_PORT:-16060}
SIP=$BASE ADMIN=$((BASE + 4000))
export CARRIER_PORT=$((BASE + 20)) UAC_PORT=$((BASE + 30))
. "$ROOT/benches/lib-load.sh"

WORK=$(mktemp -d /tmp/callguard-reload.XXXXXX)
CG=""
cleanup() {
	[ -n "$CG" ] && kill "$CG" 2>/dev/null
	wait 2>/dev/null
	if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

config() { # config EXTRA_TOML: the running config, plus EXTRA at the end
	cat > "$WORK/cg.toml" <<TOML
[sip]
listen = ["udp:127.0.0.1:$SIP"]
[[carrier]]
name = "primary"
address = "udp:127.0.0.1:$CARRIER_PORT"
[admin]
listen = "127.0.0.1:$ADMIN"
[state]
data_dir = "$WORK/data"
[[dnc_list]]
name = "load"
file = "dnc.txt"
[[tenant]]
id = "load"
sources = ["127.0.0.1/32"]
rule_set = "fr"
dnc_lists = ["load"]
$1
TOML
}
metric() { # metric NAME_WITH_LABELS -> value (0 when absent)
	curl -sf "http://127.0.0.1:$ADMIN/metrics" | awk -v k="$1" '$1==k {print $2; f=1} END {if (!f) print 0}'
}

config ""
printf '+33612345678\n' > "$WORK/dnc.txt"
# A Tuesday 11:00 in Paris: every call of the run is inside legal hours.
"$BIN" serve --config "$WORK/cg.toml" --at 2026-11-17T11:00:00+01:00 > "$WORK/cg.log" 2>&1 &
CG=$!
for _ in $(seq 1 100); do
	curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break
	sleep 0.1
done
curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null || { echo "callguard did not start"; tail "$WORK/cg.log"; exit 2; }

# The reloads, in the background while the load runs.
(
	sleep 5
	printf '+33612345678\n+33612345679\n' > "$WORK/dnc.txt"
	kill -HUP "$CG"
	echo "t=5s   SIGHUP, DNC list changed"
	sleep 7
	config "[[tenant]]
id = \"broken\"
sources = 12"
	code=$(curl -s -o "$WORK/broken.json" -w '%{http_code}' -X POST "http://127.0.0.1:$ADMIN/v1/reload")
	echo "t=12s  POST /v1/reload with a broken config -> $code $(cat "$WORK/broken.json")"
	sleep 8
	config "[[tenant]]
id = \"second\"
sources = [\"127.0.0.9/32\"]
rule_set = \"fr\""
	kill -HUP "$CG"
	echo "t=20s  SIGHUP, config fixed and a tenant added"
) &
RELOADS=$!

echo "$HEADER"
step reload "127.0.0.1:$SIP" "$RATE" "$WORK" "$CG"
wait "$RELOADS"
sleep 0.5

calls=$((RATE * STEP_S))
read -r created failed <<< "$(awk -F'\t' 'NR==1 {print $3, $5}' "$WORK/results.tsv")"
uas_failed=$(csvget "$(ls "$WORK"/reload-"$RATE"/uas*_.csv | head -1)" 'FailedCall(C)')
allowed=$(metric 'callguard_invites_total{tenant="load",decision="allow",reason=""}')
ok=$(metric 'callguard_config_reloads_total{result="success"}')
bad=$(metric 'callguard_config_reloads_total{result="failure"}')
echo "calls: $created created, $failed failed at the dialer, ${uas_failed:-?} failed at the carrier; $allowed allowed"
echo "reloads: $ok succeeded, $bad refused"
status=0
[ "$created" = "$calls" ] || { echo "FAIL: $created calls created, $calls expected"; status=1; }
[ "$failed" = 0 ] || { echo "FAIL: $failed calls failed at the dialer"; status=1; }
[ "${uas_failed:-1}" = 0 ] || { echo "FAIL: ${uas_failed:-?} calls failed at the carrier"; status=1; }
[ "$allowed" = "$calls" ] || { echo "FAIL: $allowed calls allowed, $calls expected"; status=1; }
[ "$ok" = 2 ] && [ "$bad" = 1 ] || { echo "FAIL: reload counters"; status=1; }
grep -q "reload refused" "$WORK/cg.log" || { echo "FAIL: the refused reload was not logged"; status=1; }
if [ "$status" = 0 ]; then
	echo "PASS reload under load: $calls calls at $RATE calls/s, 3 reloads (1 refused), 0 failed"
else
	KEEP=1
fi
exit "$status"
