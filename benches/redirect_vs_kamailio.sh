#!/usr/bin/env bash
# Personal-manager look-ups: the Kamailio redirect anchor and callgate on the same SIPp load, in
# one run. Prints, for both, successful/failed calls, the response-time repartition and CPU per
# decision, and callgate's ratio to Kamailio. Loopback only.
#
#   bash benches/redirect_vs_kamailio.sh [CALLS] [RATE] [INDEX_SIZE] [ROUNDS]
#       (defaults 100000 10000 100000 3)
#
# Both run side by side (each idle while the other is loaded), get WARMUP (default 20000)
# unmeasured look-ups first, then each round loads both, one after the other, alternating which
# goes first (K C, C K, K C...).
# On a shared VM the CPU cost of the very same work drifts by 10-20% over minutes (Kamailio's own
# figure moved between 36 and 49 µs per decision in four back-to-back runs), so a single pair
# measures the drift as much as the difference; the totals over alternating rounds cancel most
# of it. The per-round ratios are printed too, so the spread stays visible.
#
# Needs: apt-get install sip-tester kamailio kamailio-sqlite-modules; python3; the anchors in
# benches/anchors (ANCHORS=... to point elsewhere).
set -euo pipefail
calls=${1:-100000} rate=${2:-10000} size=${3:-100000} rounds=${4:-3} warmup=${WARMUP:-20000}
here=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$here/anchors}
d=$(mktemp -d /tmp/callgate-bench.XXXXXX)
token=bench-token-0123456789abcdef
cleanup() { [ -n "${kpid:-}" ] && kill "$kpid" 2>/dev/null; [ -n "${cpid:-}" ] && kill "$cpid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== building callgate (release)"
(cd "$here" && cargo build --release --quiet)
python3 "$anchors/numbers.py" "$d" "$size"

run_sipp() { # target label [count, default CALLS]
  sipp "$1" -sf "$anchors/sipp-redirect-uac.xml" -inf "$d/callers.csv" -m "${3:-$calls}" -r "$rate" -l 20000 \
       -i 127.0.0.1 -timeout 120s -trace_screen -screen_file "$d/$2.screen" -nostdin >/dev/null 2>&1 || true
}
# user and system ticks of every process named $1 (the anchor's cpu_ticks.sh gives their sum)
split_ticks() { for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = "$1" ] && awk '{print $14, $15}' $p/stat; done | awk '{u+=$1; s+=$2} END {print u+0, s+0}'; }
# per-thread user+system ticks of process $1, as "name ticks" lines (threads of one name summed)
thread_ticks() { for t in /proc/$1/task/*; do echo "$(tr ' ' _ <$t/comm) $(awk '{print $14+$15}' $t/stat)"; done 2>/dev/null | awk '{s[$1]+=$2} END {for (n in s) print n, s[n]}' | sort; }
counter() { awk -F'|' -v n="$2" '$1 ~ n {v=$3} END {gsub(/ /,"",v); print v+0}' "$1"; }
repartition() { awk '/Average Response Time Repartition/ {p=1; next} /Call Length Repartition/ {p=0} p && /<=|>=/ {print "   " $0}' "$1" | tail -8; }

echo "== starting callgate (udp 127.0.0.1:5072) and loading the same numbers and mappings"
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

# One measured load of $1 (kamailio or callgate) into $d/$1-$round.*: successes, failures, ticks.
measure() {
  local who=$1 target a t u0 s0 u1 s1
  if [ "$who" = kamailio ]; then target=127.0.0.1:5070; else target=127.0.0.1:5072; thread_ticks $cpid >"$d/threads0-$round"; fi
  a=$("$anchors/cpu_ticks.sh" "$who"); read -r u0 s0 < <(split_ticks "$who")
  run_sipp "$target" "$who-$round"
  t=$(( $("$anchors/cpu_ticks.sh" "$who") - a )); read -r u1 s1 < <(split_ticks "$who")
  echo "$(counter "$d/$who-$round.screen" "Successful call") $(counter "$d/$who-$round.screen" "Failed call") $t $((u1-u0)) $((s1-s0))" >"$d/$who-$round.cpu"
  [ "$who" = kamailio ] || thread_ticks $cpid >"$d/threads1-$round"
}
us() { python3 -c "print(f'{$1*10000/max($2,1):.1f}')"; }
# callgate's CPU per decision over Kamailio's: ratio CALLGATE_TICKS CALLGATE_OK KAMAILIO_TICKS KAMAILIO_OK
ratio() { python3 -c "print(f'{($1/max($2,1))/max($3/max($4,1),1e-9):.2f}')"; }
echo "== starting the Kamailio redirect anchor (udp 127.0.0.1:5070); both stay up, idle while the other is loaded"
kpidfile=$("$anchors/run-kamailio.sh" redirect "$d"); kpid=$(cat "$kpidfile")
# Unmeasured warm-up of both: first-use costs (page faults while tables and queues grow, Kamailio's
# lazily opened database) are not the steady state either of them runs in.
echo "== warm-up: $warmup look-ups each, not measured"
run_sipp 127.0.0.1:5070 warmup-kamailio "$warmup"
run_sipp 127.0.0.1:5072 warmup-callgate "$warmup"
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="kamailio callgate"; else order="callgate kamailio"; fi
  echo "== round $round of $rounds: $order ($calls look-ups at $rate/s each; Kamailio on udp 127.0.0.1:5070, callgate on 5072)"
  for who in $order; do measure "$who"; done
  read -r ks kf kt ku ksy <"$d/kamailio-$round.cpu"; read -r cs cf ct cu csy <"$d/callgate-$round.cpu"
  echo "   kamailio: successful $ks, failed $kf, CPU $kt ticks (user $ku, system $ksy) = $(us $kt $ks) µs per decision"
  echo "   callgate: successful $cs, failed $cf, CPU $ct ticks (user $cu, system $csy) = $(us $ct $cs) µs per decision"
  echo "   ratio this round: $(ratio $ct $cs $kt $ks)"
  echo "   callgate's threads (ticks): $(join -a2 -e0 -o 2.1,1.2,2.2 "$d/threads0-$round" "$d/threads1-$round" | awk '$3-$2 > 0 {printf "%s %d, ", $1, $3-$2}')"
done

for who in kamailio callgate; do
  read -r s f t < <(cat "$d"/$who-*.cpu | awk '{s+=$1; f+=$2; t+=$3} END {print s, f, t}')
  declare "${who}_ok=$s" "${who}_ticks=$t"
  echo; echo "-- $who, all $rounds rounds: successful $s, failed $f, CPU $t ticks = $(us $t $s) µs per decision"
  echo "   response times, last round:"; repartition "$d/$who-$rounds.screen"
done
echo
echo "ratio callgate/kamailio CPU per decision, all rounds: $(ratio $callgate_ticks $callgate_ok $kamailio_ticks $kamailio_ok)"
echo "callgate RSS with $size numbers in the index: $((rss_kb/1024)) MB"
echo "(files in $d)"
