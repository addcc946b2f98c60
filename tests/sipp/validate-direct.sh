#!/usr/bin/env bash
# Runs the callgate SIPp scenarios pairwise WITHOUT a proxy (PBX SIPp <-> agent SIPp on
# 127.0.0.1), one call per pair, and prints PASS/FAIL per pair.
# PASS = both SIPp processes exit 0 (all calls successful) and the optional checks match
# (a regexp in the client's <log> output, a regexp in the server's message trace).
# Ports: SIP 16100-16199 (SIPP_BASE_PORT), media 16500-16699. Traces stay in a temp dir.
# Usage: tests/sipp/validate-direct.sh [pair-name ...]     (no argument = all pairs)
set -u
cd "$(dirname "$0")"
command -v sipp >/dev/null || { echo "sipp not found"; exit 2; }
TMP=$(mktemp -d /tmp/callgate-sipp-direct.XXXXXX)
BASE=${SIPP_BASE_PORT:-16100}
COMMON=(-i 127.0.0.1 -m 1 -timeout 20s -timeout_error -nostdin
        -trace_err -trace_screen -trace_msg -trace_logs)
PBX_KEYS="-key caller 79161234567 -key xcid pbx-call-42"
n=0 failed=0
only=("$@")

# run_pair NAME SERVER_XML "SERVER_KEYS" CLIENT_XML "CLIENT_KEYS" [CLIENT_LOG_RE] [SERVER_MSG_RE]
run_pair() {
    local name=$1 sxml=$2 skeys=$3 cxml=$4 ckeys=$5 logre=${6:-} msgre=${7:-}
    if [ ${#only[@]} -gt 0 ] && [[ " ${only[*]} " != *" $name "* ]]; then return; fi
    local sport=$((BASE + 2 * n)) cport=$((BASE + 2 * n + 1))
    local smp=$((16500 + 8 * n)) cmp=$((16504 + 8 * n)) d=$TMP/$name
    n=$((n + 1))
    if ss -Hlun "( sport = :$sport or sport = :$cport )" 2>/dev/null | grep -q .; then
        echo "FAIL $name (port $sport or $cport busy)"; failed=$((failed + 1)); return
    fi
    # shellcheck disable=SC2086
    timeout 30 sipp -sf "$sxml" "${COMMON[@]}" -p "$sport" -mp "$smp" $skeys \
        -error_file "$d.server.err" -screen_file "$d.server.screen" \
        -message_file "$d.server.msg" -log_file "$d.server.log" >"$d.server.out" 2>&1 &
    local spid=$!
    sleep 0.3
    # shellcheck disable=SC2086
    timeout 30 sipp "127.0.0.1:$sport" -sf "$cxml" "${COMMON[@]}" -p "$cport" -mp "$cmp" $ckeys \
        -error_file "$d.client.err" -screen_file "$d.client.screen" \
        -message_file "$d.client.msg" -log_file "$d.client.log" >"$d.client.out" 2>&1
    local crc=$?
    wait "$spid"
    local src=$? why=""
    [ "$src" -eq 0 ] || why="$why server($sxml) rc=$src;"
    [ "$crc" -eq 0 ] || why="$why client($cxml) rc=$crc;"
    if [ -n "$logre" ] && ! grep -Eq -- "$logre" "$d.client.log" 2>/dev/null; then
        why="$why client log lacks /$logre/;"
    fi
    if [ -n "$msgre" ] && ! grep -Eq -- "$msgre" "$d.server.msg" 2>/dev/null; then
        why="$why server trace lacks /$msgre/;"
    fi
    if [ -z "$why" ]; then
        echo "PASS $name  ($sxml <- $cxml)"
    else
        echo "FAIL $name  ($sxml <- $cxml):$why see $d.*"
        failed=$((failed + 1))
    fi
}

pgrep -a sipp && echo "note: other sipp processes are running (listed above)"

# PBX (client) -> agent (server)
run_pair answered        agent-answer.xml            "-key ext 101 -key ring_ms 300" \
         pbx-answered.xml            "$PBX_KEYS -key ext 101 -key hold_ms 500" \
         "" "^X-Call-Id: pbx-call-42"
run_pair agent-hangs-up  agent-answer-hangup.xml     "-key ext 101 -key ring_ms 300 -key talk_ms 500" \
         pbx-answered-wait-bye.xml   "$PBX_KEYS -key ext 101"
run_pair cancel          agent-ring.xml              "-key ext 101" \
         pbx-cancel.xml              "$PBX_KEYS -key ext 101" \
         "" "^CANCEL sip:101@"
run_pair busy-486        agent-busy.xml              "" \
         pbx-failed.xml              "$PBX_KEYS -key ext 101" \
         "final response 486"
run_pair reject-603      agent-reject.xml            "-key ext 101 -key ring_ms 300" \
         pbx-failed.xml              "$PBX_KEYS -key ext 101" \
         "final response 603"
run_pair blind-transfer  agent-blind-transfer.xml    "-key ext 101 -key target 102 -key talk_ms 300" \
         pbx-refer-target.xml        "$PBX_KEYS -key ext 101" \
         "Refer-To: <sip:102@127\.0\.0\.1:[0-9]+> Referred-By: <sip:101@"
run_pair transferred-leg agent-answer.xml            "-key ext 102 -key ring_ms 300" \
         pbx-transferred-leg.xml     "$PBX_KEYS -key ext 102 -key referrer 101 -key hold_ms 500" \
         "" "^Referred-By: <sip:101@"
run_pair attended-transfer agent-attended-transfer.xml "-key ext 101 -key target 102 -key replaces_callid 7-999%40127.0.0.1 -key consult_ms 400" \
         pbx-refer-target.xml        "$PBX_KEYS -key ext 101" \
         "Refer-To: <sip:102@[^?]+\?Replaces=7-999%40127\.0\.0\.1%3Bto-tag%3Dx%3Bfrom-tag%3Dy>"
run_pair replaces        agent-answer.xml            "-key ext 102 -key ring_ms 300" \
         pbx-replaces.xml            "$PBX_KEYS -key ext 102 -key replaces_callid 7-999@127.0.0.1 -key hold_ms 500" \
         "" "^Replaces: 7-999@127\.0\.0\.1;to-tag=x;from-tag=y"
run_pair hold            agent-hold.xml              "-key ext 101 -key hold_ms 400" \
         pbx-answered-reinvite.xml   "$PBX_KEYS -key ext 101 -key reinvites 2 -key hold_ms 300" \
         "offer a=sendonly answered a=recvonly"
run_pair line-in-to      agent-answer.xml            "-key ext 101 -key ring_ms 300" \
         pbx-line-to.xml             "$PBX_KEYS -key ext 101 -key line 74951110001 -key hold_ms 300" \
         "" "^To: <sip:74951110001@"
run_pair line-in-diversion agent-answer.xml          "-key ext 101 -key ring_ms 300" \
         pbx-line-diversion.xml      "$PBX_KEYS -key ext 101 -key line 74951110002 -key hold_ms 300" \
         "" "^Diversion: <sip:74951110002@"
run_pair along-path      agent-answer.xml            "-key ext 101 -key ring_ms 300" \
         pbx-answered-path.xml       "$PBX_KEYS -key ext 101 -key contact sip:101@127.0.0.1:5999 -key path <sip:127.0.0.1:5998;lr> -key hold_ms 300" \
         "" "^Route: <sip:127\.0\.0\.1:5998;lr>"
# agent (client) -> PBX (server)
run_pair dial            pbx-uas-answer.xml          "" \
         agent-dial.xml              "-key ext 101 -key dial 79161234567 -key talk_ms 500" \
         "" "^From: <sip:101@"
run_pair dial-far-hangup pbx-uas-hangup.xml          "-key ring_ms 300 -key talk_ms 500" \
         agent-dial-wait-bye.xml     "-key ext 101 -key dial 79161234567"
run_pair dial-busy       pbx-uas-busy.xml            "" \
         agent-dial-busy.xml         "-key ext 101 -key dial 79161234567"
run_pair dial-cancel     pbx-uas-ring.xml            "" \
         agent-dial-cancel.xml       "-key ext 101 -key dial 102 -key ring_ms 300"
run_pair dial-challenged pbx-uas-challenge.xml       "-key user 101 -key password s3cret -key realm pbx.example -key challenge 401" \
         agent-dial-auth.xml         "-key ext 101 -key domain office.example -key dial 79161234567 -key talk_ms 300 -au 101 -ap s3cret -auth_uri 79161234567@127.0.0.1" \
         "" "^Authorization: Digest username=\"101\""
run_pair dial-proxy-challenged pbx-uas-challenge.xml "-key user 101 -key password s3cret -key realm pbx.example -key challenge 407" \
         agent-dial-auth.xml         "-key ext 101 -key domain office.example -key dial 79161234567 -key talk_ms 300 -au 101 -ap s3cret -auth_uri 79161234567@127.0.0.1" \
         "" "^Proxy-Authorization: Digest username=\"101\""
run_pair dial-422         pbx-uas-interval-too-small.xml "" \
         agent-dial-session-timer.xml "-key ext 101 -key dial 79161234567 -key talk_ms 300" \
         "" "^Session-Expires: 1800"
# (phone-register.xml and pbx-registrar.xml need callgate between them: the PBX requires its Path;
# phone-subscribe.xml and pbx-notify.xml likewise: the PBX requires its Record-Route.)

echo "$((n - failed))/$n pairs passed; traces in $TMP"
[ "$failed" -eq 0 ]
