# Shared load-step logic for sipp-load.sh and compare-kamailio.sh (sourced).
#
# One step = one rate R for STEP_S seconds of the accept path:
#   SIPp UAC → proxy → SIPp UAS (carrier): INVITE/100/180/200/ACK/BYE/200,
#   or, with UAC_SCEN=uac_dnc.xml and DNC_CALLEES=FILE, of the reject path
#   (callees from the DNC list: INVITE/603/ACK, nothing forwarded);
#   distinct callees, no hold time (BYE right after ACK). Every call of a
#   run goes to a callee no earlier call of that run used (a fresh range
#   per step): callguard's fr rule set counts attempts per callee (4 in 30
#   days), so reusing callees would measure the cap, not the accept path.
# A step passes when: failed calls < 0.1 %, retransmissions (UAC + UAS)
# < 0.1 % of calls, UAS failures < 0.1 %, and ≥ 95 % of the target rate was
# offered. Same criteria as the Kamailio anchor (shared/anchors).

SCEN=${SCEN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../sipp-scenarios" && pwd)}
STEP_S=${STEP_S:-20}
UAC_PORT=${UAC_PORT:-5090}
CARRIER_PORT=${CARRIER_PORT:-5080}
HZ=$(getconf CLK_TCK)

nap() { sleep "$1" & wait $!; }
csvget() { awk -F';' -v n="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==n) c=i} END{if(c) print $c}' "$1" 2>/dev/null; }
kticks() { local t=0 p v; for p in "$@"; do v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null) && t=$((t + v)); done; echo "$t"; }
child_of() { ps -o pid= --ppid "$1" | head -1 | tr -d ' '; }
steal() { awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

gen_callees() { # gen_callees FILE START COUNT: distinct French geographic callees (+3314xxxxxxx), NPV callers
	{
		echo SEQUENTIAL
		if [ -n "${DNC_CALLEES:-}" ]; then
			# The reject path: callees taken in turn from DNC_CALLEES (one number per line, no +).
			awk -v s="$2" -v n="$3" 'NR==FNR{c[m++]=$1; next} END{for(i=s;i<s+n;i++) printf "%s;33162%06d\n", c[i % m], i % 1000}' "$DNC_CALLEES" /dev/null
		else
			awk -v s="$2" -v n="$3" 'BEGIN{for(i=s;i<s+n;i++) printf "3314%07d;33162%06d\n", i % 10000000, i % 1000}'
		fi
	} > "$1"
}

# step NAME PROXY_ADDR RATE OUTDIR PIDS... → prints one TSV row, returns 0 on PASS
step() {
	local name=$1 proxy=$2 r=$3 out=$4; shift 4
	local pids="$*" m=$((r * STEP_S)) d="$out/$name-$r" n=2
	# A rate run again (for a median) keeps each step's raw files.
	while [ -e "$d" ]; do d="$out/$name-$r.$n"; n=$((n + 1)); done
	local lim=$((r > 1000 ? r : 1000))
	mkdir -p "$d"
	local first; first=$(cat "$out/next-callee" 2>/dev/null || echo 0)
	echo $((first + m)) > "$out/next-callee"
	gen_callees "$d/callees.csv" "$first" "$m"
	(cd "$d" && exec timeout $((STEP_S + 90)) sipp -sf "$SCEN/uas.xml" -i 127.0.0.1 -p "$CARRIER_PORT" -nostdin \
		-buff_size 4194304 -trace_stat -fd 1 -timeout $((STEP_S + 80))s > uas.out 2>&1) &
	local uas_t=$!
	nap 0.5
	(cd "$d" && exec timeout $((STEP_S + 60)) sipp -sf "$SCEN/${UAC_SCEN:-uac.xml}" -inf "$d/callees.csv" -i 127.0.0.1 -p "$UAC_PORT" \
		"$proxy" ${UAC_EXTRA:-} -r "$r" -rp 1000 -m "$m" -l "$lim" -nostdin -buff_size 4194304 -recv_timeout 5000 \
		-trace_stat -fd 1 -trace_rtt -rtt_freq 1000 -timeout $((STEP_S + 40))s -d 0 > uac.out 2>&1) &
	local uac_t=$!
	nap 3
	local k0 k1 st0 st1 tt0 tt1
	k0=$(kticks $pids); read -r st0 tt0 <<< "$(steal)"
	nap $((STEP_S - 6))
	k1=$(kticks $pids); read -r st1 tt1 <<< "$(steal)"
	wait "$uac_t"
	nap 2.5
	local s; s=$(child_of "$uas_t"); [ -n "$s" ] && kill -USR1 "$s" 2>/dev/null
	for _ in $(seq 1 20); do kill -0 "$uas_t" 2>/dev/null || break; nap 0.5; done
	kill "$uas_t" 2>/dev/null; wait "$uas_t" 2>/dev/null
	local f u created succ failed retr uas_failed
	f=$(ls "$d"/uac*_.csv 2>/dev/null | head -1); u=$(ls "$d"/uas*_.csv 2>/dev/null | head -1)
	created=$(csvget "$f" TotalCallCreated); succ=$(csvget "$f" 'SuccessfulCall(C)')
	failed=$(csvget "$f" 'FailedCall(C)'); retr=$(csvget "$f" 'Retransmissions(C)')
	uas_failed=$(csvget "$u" 'FailedCall(C)')
	retr=$(( ${retr:-0} + $(csvget "$u" 'Retransmissions(C)' || echo 0) ))
	local p50 p99 pmax
	read -r p50 p99 pmax <<< "$(awk -F';' '$3==1{print $2}' "$d"/uac*_rtt.csv 2>/dev/null | sort -n |
		awk '{v[NR]=$1} END{if(NR==0){print "- - -"; exit} a=int(NR*0.5); if(a<1)a=1; b=int(NR*0.99); if(b<1)b=1; print v[a], v[b], v[NR]}')"
	local ach; ach=$(awk -F';' -v m="$m" 'NR==1{for(i=1;i<=NF;i++) if($i=="TotalCallCreated") c=i}
		NR==2{split($1,a,"\t"); t0=a[3]}
		NR>1{split($3,b,"\t"); t=b[3]; n=$c;
		     if (n>=m) { if (n>pn) t=pt+(m-pn)/(n-pn)*(t-pt); printf "%.0f", m/(t-t0); done=1; exit }
		     pt=t; pn=n}
		END{if(!done) { if (pt>t0) printf "%.0f", pn/(pt-t0); else print 0 }}' "$f")
	local win=$((STEP_S - 6)) cpu us stl
	cpu=$(echo "scale=1; ($k1 - $k0) * 100 / ($win * $HZ)" | bc)
	us="-"; [ "${ach:-0}" -gt 0 ] && us=$(echo "scale=0; $cpu * 10000 / $ach" | bc)
	stl=$(echo "scale=1; ($st1 - $st0) * 100 / ($tt1 - $tt0 + 1)" | bc)
	local verdict=PASS
	[ "${created:-0}" -lt "$m" ] && verdict=FAIL
	[ "$(echo "${failed:-1} * 1000 > ${created:-0}" | bc)" = 1 ] && verdict=FAIL
	[ "$(echo "${retr:-1} * 1000 > ${created:-0}" | bc)" = 1 ] && verdict=FAIL
	[ "$(echo "${uas_failed:-1} * 1000 > ${created:-0}" | bc)" = 1 ] && verdict=FAIL
	[ "$(echo "${ach:-0} < $r * 0.95" | bc)" = 1 ] && verdict=FAIL
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$r" "${created:-0}" "${succ:-0}" \
		"${failed:-?}" "${retr:-?}" "${ach:-0}" "$p50" "$p99" "$pmax" "$cpu" "$us" "$stl" "$verdict" | tee -a "$out/results.tsv"
	[ "$verdict" = PASS ]
}

HEADER=$'proxy\ttarget_cps\tcalls\tok\tfailed\tretrans\tachieved_cps\trt_p50_ms\trt_p99_ms\trt_max_ms\tproxy_cpu_pct\tproxy_us_per_call\tsteal_pct\tverdict'

# sweep NAME PROXY_ADDR "RATES" OUTDIR PIDS... → sets MAX (highest passing rate)
sweep() {
	local name=$1 proxy=$2 rates=$3 out=$4; shift 4
	local r last=0 fail=0
	for r in $rates; do
		if step "$name" "$proxy" "$r" "$out" "$@"; then last=$r; else fail=$r; break; fi
		nap 3
	done
	if [ "$fail" -gt 0 ] && [ "${REFINE:-1}" = 1 ]; then
		local lo=$last hi=$fail mid
		for _ in 1 2; do
			mid=$(( (lo + hi) / 2 / 250 * 250 ))
			[ "$mid" -le "$lo" ] && break
			nap 5
			if step "$name" "$proxy" "$mid" "$out" "$@"; then lo=$mid; else hi=$mid; fi
		done
		last=$lo
	fi
	MAX=$last
}

# start_callguard CONFIG ADMIN_PORT OUTDIR: a fresh state (attempts counted by an
# earlier run would cap its callees), the clock inside French legal hours; sets CG
# and adds it to PIDS; exits when it does not become ready.
start_callguard() {
	local cfg=$1 admin=$2 out=$3
	rm -rf "$(dirname "$cfg")/cg-data"
	"$BIN" serve --config "$cfg" --at 2026-11-17T11:00:00+01:00 > "$out/callguard.log" 2>&1 &
	CG=$!
	PIDS="$PIDS $CG"
	for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; nap 0.2; done
	kill -0 "$CG" 2>/dev/null || { echo "callguard did not start:"; cat "$out/callguard.log"; exit 1; }
}
