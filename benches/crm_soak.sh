#!/usr/bin/env bash
# Bitrix24 delivery soak (not CI): CALLS answered calls at RATE calls/s from SIPp (the PBX on
# 127.0.0.1, the agent phone 101 on 127.0.0.2) through the real release binary to the strict fake
# portal (examples/fake_portal.rs), while the portal fails for two minutes: 45 s of 503
# OVERLOAD_LIMIT, 40 s in which every request is executed and its answer lost, 35 s in which every
# request stalls 40 s (past crm.request_timeout 30 s) and is executed late. Then it heals; the
# script waits until every customer call is finished in the fake (at most 10 min) and prints the
# fake's report: customer calls, registered Bitrix24 calls, duplicates, open calls, finishes,
# calls finished twice, drain time (last heal to last successful finish).
#
#   bash benches/crm_soak.sh [CALLS] [RATE]        (defaults 600 4)
#   PROFILE=debug bash benches/crm_soak.sh         (the debug build: no release compile)
#
# Needs: sipp (apt-get install sip-tester), curl, python3. Loopback only.
set -euo pipefail
calls=${1:-600} rate=${2:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
d=$(mktemp -d /tmp/callgate-crm-soak.XXXXXX)
token=soak-token-0123456789abcdef
http=127.0.0.1:18480 sip=127.0.0.1:15460 pbx_port=15461 phone=127.0.0.2:15462
cleanup() { for p in ${cg:-} ${fk:-} ${ph:-}; do kill "$p" 2>/dev/null || true; done; exec 3>&- 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

profile=${PROFILE:-release}
echo "== building callgate and the fake portal ($profile)"
(cd "$here" && cargo build $([ "$profile" = release ] && echo --release) --quiet --bin callgate --example fake_portal)

echo "== fake portal"
mkfifo "$d/fake.in"
"$target/$profile/examples/fake_portal" <"$d/fake.in" >"$d/fake.out" 2>"$d/fake.err" & fk=$!
exec 3>"$d/fake.in"
for _ in $(seq 50); do grep -q '^webhook ' "$d/fake.out" 2>/dev/null && break; sleep 0.1; done
webhook=$(awk '/^webhook /{print $2; exit}' "$d/fake.out")
fake() { # a command to the fake; its answer (waited for: 10 s at most)
  local n; n=$(wc -l <"$d/fake.out"); echo "$1" >&3
  for _ in $(seq 100); do [ "$(wc -l <"$d/fake.out")" -gt "$n" ] && break; sleep 0.1; done
  tail -n 1 "$d/fake.out"
}

echo "== callgate ($d)"
CALLGATE__HTTP__LISTEN=$http CALLGATE__SIP__UDP=$sip CALLGATE__SIP__TCP= CALLGATE__ADMIN__TOKEN=$token \
CALLGATE__STORE__PATH=$d/callgate.db CALLGATE__LOG__LEVEL=warn \
  bash -c 'cd "$1" && exec "$2" run' _ "$d" "$target/$profile/callgate" >"$d/callgate.log" 2>&1 & cg=$!
for _ in $(seq 100); do curl -fs "http://$http/ready" >/dev/null 2>&1 && break; sleep 0.1; done
api() { curl -fsS -X "$1" "http://$http$2" -H "authorization: Bearer $token" -H 'content-type: application/json' ${3:+-d "$3"}; }
id=$(api POST /api/v1/portals "{\"domain\":\"soak.bitrix24.ru\",\"auth\":{\"webhook_url\":\"$webhook\"}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
api POST "/api/v1/portals/$id/mappings" "{\"user_id\":11,\"extension\":\"101\",\"use_for_personal_manager\":true,\"contact\":\"sip:101@$phone\"}" >/dev/null
api GET "/api/v1/portals/$id/settings" | python3 -c "
import json,sys; s=json.load(sys.stdin)
s.update(active=True, pbx_host='127.0.0.1:$pbx_port', trusted_pbx=['127.0.0.1'])
s['incoming']['default_responsible']=1; s['outgoing']['default_responsible']=2
print(json.dumps(s))" >"$d/settings.json"
api PUT "/api/v1/portals/$id/settings" "$(cat "$d/settings.json")" >/dev/null

echo "== $calls calls at $rate/s; the portal fails from 20 s to 140 s"
sipp "$sip" -sf "$here/tests/sipp/agent-answer.xml" -i 127.0.0.2 -p 15462 -key ext 101 -key ring_ms 200 \
  -m "$calls" -nostdin -bg -trace_screen -screen_file "$d/phone.screen" >/dev/null 2>&1 || true
ph=$(pgrep -n -f "screen_file $d/phone.screen" || true)
sipp "$sip" -sf "$here/tests/sipp/pbx-answered-load.xml" -i 127.0.0.1 -p $pbx_port -key ext 101 \
  -key caller 79161234567 -key xcid soak -key hold_ms 3000 -m "$calls" -r "$rate" -l 2000 \
  -timeout 600s -nostdin -trace_screen -screen_file "$d/pbx.screen" >/dev/null 2>&1 & sp=$!
sleep 20; fake "fault 503"; sleep 45; fake "fault lose"; sleep 40; fake "fault stall"; sleep 35; fake "fault none"
wait $sp || true
echo "   PBX: $(grep -E 'Successful call|Failed call' "$d/pbx.screen" | tail -2 | awk -F'|' '{gsub(/ /,"",$3); printf "%s %s  ", $1, $3}')"

echo "== waiting for every call to be finished in the fake (10 min at most)"
for _ in $(seq 120); do
  r=$(fake report)
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r['customer_calls']>=$calls and r['open']==0 else 1)" "$r" && break
  sleep 5
done
echo "   $r"
echo "   overdue/fallback/requests: $(curl -fs "http://$http/metrics" | grep -E '^callgate_crm_(overdue_intents|user_fallback_total|requests_total|rate_limited_total)' | tr '\n' ' ')"
