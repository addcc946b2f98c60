#!/usr/bin/env bash
# Routing decisions with and without browser calls being set up (issue 17: media never blocks
# SIP). The same SIPp routing load (`sipp-redirect-uac.xml`: INVITE to the routing user, 302,
# ACK) runs twice per round against one callgate: alone ("quiet"), and while the WebRTC load
# client (`benches/routing_with_media.rs`: AGENTS browser agents registered over the WebSocket,
# each answering with a webrtc-rs peer connection, the soak client's FakeBrowser; a UDP PBX
# calling them) sets up BROWSER_RATE browser calls a second ("browsers"). Beside SIPp, the same
# binary in probe mode (PROBE=1) sends PROBE_RATE (default 200) routing requests a second of its
# own, one at a time, and times each answer in microseconds: SIPp's response times come in
# millisecond steps, too coarse for a sub-millisecond p99 (SIPp's p99 is printed too). Prints the
# probe's p99 of both phases and their ratio, per round and over all rounds. Rounds alternate
# which phase goes first (Q B, B Q...). Loopback only.
#
#   bash benches/routing_with_media.sh [CALLS] [RATE] [BROWSER_RATE] [ROUNDS]
#       (defaults 20000 1000 20 2: 20 s of routing load per phase)
#
# CALLGATE_BIN=PATH and CLIENT_BIN=PATH use those binaries instead of building (release);
# AGENTS (default 20) browser agents; HOLD_MS (default 2000) each browser call's length.
# Needs: apt-get install sip-tester; python3; curl. The anchors are in benches/anchors.
set -euo pipefail
calls=${1:-20000} rate=${2:-1000} brate=${3:-20} rounds=${4:-2}
agents=${AGENTS:-20} hold=${HOLD_MS:-2000}
here=$(cd "$(dirname "$0")/.." && pwd)
anchors=$here/benches/anchors
d=$(mktemp -d /tmp/callgate-bench-media.XXXXXX)
token=bench-token-0123456789abcdef
http=127.0.0.1:18082 sip=127.0.0.1:5073 pbx=127.0.0.1:5081 realm=bench-media.bitrix24.ru
cleanup() { for p in ${lpid:-} ${cpid:-}; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

target=$(cd "$here" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if [ -z "${CALLGATE_BIN:-}" ]; then
  echo "== building callgate (release)"
  (cd "$here" && cargo build --release --quiet)
  CALLGATE_BIN=$target/release/callgate
fi
if [ -z "${CLIENT_BIN:-}" ]; then
  echo "== building the browser-call load client (bench profile)"
  CLIENT_BIN=$(cd "$here" && cargo bench --bench routing_with_media --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "routing_with_media" and m.get("executable"):
        print(m["executable"])')
fi
python3 "$anchors/numbers.py" "$d" 10000 >/dev/null
cp "$anchors/sipp-redirect-uac.xml" "$d/route.xml"

echo "== starting callgate (sip udp $sip, http $http; one UDP receive thread, the default)"
CALLGATE__SIP__UDP=$sip CALLGATE__SIP__TCP="" CALLGATE__SIP__TLS="" CALLGATE__HTTP__LISTEN=$http \
CALLGATE__STORE__PATH="$d/cg/callgate.db" CALLGATE__ADMIN__TOKEN=$token CALLGATE__LOG__LEVEL=warn \
CALLGATE__MEDIA__WEBRTC_PORTS=46000-46999 CALLGATE__MEDIA__RTP_PORTS=36000-36999 \
  "$CALLGATE_BIN" run 2>"$d/callgate.log" &
cpid=$!
for _ in $(seq 100); do curl -sf "http://$http/ready" >/dev/null && break; sleep 0.1; done

echo "== one portal in WebRTC mode: the routing index (10,000 numbers), $agents browser agents"
python3 - "$d" "$http" "$token" "$realm" "$pbx" "$agents" <<'PY'
import http.client, json, sys
d, host, token, realm, pbx, agents = sys.argv[1:7]
h, p = host.split(":")
c = http.client.HTTPConnection(h, int(p))
def api(method, path, body=None, ctype="application/json"):
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    c.request(method, path, data, {"Authorization": f"Bearer {token}", "Content-Type": ctype})
    r = c.getresponse(); text = r.read()
    assert r.status < 300, (method, path, r.status, text)
    return json.loads(text) if text else None
pid = api("POST", "/api/v1/portals", {"domain": realm})["id"]
s = api("GET", f"/api/v1/portals/{pid}/settings")
s.update({"active": True, "pbx_host": pbx, "telephony_mode": "webrtc"})
s["incoming"]["default_responsible"] = 1
s["outgoing"]["default_responsible"] = 1
api("PUT", f"/api/v1/portals/{pid}/settings", s)
for line in open(f"{d}/mappings.csv"):
    user, ext = line.strip().split(",")
    api("POST", f"/api/v1/portals/{pid}/mappings", {"user_id": int(user), "extension": ext})
with open(f"{d}/agents.txt", "w") as out:
    for i in range(int(agents)):
        ext = str(9001 + i)
        api("POST", f"/api/v1/portals/{pid}/mappings", {"user_id": 9001 + i, "extension": ext})
        out.write(f"{ext} {api('POST', f'/api/v1/portals/{pid}/agents/{ext}/credentials')['password']}\n")
api("POST", f"/api/v1/portals/{pid}/index", open(f"{d}/pm.csv").read(), "text/csv")
PY

# One routing load: SIPp (response times in ms steps into $d/$1.rtt, its screen into $d/$1.screen)
# and, while it runs, the probe (µs, one a line, into $d/$1.us; its summary into $d/$1.probe).
route() {
  local n=${2:-$calls} psecs
  psecs=$(( n / rate - 2 )); [ "$psecs" -ge 1 ] || psecs=1
  (cd "$d" && rm -f route_*_rtt.csv && sipp "$sip" -sf route.xml -inf callers.csv -m "$n" -r "$rate" -l 20000 -i 127.0.0.1 \
     -timeout 120s -trace_rtt -rtt_freq 1 -trace_screen -screen_file "$1.screen" -nostdin >/dev/null 2>&1 || true) &
  local spid=$!
  sleep 1
  CG_SIP=$sip PROBE=1 PROBE_RATE=${PROBE_RATE:-200} PROBE_SECS=$psecs PROBE_OUT="$d/$1.us" "$CLIENT_BIN" >"$d/$1.probe" 2>&1 || true
  wait "$spid"
  cat "$d"/route_*_rtt.csv 2>/dev/null | awk -F';' 'NR > 1 && $2 ~ /^[0-9.]+$/ {print $2}' >"$d/$1.rtt"
}
# p99 of the values in files $@, and how many there are.
p99() { cat "$@" | sort -g | awk '{v[NR]=$1} END {if (NR == 0) {print "nan 0"; exit} i=int(NR*0.99); if (i < 1) i=1; printf "%g %d\n", v[i], NR}'; }
counter() { awk -F'|' -v n="$2" '$1 ~ n {v=$3} END {gsub(/ /,"",v); print v+0}' "$1"; }
ratio() { python3 -c "print(f'{$1/max($2,1e-9):.2f}')"; }

# The browser phase: the load client starts calling, then the routing load runs beside it.
with_browsers() {
  local secs=$(( calls / rate + 6 ))
  CG_HTTP=$http CG_SIP=$sip CG_REALM=$realm CG_AGENTS="$d/agents.txt" CG_PBX=$pbx LOAD_RATE=$brate LOAD_SECS=$secs LOAD_HOLD_MS=$hold \
    "$CLIENT_BIN" >"$d/$1.client" 2>&1 &
  lpid=$!
  for _ in $(seq 300); do grep -q '^ready' "$d/$1.client" && break; sleep 0.1; done
  sleep 3 # the set-ups reach their steady rate (calls held HOLD_MS overlap) before routing is measured
  route "$1"
  wait "$lpid" || true; lpid=
  echo "   $(grep -h '^browser calls' "$d/$1.client" || echo "browser client: no report (see $d/$1.client)")"
}

echo "== warm-up: 5,000 routing requests and a few browser calls, not measured"
route warmup 5000
CG_HTTP=$http CG_SIP=$sip CG_REALM=$realm CG_AGENTS="$d/agents.txt" CG_PBX=$pbx LOAD_RATE=$brate LOAD_SECS=2 LOAD_HOLD_MS=500 \
  "$CLIENT_BIN" >"$d/warmup.client" 2>&1 || true
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="quiet browsers"; else order="browsers quiet"; fi
  echo "== round $round of $rounds: $order ($calls routing requests at $rate/s each; $brate browser calls/s in the browser phase)"
  for phase in $order; do
    if [ "$phase" = quiet ]; then route "quiet-$round"; else with_browsers "browsers-$round"; fi
  done
  for phase in quiet browsers; do
    read -r p n < <(p99 "$d/$phase-$round.us"); read -r sp sn < <(p99 "$d/$phase-$round.rtt")
    printf '   %-8s probe p99 %s µs over %s answers; SIPp p99 %s ms over %s (failed %s); %s\n' "$phase:" "$p" "$n" "$sp" "$sn" \
      "$(counter "$d/$phase-$round.screen" "Failed call")" "$(sed -n 's/^routing probe: //p' "$d/$phase-$round.probe")"
  done
  read -r q _ < <(p99 "$d/quiet-$round.us"); read -r b _ < <(p99 "$d/browsers-$round.us")
  echo "   ratio browsers/quiet this round (probe p99): $(ratio "$b" "$q")"
done
read -r q nq < <(p99 "$d"/quiet-*.us); read -r b nb < <(p99 "$d"/browsers-*.us)
read -r sq _ < <(p99 "$d"/quiet-*.rtt); read -r sb _ < <(p99 "$d"/browsers-*.rtt)
echo
echo "routing p99 (probe) without browser calls: $q µs ($nq answers); with $brate browser-call set-ups/s: $b µs ($nb answers)"
echo "ratio with/without: $(ratio "$b" "$q")    (SIPp's p99 in ms steps: $sq ms without, $sb ms with)"
echo "(files in $d)"
