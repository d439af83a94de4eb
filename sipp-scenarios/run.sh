#!/usr/bin/env bash
# Functional SIPp checks through a real callguard process, on loopback.
# Every check asserts SIPp's exit status (0 = every call went as the
# scenario expects). Bounded: each SIPp run has a timeout, the whole script
# stops itself after $HARD_LIMIT_S seconds.
#
#   sipp-scenarios/run.sh            # uses target/release/callguard
#   CALLGUARD_BIN=path sipp-scenarios/run.sh
set -u
HARD_LIMIT_S=${HARD_LIMIT_S:-300}
if [ -z "${CG_SIPP_INNER:-}" ]; then
	export CG_SIPP_INNER=1
	exec timeout --kill-after=10 "$HARD_LIMIT_S" bash "$0" "$@"
fi

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN=${CALLGUARD_BIN:-$ROOT/target/release/callguard}
if [ ! -x "$BIN" ]; then
	(cd "$ROOT" && cargo build --release --quiet) || { echo "build failed"; exit 2; }
fi
command -v sipp >/dev/null || { echo "sipp not found: apt-get install -y sip-tester"; exit 2; }
command -v curl >/dev/null || { echo "curl not found"; exit 2; }
command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install -y redis-server"; exit 2; }
command -v dnsmasq >/dev/null || { echo "dnsmasq not found: apt-get install -y dnsmasq-base"; exit 2; }

BASE=${SIPP_BASE_PORT:-15060}
SIP=$BASE SIP2=$((BASE + 2)) CARRIER=$((BASE + 20)) CARRIER2=$((BASE + 21)) DEAD=$((BASE + 29))
UAC_PORT=$((BASE + 40)) REDIS=$((BASE + 50)) DNS=$((BASE + 51))
ADMIN=$((BASE + 4000)) ADMIN2=$((BASE + 4001))
WORK=$(mktemp -d /tmp/callguard-sipp.XXXXXX)
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

cat > "$WORK/cg.toml" <<TOML
[sip]
listen = ["udp:127.0.0.1:$SIP", "tcp:127.0.0.1:$SIP", "udp:[::1]:$SIP", "tcp:[::1]:$SIP"]
carrier_timeout_ms = 1000
[[carrier]]
name = "primary"
address = "udp:127.0.0.1:$CARRIER"
[admin]
listen = "127.0.0.1:$ADMIN"
[state]
data_dir = "$WORK/data"
[[dnc_list]]
name = "sipp"
file = "dnc.txt"
[[tenant]]
id = "sipp"
sources = ["127.0.0.1/32", "::1/128"]
rule_set = "fr"
dnc_lists = ["sipp"]
[[tenant]]
id = "prospecting"
sources = ["127.0.0.3/32"]
campaign = "prospecting"
[[tenant]]
id = "northam"
sources = ["127.0.0.4/32"]
country = "US"
rule_sets = ["us", "ca"]
TOML
printf '+33612345678\n' > "$WORK/dnc.txt"
# callee;caller — NPV caller IDs, geographic callees. Each run gets callees
# no earlier run called: the fr rule set allows 4 attempts per callee in 30
# days, and these checks are about SIP, not about that cap.
NEXT_CALLEE=100
fresh_csv() { # fresh_csv NAME COUNT -> path
	local f="$WORK/$1.csv" i
	echo SEQUENTIAL > "$f"
	for i in $(seq "$NEXT_CALLEE" $((NEXT_CALLEE + $2 - 1))); do
		printf '331420%05d;33162000001\n' "$i" >> "$f"
	done
	NEXT_CALLEE=$((NEXT_CALLEE + $2))
	echo "$f"
}
csv() { # csv NAME CALLEE CALLER -> path
	printf 'SEQUENTIAL\n%s;%s\n' "$2" "$3" > "$WORK/$1.csv"
	echo "$WORK/$1.csv"
}
# Policy clocks: a Tuesday 11:00 in Paris (open), a public holiday, a
# Saturday and a Tuesday evening.
OPEN_AT=2026-11-17T11:00:00+01:00

# start_cg NAME ADMIN_PORT ARGS...: runs callguard, waits until ready
start_cg() {
	local name=$1 admin=$2; shift 2
	"$BIN" serve --config "${CG_CONFIG:-$WORK/cg.toml}" --admin-listen "127.0.0.1:$admin" --data-dir "$WORK/$name-data" \
		"$@" > "$WORK/$name.log" 2>&1 &
	PIDS="$PIDS $!"
	for _ in $(seq 1 100); do
		curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "callguard ($name) did not start:"; tail -5 "$WORK/$name.log"; exit 2
}

