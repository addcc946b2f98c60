#!/usr/bin/env bash
# Resident memory of callgate with N numbers in the personal-manager index (default 1,000,000),
# loaded through the admin API, and again after a restart (index warm from the store snapshot).
#   bash benches/index_memory.sh [N]
set -euo pipefail
n=${1:-1000000}
here=$(cd "$(dirname "$0")/.." && pwd)
d=$(mktemp -d /tmp/callgate-mem.XXXXXX)
token=bench-token-0123456789abcdef
cleanup() { [ -n "${cpid:-}" ] && kill "$cpid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
(cd "$here" && cargo build --release --quiet)
python3 -c "
import sys
with open('$d/pm.csv','w') as f:
    for i in range($n): f.write(f'7900{i:07d},{100 + i % 500}\n')"
start() {
  CALLGATE__SIP__UDP=127.0.0.1:0 CALLGATE__SIP__TCP="" CALLGATE__SIP__TLS="" CALLGATE__HTTP__LISTEN=127.0.0.1:18081 \
  CALLGATE__STORE__PATH="$d/cg/callgate.db" CALLGATE__ADMIN__TOKEN=$token CALLGATE__LOG__LEVEL=warn \
    "$here/target/release/callgate" run 2>>"$d/callgate.log" &
  cpid=$!
  for _ in $(seq 600); do curl -sf http://127.0.0.1:18081/ready >/dev/null && return; sleep 0.1; done
  echo "callgate did not become ready" >&2; exit 1
}
rss() { awk '/VmRSS/ {printf "%.0f MB", $2/1024}' /proc/$cpid/status; }
start
echo "empty: $(rss)"
pid=$(curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' -X POST http://127.0.0.1:18081/api/v1/portals -d '{"domain":"mem.bitrix24.ru"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
t0=$(date +%s.%N)
curl -sf -H "Authorization: Bearer $token" -H 'content-type: text/csv' -X POST "http://127.0.0.1:18081/api/v1/portals/$pid/index" --data-binary "@$d/pm.csv" >/dev/null
echo "after importing $n numbers via the API ($(python3 -c "print(f'{$(date +%s.%N)-$t0:.1f}')") s): $(rss)"
kill "$cpid"; wait "$cpid" 2>/dev/null || true
t0=$(date +%s.%N)
start
echo "after a restart, index warm from the store ($(python3 -c "print(f'{$(date +%s.%N)-$t0:.1f}')") s to ready): $(rss)"
