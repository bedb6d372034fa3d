#!/usr/bin/env bash
# By hand, as docs/security.md records it: a P + D + proxy on 127.0.0.1
# with every protection on (cluster key, CURVE, API keys), and each case of
# issue 11 tried with curl as a hostile client would. Prints one line per
# case: what was sent, the status and the error code/param, and at the end
# P's pool usage (0 once the last lease is gone). Needs curl and python3
# (to edit the JSON params). Run from the repository root after
# `make build`.
set -u
export UCX_WARN_UNUSED_ENV_VARS=n UCX_HANDLE_ERRORS=none
HX=${HX:-bin/hybridxfer}
M=${M:-qwen3.5-27b}
K=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf $K' EXIT
$HX keys cluster --out $K/cluster.key >/dev/null
for who in prefill decode stranger; do $HX keys curve --out $K/$who >/dev/null; done
(umask 077; echo "byhand-client-key-0123456789" > $K/api.keys)
KEY="Authorization: Bearer byhand-client-key-0123456789"
C="--cluster-key-file $K/cluster.key --api-key-file $K/api.keys"
$HX serve --role prefill --model $M --port 18501 --handshake-port 18601 --lease-ttl 30s $C \
  --handshake-key $K/prefill.key --handshake-allow $K/decode.pub >$K/p.log 2>&1 &
$HX serve --role decode --model $M --port 18511 $C --handshake-key $K/decode.key --handshake-server-pub $K/prefill.pub >$K/d.log 2>&1 &
$HX serve --role decode --model $M --port 18512 $C --handshake-key $K/stranger.key --handshake-server-pub $K/prefill.pub >$K/d2.log 2>&1 &
$HX proxy --prefill http://127.0.0.1:18501 --decode http://127.0.0.1:18511 --port 18500 $C >$K/proxy.log 2>&1 &
for u in 18501 18511 18512 18500; do for t in $(seq 100); do curl -sf http://127.0.0.1:$u/health >/dev/null && break; sleep 0.2; done; done
INT="X-Hybridxfer-Internal: $(python3 - $K/cluster.key <<'PY'
import hmac, hashlib, sys
key = bytes.fromhex(open(sys.argv[1]).read().strip())
print(hmac.new(key, b"hybridxfer internal api v1\x00", hashlib.sha256).hexdigest())
PY
)"
show() { # $1 label, $2 file with the answer, $3 status
  printf '%-62s %s %s\n' "$1" "$3" "$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])).get("error") or {}; print(e.get("code",""), e.get("param") or "")' $2 2>/dev/null)"
}
req() { # $1 label, $2 url, $3 body, headers...
  local label=$1 url=$2 body=$3; shift 3
  local h=(); for x in "$@"; do h+=(-H "$x"); done
  [ -n "${VERBOSE:-}" ] && date +%T.%N; st=$(curl -s -o $K/ans.json -w '%{http_code}' "${h[@]}" $url -d "$body"); show "$label" $K/ans.json $st; [ -n "${VERBOSE:-}" ] && { cat $K/ans.json; echo; }
}
prefill() { # $1 prompt -> P's kv_transfer_params in $K/kv.json
  curl -s -H "$INT" http://127.0.0.1:18501/v1/completions -d "{\"model\":\"$M\",\"prompt\":\"$1\",\"max_tokens\":1,\"kv_transfer_params\":{\"do_remote_decode\":true}}" |
    python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["kv_transfer_params"]))' > $K/kv.json
}
body() { # $1 prompt, $2 python expression editing kv (a dict) -> request body
  python3 -c "import json,sys; kv=json.load(open('$K/kv.json')); v=json.load(open('$K/victim.json')); $2; print(json.dumps({'model':'$M','prompt':sys.argv[1],'max_tokens':4,'kv_transfer_params':kv}))" "$1"
}
used() { curl -s http://127.0.0.1:18501/metrics | awk '/^hybridxfer_pool_blocks_used\{/ {s+=$2} END {print s+0}'; }
D=http://127.0.0.1:18511/v1/completions
echo "P pool blocks used at the start: $(used)"
req "through the proxy with the API key" http://127.0.0.1:18500/v1/completions "{\"model\":\"$M\",\"prompt\":\"hello\",\"max_tokens\":4}" "$KEY"
req "through the proxy without a key" http://127.0.0.1:18500/v1/completions "{\"model\":\"$M\",\"prompt\":\"hello\",\"max_tokens\":4}"
prefill "the victim prompt"; cp $K/kv.json $K/victim.json
prefill "the attacker prompt"
req "P's params straight to D without the internal token" $D "$(body 'the attacker prompt' 'pass')" "$KEY"
req "own params with the victim's block ids" $D "$(body 'the attacker prompt' 'kv["remote_block_ids"]=v["remote_block_ids"]')" "$INT"
req "own params with the victim's remote_request_id" $D "$(body 'the attacker prompt' 'kv["remote_request_id"]=v["remote_request_id"]')" "$INT"
req "the victim's params with the attacker's prompt" $D "$(body 'the attacker prompt' 'kv=v')" "$INT"
req "own params with a changed remote_engine_id" $D "$(body 'the attacker prompt' 'kv["remote_engine_id"]="evil"')" "$INT"
req "own params with out-of-range block ids" $D "$(body 'the attacker prompt' 'kv["remote_block_ids"]=[[10**6] for _ in kv["remote_block_ids"]]')" "$INT"
req "own params with a forged grant" $D "$(body 'the attacker prompt' 'kv["remote_grant"]="SFhHAQA"')" "$INT"
req "the victim's genuine params (still held)" $D "$(body 'the victim prompt' 'kv=v')" "$INT"
req "the victim's params replayed" $D "$(body 'the victim prompt' 'kv=v')" "$INT"
req "the attacker's genuine params (D still works)" $D "$(body 'the attacker prompt' 'pass')" "$INT"
prefill "to the stranger"
req "a D whose CURVE key P does not allow" http://127.0.0.1:18512/v1/completions "$(body 'to the stranger' 'pass')" "$INT"
req "temperature -3" $D "{\"model\":\"$M\",\"prompt\":\"x\",\"temperature\":-3}" "$KEY"
req "n 5" $D "{\"model\":\"$M\",\"prompt\":\"x\",\"n\":5}" "$KEY"
req "role wizard" http://127.0.0.1:18500/v1/chat/completions "{\"model\":\"$M\",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}" "$KEY"
echo "UCX and ZeroMQ listeners of the instances (address:port):"
ss -ltnp 2>/dev/null | awk '/hybridxfer/ {print "  " $4}' | sort -u | tr '\n' ' '; echo
for f in "--block-size 0" "--num-blocks 0" "--lease-ttl 0" "--lease-ttl -5s" "--transfer-timeout 0" "--num-blocks 60000000"; do
  printf '%-24s %s\n' "serve $f:" "$($HX serve --role prefill --model $M --port 18599 $f 2>&1 | grep -v level= | head -1)"
done
sleep 31 # the stranger's request: P's lease (30 s) reclaims it
echo "P pool blocks used at the end: $(used)"