metric() { # metric ADMIN_PORT NAME_WITH_LABELS -> value (0 when absent)
	curl -sf "http://127.0.0.1:$1/metrics" | awk -v k="$2" '$1==k {print $2; f=1} END {if (!f) print 0}'
}

PASS=0 FAIL=0
verdict() { # verdict NAME OK(0/1)
	if [ "$2" = 0 ]; then PASS=$((PASS + 1)); echo "PASS $1"; else FAIL=$((FAIL + 1)); echo "FAIL $1 (logs: $WORK)"; KEEP=1; fi
}

# uas NAME SCENARIO PORT CALLS: background carrier, sets UAS_PID
uas() {
	(cd "$WORK" && exec timeout 60 sipp -sf "$2" -i 127.0.0.1 -p "$3" -m "$4" -nostdin \
		-trace_err -error_file "$WORK/$1-uas-err.log" -timeout 50s > "$WORK/$1-uas.out" 2>&1) &
	UAS_PID=$!
	sleep 0.3
}
# uac NAME SCENARIO CALLS REMOTE ARGS...: runs a dialer to completion, returns SIPp's status
uac() {
	local name=$1 sf=$2 m=$3 remote=$4 inf=${CSV:-}; shift 4
	[ -n "$inf" ] || { fresh_csv "$name-calls" "$m" >/dev/null; inf="$WORK/$name-calls.csv"; }
	(cd "$WORK" && timeout 60 sipp -sf "$sf" -inf "$inf" -p "$UAC_PORT" "$remote" \
		-m "$m" -r 10 -l 10 -nostdin -recv_timeout 8000 -timeout 50s \
		-trace_err -error_file "$WORK/$name-uac-err.log" "$@" > "$WORK/$name-uac.out" 2>&1)
}
reject_scenario() { # STATUS REASON-REGEX|- MAXFWD [RETRY=true|false] [WARNING-REGEX] -> path
	local f="$WORK/reject-$1-$2-$3.xml" check=true re="^ *$2 *\$" retry=${4:-false}
	local warn=${5:-.*} checkwarn=false
	[ "$2" = - ] && { check=false; re='.*'; f="$WORK/reject-$1-any-$3.xml"; }
	[ -n "${5:-}" ] && { checkwarn=true; f="${f%.xml}-w$(printf '%s' "$5" | cksum | cut -d' ' -f1).xml"; }
	sed -e "s/@STATUS@/$1/g; s/@REASON@/$re/; s/@CHECK@/$check/; s/@MAXFWD@/$3/; s/@RETRY@/$retry/" \
		-e "s|@WARNING@|$warn|; s/@CHECKWARN@/$checkwarn/" "$HERE/uac_reject.xml.in" > "$f"
	echo "$f"
}
final_scenario() { # STATUS PHRASE -> path
	local f="$WORK/uas-$1.xml"
	sed -e "s/@STATUS@/$1/g; s/@PHRASE@/$2/" "$HERE/uas_final.xml.in" > "$f"
	echo "$f"
}

start_cg main "$ADMIN" --at "$OPEN_AT" --sip-listen "udp:127.0.0.1:$SIP" --sip-listen "tcp:127.0.0.1:$SIP" \
	--sip-listen "udp:[::1]:$SIP" --sip-listen "tcp:[::1]:$SIP"

uas accept "$HERE/uas.xml" "$CARRIER" 20
uac accept "$HERE/uac.xml" 20 "127.0.0.1:$SIP" -i 127.0.0.1; a=$?
wait "$UAS_PID"; b=$?
verdict "UDP call: INVITE/100/180/200/ACK/BYE through Record-Route (20 calls)" $((a | b))

uas tcp "$HERE/uas.xml" "$CARRIER" 10
uac tcp "$HERE/uac.xml" 10 "127.0.0.1:$SIP" -i 127.0.0.1 -t t1; a=$?
wait "$UAS_PID"; b=$?
verdict "TCP dialer to UDP carrier (double Record-Route, 10 calls)" $((a | b))

uas v6 "$HERE/uas.xml" "$CARRIER" 10
uac v6 "$HERE/uac.xml" 10 "[::1]:$SIP" -i ::1; a=$?
wait "$UAS_PID"; b=$?
verdict "IPv6 dialer to IPv4 carrier (10 calls)" $((a | b))

