#!/usr/bin/env bash
# Personal-manager look-ups: the Kamailio redirect anchor and callgate, one after the other, on
# the same SIPp load, in one run. Prints, for both, successful/failed calls, the response-time
# repartition and CPU per decision, and callgate's ratio to Kamailio. Loopback only.
#
#   bash benches/redirect_vs_kamailio.sh [CALLS] [RATE] [INDEX_SIZE]     (defaults 100000 10000 100000)
#
# Needs: apt-get install sip-tester kamailio kamailio-sqlite-modules; python3; the anchors in
# ../shared/anchors (ANCHORS=... to point elsewhere).
set -euo pipefail
calls=${1:-100000} rate=${2:-10000} size=${3:-100000}
here=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$here/../shared/anchors}
d=$(mktemp -d /tmp/callgate-bench.XXXXXX)
token=bench-token-0123456789abcdef
cleanup() { [ -n "${kpid:-}" ] && kill "$kpid" 2>/dev/null; [ -n "${cpid:-}" ] && kill "$cpid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== building callgate (release)"
(cd "$here" && cargo build --release --quiet)
python3 "$anchors/numbers.py" "$d" "$size"

run_sipp() { # target label
  sipp "$1" -sf "$anchors/sipp-redirect-uac.xml" -inf "$d/callers.csv" -m "$calls" -r "$rate" -l 20000 \
       -i 127.0.0.1 -timeout 120s -trace_screen -screen_file "$d/$2.screen" -nostdin >/dev/null 2>&1 || true
}
# user and system ticks of every process named $1 (the anchor's cpu_ticks.sh gives their sum)
split_ticks() { for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = "$1" ] && awk '{print $14, $15}' $p/stat; done | awk '{u+=$1; s+=$2} END {print u+0, s+0}'; }
# per-thread user+system ticks of process $1, as "name ticks" lines (threads of one name summed)
thread_ticks() { for t in /proc/$1/task/*; do echo "$(tr ' ' _ <$t/comm) $(awk '{print $14+$15}' $t/stat)"; done 2>/dev/null | awk '{s[$1]+=$2} END {for (n in s) print n, s[n]}' | sort; }
counter() { awk -F'|' -v n="$2" '$1 ~ n {v=$3} END {gsub(/ /,"",v); print v+0}' "$1"; }
repartition() { awk '/Average Response Time Repartition/ {p=1; next} /Call Length Repartition/ {p=0} p && /<=|>=/ {print "   " $0}' "$1" | tail -8; }

echo "== Kamailio redirect anchor (udp 127.0.0.1:5070)"
kpidfile=$("$anchors/run-kamailio.sh" redirect "$d")
kpid=$(cat "$kpidfile")
a=$("$anchors/cpu_ticks.sh" kamailio); read -r ku0 ks0 < <(split_ticks kamailio)
run_sipp 127.0.0.1:5070 kamailio
kt=$(( $("$anchors/cpu_ticks.sh" kamailio) - a )); read -r ku1 ks1 < <(split_ticks kamailio)
ksplit="user $((ku1-ku0)), system $((ks1-ks0))"
kill "$kpid"; kpid=""

echo "== callgate (udp 127.0.0.1:5072)"
CALLGATE__SIP__UDP=127.0.0.1:5072 CALLGATE__SIP__TCP="" CALLGATE__SIP__TLS="" CALLGATE__HTTP__LISTEN=127.0.0.1:18080 \
CALLGATE__STORE__PATH="$d/cg/callgate.db" CALLGATE__ADMIN__TOKEN=$token CALLGATE__LOG__LEVEL=warn \
  "$here/target/release/callgate" run 2>"$d/callgate.log" &
cpid=$!
api() { curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }
for _ in $(seq 100); do curl -sf http://127.0.0.1:18080/ready >/dev/null && break; sleep 0.1; done
pid=$(api -X POST http://127.0.0.1:18080/api/v1/portals -d '{"domain":"bench.bitrix24.ru"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
api -X PUT "http://127.0.0.1:18080/api/v1/portals/$pid/settings" \
  -d '{"active":true,"incoming":{"default_responsible":1},"outgoing":{"default_responsible":1},"pbx_host":"127.0.0.1:5080"}' >/dev/null
python3 - "$d/mappings.csv" "$pid" "$token" <<'PY'
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", 18080)
for line in open(sys.argv[1]):
    user, ext = line.strip().split(",")
    c.request("POST", f"/api/v1/portals/{sys.argv[2]}/mappings", json.dumps({"user_id": int(user), "extension": ext}),
              {"Authorization": f"Bearer {sys.argv[3]}", "Content-Type": "application/json"})
    r = c.getresponse(); r.read(); assert r.status == 201, r.status
PY
api -X POST "http://127.0.0.1:18080/api/v1/portals/$pid/index" -H 'content-type: text/csv' --data-binary "@$d/pm.csv" >/dev/null
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$cpid/status)
a=$("$anchors/cpu_ticks.sh" callgate); read -r cu0 cs0 < <(split_ticks callgate); thread_ticks $cpid >"$d/threads0"
run_sipp 127.0.0.1:5072 callgate
thread_ticks $cpid >"$d/threads1"
ct=$(( $("$anchors/cpu_ticks.sh" callgate) - a )); read -r cu1 cs1 < <(split_ticks callgate)
csplit="user $((cu1-cu0)), system $((cs1-cs0))"

for who in kamailio callgate; do
  s=$(counter "$d/$who.screen" "Successful call"); f=$(counter "$d/$who.screen" "Failed call")
  t=$([ $who = kamailio ] && echo $kt || echo $ct); sp=$([ $who = kamailio ] && echo "$ksplit" || echo "$csplit")
  echo; echo "-- $who: successful $s, failed $f, CPU $t ticks ($sp) = $(python3 -c "print(f'{$t*10000/max($s,1):.1f}')") µs per decision"
  repartition "$d/$who.screen"
done
echo
python3 -c "print(f'ratio callgate/kamailio CPU per decision: {($ct/max($(counter "$d/callgate.screen" "Successful call"),1))/max($kt/max($(counter "$d/kamailio.screen" "Successful call"),1),1e-9):.2f}')"
echo "callgate's threads (ticks during the run): $(join -a2 -e0 -o 2.1,1.2,2.2 "$d/threads0" "$d/threads1" | awk '$3-$2 > 0 {printf "%s %d, ", $1, $3-$2}')"
echo "callgate RSS with $size numbers in the index: $((rss_kb/1024)) MB"
echo "(files in $d)"
