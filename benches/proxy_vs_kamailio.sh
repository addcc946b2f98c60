#!/usr/bin/env bash
# Proxied calls (INVITE, 180, 200, ACK, BYE, 200 through a record-routing proxy): the Kamailio
# proxy anchor and callgate (call tracking on), one after the other, on the same SIPp load, in
# one run. Kamailio and callgate both run at RATE; callgate also at 2 x RATE (the target: no
# failed call at twice the rate Kamailio sustains). Prints successful/failed calls, the
# response-time repartition, CPU per call and callgate's ratio to Kamailio. Loopback only.
#
#   bash benches/proxy_vs_kamailio.sh [CALLS] [RATE]        (defaults 20000 2000)
#   ACTIVE=false bash benches/proxy_vs_kamailio.sh ...      (portal inactive: no CRM recording)
#   CALLGATE_BIN=path/to/callgate bash benches/...          (that binary, no build)
#
# Needs: apt-get install sip-tester kamailio; python3; the anchors in benches/anchors.
set -euo pipefail
calls=${1:-20000} rate=${2:-2000} active=${ACTIVE:-true}
here=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$here/anchors}
d=$(mktemp -d /tmp/callgate-proxy-bench.XXXXXX)
token=bench-token-0123456789abcdef
cleanup() { for p in ${kpid:-} ${cpid:-} ${apid:-}; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

bin=${CALLGATE_BIN:-$here/target/release/callgate}
if [ -z "${CALLGATE_BIN:-}" ]; then
  echo "== building callgate (release)"
  (cd "$here" && cargo build --release --quiet)
fi
# One caller per call: legs without X-Call-Id of the same customer join one call (DESIGN.md §2),
# so a small caller list would merge thousands of legs into a few calls.
python3 "$anchors/numbers.py" "$d" $((calls * 2)) >/dev/null

start_agent() { # the agent phone on 5090, answering every call
  sipp -sf "$anchors/sipp-agent-uas.xml" -i 127.0.0.1 -p 5090 -bg -nostdin -trace_screen -screen_file "$d/agent-$1.screen" >/dev/null 2>&1 || true
  sleep 0.5
  apid=$(pgrep -n -f "sipp-agent-uas.xml" || true)
}
stop_agent() { [ -n "${apid:-}" ] && kill "$apid" 2>/dev/null || true; sleep 0.5; apid=""; }
run_pbx() { # target label rate
  sipp "$1" -sf "$anchors/sipp-pbx-uac.xml" -s agent101 -inf "$d/callers.csv" -i 127.0.0.1 -p 5095 \
       -m "$calls" -r "$3" -l 20000 -timeout 180s -trace_screen -screen_file "$d/$2.screen" -nostdin >/dev/null 2>&1 || true
}
split_ticks() { for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = "$1" ] && awk '{print $14, $15}' $p/stat; done | awk '{u+=$1; s+=$2} END {print u+0, s+0}'; }
counter() { awk -F'|' -v n="$2" '$1 ~ n {v=$3} END {gsub(/ /,"",v); print v+0}' "$1"; }
repartition() { awk '/Average Response Time Repartition/ {p=1; next} /Call Length Repartition/ {p=0} p && /<=|>=/ {print "   " $0}' "$1" | tail -8; }
declare -A ticks split

echo "== Kamailio proxy anchor (udp 127.0.0.1:5071) at $rate/s"
start_agent kamailio
kpid=$(cat "$("$anchors/run-kamailio.sh" proxy "$d")")
a=$("$anchors/cpu_ticks.sh" kamailio); read -r u0 s0 < <(split_ticks kamailio)
run_pbx 127.0.0.1:5071 kamailio "$rate"
ticks[kamailio]=$(( $("$anchors/cpu_ticks.sh" kamailio) - a )); read -r u1 s1 < <(split_ticks kamailio)
split[kamailio]="user $((u1-u0)), system $((s1-s0))"
kill "$kpid"; kpid=""; stop_agent

echo "== callgate (udp 127.0.0.1:5072)"
CALLGATE__SIP__UDP=127.0.0.1:5072 CALLGATE__SIP__TCP="" CALLGATE__SIP__TLS="" CALLGATE__HTTP__LISTEN=127.0.0.1:18081 \
CALLGATE__STORE__PATH="$d/cg/callgate.db" CALLGATE__ADMIN__TOKEN=$token CALLGATE__LOG__LEVEL=warn \
  "$bin" run 2>"$d/callgate.log" &
cpid=$!
api() { curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }
for _ in $(seq 100); do curl -sf http://127.0.0.1:18081/ready >/dev/null && break; sleep 0.1; done
pid=$(api -X POST http://127.0.0.1:18081/api/v1/portals -d '{"domain":"bench.bitrix24.ru"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
api -X PUT "http://127.0.0.1:18081/api/v1/portals/$pid/settings" \
  -d '{"active":'"$active"',"incoming":{"default_responsible":1},"outgoing":{"default_responsible":1},"pbx_host":"127.0.0.1:5095","trusted_pbx":["127.0.0.1"]}' >/dev/null
api -X POST "http://127.0.0.1:18081/api/v1/portals/$pid/mappings" \
  -d '{"user_id":101,"extension":"agent101","contact":"sip:agent101@127.0.0.1:5090"}' >/dev/null
for r in "$rate" "$((rate * 2))"; do
  label=callgate-$r
  echo "== callgate at $r/s"
  start_agent "$label"
  a=$("$anchors/cpu_ticks.sh" callgate); read -r u0 s0 < <(split_ticks callgate)
  run_pbx 127.0.0.1:5072 "$label" "$r"
  ticks[$label]=$(( $("$anchors/cpu_ticks.sh" callgate) - a )); read -r u1 s1 < <(split_ticks callgate)
  split[$label]="user $((u1-u0)), system $((s1-s0))"
  stop_agent
done
rss_mb=$(( $(awk '/VmHWM/ {print $2}' /proc/$cpid/status) / 1024 ))
sleep 3  # linger: the last calls finish
tracked=$(api "http://127.0.0.1:18081/api/v1/calls?limit=10000" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(sum(1 for x in c if x["outcome"] == "answered"), "answered of", len(c))')

per_call() { python3 -c "print(f'{$1*10000/max($2,1):.1f}')"; }
for who in kamailio "callgate-$rate" "callgate-$((rate * 2))"; do
  s=$(counter "$d/$who.screen" "Successful call"); f=$(counter "$d/$who.screen" "Failed call")
  echo; echo "-- $who: successful $s, failed $f, CPU ${ticks[$who]} ticks (${split[$who]}) = $(per_call "${ticks[$who]}" "$s") µs per call"
  repartition "$d/$who.screen"
done
ks=$(counter "$d/kamailio.screen" "Successful call"); cs=$(counter "$d/callgate-$rate.screen" "Successful call")
echo
python3 -c "print(f'ratio callgate/kamailio CPU per call at {$rate}/s: {(${ticks[callgate-$rate]}/max($cs,1))/max(${ticks[kamailio]}/max($ks,1),1e-9):.2f}')"
echo "tracker (last calls.keep_finished kept): $tracked; callgate peak RSS: $rss_mb MB"
echo "(files in $d)"