uas cancel "$HERE/uas_cancel.xml" "$CARRIER" 5
uac cancel "$HERE/uac_cancel.xml" 5 "127.0.0.1:$SIP" -i 127.0.0.1; a=$?
wait "$UAS_PID"; b=$?
verdict "CANCEL while ringing: relayed, 487 back, ACK hop by hop (5 calls)" $((a | b))

uas busy "$(final_scenario 486 'Busy Here')" "$CARRIER" 5
uac busy "$(reject_scenario 486 - 70)" 5 "127.0.0.1:$SIP" -i 127.0.0.1; a=$?
wait "$UAS_PID"; b=$?
verdict "carrier 486 relayed, ACK absorbed and re-generated hop by hop (5 calls)" $((a | b))

uac maxfwd "$(reject_scenario 483 - 0)" 3 "127.0.0.1:$SIP" -i 127.0.0.1
verdict "Max-Forwards 0 -> 483 (3 calls)" $?

before=$(metric "$ADMIN" 'callguard_sip_messages_total{direction="out",method="INVITE"}')
uac unknown "$(reject_scenario 403 source_not_authorized 70)" 3 "127.0.0.1:$SIP" -i 127.0.0.2; a=$?
after=$(metric "$ADMIN" 'callguard_sip_messages_total{direction="out",method="INVITE"}')
[ "$before" = "$after" ] || { echo "  an INVITE from an unknown source was forwarded ($before -> $after)"; a=1; }
verdict "unknown source 127.0.0.2 -> 403 source_not_authorized, nothing forwarded (3 calls)" "$a"

# Policy: one rejection per rule, with status and X-Callguard-Reason checked.
CSV=$(csv bad-callee 12 33162000001) uac invalid "$(reject_scenario 484 invalid_callee 70)" 1 "127.0.0.1:$SIP" -i 127.0.0.1
verdict "callee 12 -> 484 invalid_callee" $?
CSV=$(csv anon 33142000000 anonymous) uac anon "$(reject_scenario 433 anonymous_caller_id 70)" 1 "127.0.0.1:$SIP" -i 127.0.0.1
verdict "anonymous caller ID -> 433 anonymous_caller_id" $?
CSV=$(csv mobile 33142000000 33612345670) uac mobile "$(reject_scenario 403 caller_id_category 70)" 1 "127.0.0.1:$SIP" -i 127.0.0.1
verdict "mobile caller ID -> 403 caller_id_category" $?
CSV=$(csv geo 33142000000 33142000001) uac geo "$(reject_scenario 403 caller_id_category 70)" 1 "127.0.0.1:$SIP" -i 127.0.0.1
verdict "geographic caller ID on an automated call -> 403 caller_id_category" $?
CSV=$(csv dnc 33612345678 33162000001) uac dnc "$(reject_scenario 603 dnc 70)" 1 "127.0.0.1:$SIP" -i 127.0.0.1
verdict "callee on the DNC list -> 603 dnc" $?
CSV=$(csv consent 33142000000 33162000001) uac consent "$(reject_scenario 608 no_consent 70)" 1 "127.0.0.1:$SIP" -i 127.0.0.3
verdict "prospecting call without consent -> 608 no_consent" $?
# Rule 9: four attempts to one callee are forwarded, the fifth is capped.
CAPPED=$(csv capped 33142099999 33162000001)
uas cap "$HERE/uas.xml" "$CARRIER" 4
CSV=$CAPPED uac cap-ok "$HERE/uac.xml" 4 "127.0.0.1:$SIP" -i 127.0.0.1; a=$?
wait "$UAS_PID"; b=$?
CSV=$CAPPED uac cap "$(reject_scenario 480 frequency_cap 70 true)" 1 "127.0.0.1:$SIP" -i 127.0.0.1; c=$?
verdict "4 calls to one callee forwarded, the 5th -> 480 frequency_cap with Retry-After" $((a | b | c))
# Rule 6: a refusal recorded through the API blocks the callee.
code=$(curl -s -o "$WORK/refusal.json" -w '%{http_code}' -X POST "http://127.0.0.1:$ADMIN/v1/refusals" \
	-H 'Content-Type: application/json' -d '{"tenant":"sipp","number":"+33142088888"}')
[ "$code" = 201 ] || echo "  POST /v1/refusals answered $code: $(cat "$WORK/refusal.json")"
CSV=$(csv refused 33142088888 33162000001) uac refused "$(reject_scenario 603 refusal_cooloff 70 true)" 1 "127.0.0.1:$SIP" -i 127.0.0.1
verdict "callee who refused (POST /v1/refusals) -> 603 refusal_cooloff with Retry-After" $?
# Rule 6 from SIP: the dialer's BYE says the callee refused.
REFUSING=$(csv refusing 33142077777 33162000001)
uas bye-refused "$HERE/uas.xml" "$CARRIER" 1
sed 's/^\( *\)CSeq: 2 BYE$/&\n\1X-Disposition: refused/' "$HERE/uac.xml" > "$WORK/uac_refused.xml"
CSV=$REFUSING uac bye-refused "$WORK/uac_refused.xml" 1 "127.0.0.1:$SIP" -i 127.0.0.1; a=$?
wait "$UAS_PID"; b=$?
CSV=$REFUSING uac after-bye "$(reject_scenario 603 refusal_cooloff 70 true)" 1 "127.0.0.1:$SIP" -i 127.0.0.1; c=$?
verdict "BYE with X-Disposition: refused -> next call 603 refusal_cooloff" $((a | b | c))
i=0
for clock in "holiday 2026-11-11T11:00:00+01:00 public_holiday" "weekend 2026-11-21T11:00:00+01:00 weekend" \
	"evening 2026-11-17T21:00:00+01:00 outside_hours"; do
	set -- $clock
	i=$((i + 1))
	port=$((SIP + 10 + i)) admin=$((ADMIN + 10 + i))
	start_cg "$1" "$admin" --at "$2" --sip-listen "udp:127.0.0.1:$port"
	uac "$1" "$(reject_scenario 480 "$3" 70 true)" 1 "127.0.0.1:$port" -i 127.0.0.1
	verdict "$1 ($2) -> 480 $3 with Retry-After" $?
done

# The rule library (tenant northam: rule_sets us + ca), on Saturday 21
# November 2026 at 19:00 in New York and Toronto (18:00 in New Orleans):
# the federal TCPA window allows it, Rhode Island's Saturday hours end at
# 17:00, Canada's weekend hours at 18:00.
NA_AT=2026-11-21T19:00:00-05:00 NA_SIP=$((SIP + 14)) NA_ADMIN=$((ADMIN + 14))
start_cg northam "$NA_ADMIN" --at "$NA_AT" --sip-listen "udp:127.0.0.1:$NA_SIP"
CSV=$(csv us-ri 14015550123 12127365000) uac us-ri "$(reject_scenario 480 outside_hours 70 true 'US-RI R\.I\. Gen\. Laws 5-61-3\.4: calls 10:00.*17:00')" \
	1 "127.0.0.1:$NA_SIP" -i 127.0.0.4
verdict "US state overlay: Rhode Island on Saturday 19:00 -> 480 outside_hours naming US-RI" $?
CSV=$(csv ca-on 14165550123 12127365000) uac ca-on "$(reject_scenario 480 outside_hours 70 true 'CA CRTC')" \
	1 "127.0.0.1:$NA_SIP" -i 127.0.0.4
verdict "Canadian weekend: Toronto on Saturday 19:00 -> 480 outside_hours naming the CRTC rules" $?
printf 'SEQUENTIAL\n12125550123;12127365000\n15045550123;12127365000\n' > "$WORK/na-open.csv"
uas na-open "$HERE/uas.xml" "$CARRIER" 2
CSV=$WORK/na-open.csv uac na-open "$HERE/uac.xml" 2 "127.0.0.1:$NA_SIP" -i 127.0.0.4; a=$?
wait "$UAS_PID"; b=$?
verdict "federal window: New York and New Orleans on Saturday evening complete (2 calls)" $((a | b))
code=$(curl -s -o "$WORK/closure.json" -w '%{http_code}' -X POST "http://127.0.0.1:$NA_ADMIN/v1/closures" \
	-H 'Content-Type: application/json' \
	-d '{"jurisdiction":"US-LA","from":"2026-11-21T00:00:00-06:00","to":"2026-11-23T00:00:00-06:00","reason":"state of emergency"}')
[ "$code" = 201 ] || echo "  POST /v1/closures answered $code: $(cat "$WORK/closure.json")"
CSV=$(csv la-closed 15045550123 12127365000) uac la-closed "$(reject_scenario 480 closure 70 true 'state of emergency')" \
	1 "127.0.0.1:$NA_SIP" -i 127.0.0.4; a=$?
[ "$code" = 201 ] || a=1
verdict "closure (POST /v1/closures US-LA) -> 480 closure with Retry-After" "$a"

# A second instance whose first carrier answers 503 and whose other is silent.
start_cg failover "$ADMIN2" --at "$OPEN_AT" --sip-listen "udp:127.0.0.1:$SIP2" \
	--carrier "udp:127.0.0.1:$CARRIER2" --carrier "udp:127.0.0.1:$CARRIER"
uas f503 "$(final_scenario 503 'Service Unavailable')" "$CARRIER2" 5
U503=$UAS_PID
uas f200 "$HERE/uas.xml" "$CARRIER" 5
uac failover "$HERE/uac.xml" 5 "127.0.0.1:$SIP2" -i 127.0.0.1; a=$?
wait "$UAS_PID"; b=$?
wait "$U503"; c=$?
verdict "carrier 503 -> same call completes on the next carrier (5 calls)" $((a | b | c))

uac silent "$(reject_scenario 408 - 70)" 2 "127.0.0.1:$SIP2" -i 127.0.0.1; a=$?
verdict "no carrier answers -> 408 after failover (2 calls)" "$a"

# Two instances sharing one Redis: the cap holds across them.
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" > "$WORK/redis.log" 2>&1 &
PIDS="$PIDS $!"
sed "s|^data_dir = .*|&\nbackend = \"redis\"\n[state.redis]\nurl = \"redis://127.0.0.1:$REDIS/0\"|" "$WORK/cg.toml" > "$WORK/cg-redis.toml"
for _ in $(seq 1 50); do [ "$(printf 'PING\r\n' | timeout 1 bash -c "exec 9<>/dev/tcp/127.0.0.1/$REDIS || exit 1; cat >&9; head -c 5 <&9" 2>/dev/null)" = "+PONG" ] && break; sleep 0.1; done
CG_CONFIG=$WORK/cg-redis.toml start_cg shared-a $((ADMIN + 20)) --at "$OPEN_AT" --sip-listen "udp:127.0.0.1:$((SIP + 30))"
CG_CONFIG=$WORK/cg-redis.toml start_cg shared-b $((ADMIN + 21)) --at "$OPEN_AT" --sip-listen "udp:127.0.0.1:$((SIP + 31))"
SHARED=$(csv shared 33142066666 33162000001)
uas shared "$HERE/uas.xml" "$CARRIER" 4
CSV=$SHARED uac shared-a "$HERE/uac.xml" 2 "127.0.0.1:$((SIP + 30))" -i 127.0.0.1; a=$?
CSV=$SHARED uac shared-b "$HERE/uac.xml" 2 "127.0.0.1:$((SIP + 31))" -i 127.0.0.1; b=$?
wait "$UAS_PID"; c=$?
CSV=$SHARED uac shared-capped-a "$(reject_scenario 480 frequency_cap 70 true)" 1 "127.0.0.1:$((SIP + 30))" -i 127.0.0.1; d=$?
CSV=$SHARED uac shared-capped-b "$(reject_scenario 480 frequency_cap 70 true)" 1 "127.0.0.1:$((SIP + 31))" -i 127.0.0.1; e=$?
verdict "Redis backend: 2 calls via each of two instances, then 480 frequency_cap on both" $((a | b | c | d | e))

# A carrier given as a SIP domain: NAPTR -> SRV -> A from a local dnsmasq,
# pointing at the SIPp carrier.
dnsmasq --keep-in-foreground --bind-interfaces --no-resolv --no-hosts --listen-address=127.0.0.1 \
	--pid-file= --user=root --port="$DNS" \
	--naptr-record=carrier.test,10,10,S,SIP+D2U,,_sip._udp.carrier.test \
	--srv-host=_sip._udp.carrier.test,sbc.carrier.test,"$CARRIER",0,1 \
	--host-record=sbc.carrier.test,127.0.0.1 > "$WORK/dnsmasq.log" 2>&1 &
PIDS="$PIDS $!"
sed "/^\[\[carrier\]\]/,/^address/d" "$WORK/cg.toml" > "$WORK/cg-dns.toml"
printf '[[carrier]]\nname = "trunk"\ndomain = "carrier.test"\n[dns]\nservers = ["127.0.0.1:%s"]\n' "$DNS" >> "$WORK/cg-dns.toml"
sleep 0.3
CG_CONFIG=$WORK/cg-dns.toml start_cg dns $((ADMIN + 22)) --at "$OPEN_AT" --sip-listen "udp:127.0.0.1:$((SIP + 32))"
uas dns "$HERE/uas.xml" "$CARRIER" 5
uac dns "$HERE/uac.xml" 5 "127.0.0.1:$((SIP + 32))" -i 127.0.0.1; a=$?
wait "$UAS_PID"; b=$?
verdict "carrier as a SIP domain (NAPTR, SRV, A from dnsmasq): 5 calls complete" $((a | b))

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
