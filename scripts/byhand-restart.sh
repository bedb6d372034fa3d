#!/usr/bin/env bash
# By hand, as docs/reliability.md records it: 2 P (tp 2, tp 1) + 3 D (tp 2,
# 4, 2; --mode staged; NHD/SD; the third with cross-layer blocks) + proxy on 127.0.0.1, and a monolithic
# instance (serve --role both) to compare answers with. 30 requests in
# flight; kill -9 of a P; 30 more; the P restarted on the same ports; 30
# more (half of them land on it). Run from the repository root after
# `make build`.
set -u
export UCX_NET_DEVICES=lo UCX_HANDLE_ERRORS=none UCX_WARN_UNUSED_ENV_VARS=n
HX=${HX:-bin/hybridxfer}
N=${N:-30} # requests in flight per phase
M=${M:-qwen3.5-27b} # the model every instance serves
L=$(mktemp -d)
startP() { $HX serve --role prefill --model $M --tp $2 --port $1 --handshake-port $3 --seed 5 >$L/p$1.log 2>&1 & echo $!; }
P1=$(startP 18101 2 18201); P2=$(startP 18102 1 18202)
for i in 1 2 3; do $HX serve --role decode --model $M --tp $((i==2?4:2)) --port 1811$i --seed 5 --mode staged --layout NHD --conv-layout SD $( [ $i = 3 ] && echo --block-layout cross-layer) >$L/d$i.log 2>&1 & done
$HX serve --role both --model $M --tp 1 --port 18120 --seed 5 >$L/both.log 2>&1 &
$HX proxy --prefill http://127.0.0.1:18101,http://127.0.0.1:18102 --decode http://127.0.0.1:18111,http://127.0.0.1:18112,http://127.0.0.1:18113 --port 18100 --health-interval 500ms >$L/proxy.log 2>&1 &
for u in 18101 18102 18111 18112 18113 18120 18100; do for t in $(seq 100); do curl -sf http://127.0.0.1:$u/health >/dev/null && break; sleep 0.2; done; done
burst() { # $1 label
  ok=0; fail=0; pids=()
  for i in $(seq $N); do
    ( curl -s -o $L/r$i.json -w '%{http_code}\n' http://127.0.0.1:18100/v1/completions -d "{\"model\":\"$M\",\"prompt\":\"request $i $1 $(printf 'x%.0s ' $(seq $i))\",\"max_tokens\":6}" > $L/c$i ) & pids+=($!)
  done; wait "${pids[@]}"
  same=0
  for i in $(seq $N); do
    [ "$(cat $L/c$i)" = 200 ] && ok=$((ok+1)) || { fail=$((fail+1)); continue; }
    want=$(curl -s http://127.0.0.1:18120/v1/completions -d "{\"model\":\"$M\",\"prompt\":\"request $i $1 $(printf 'x%.0s ' $(seq $i))\",\"max_tokens\":6}" | sed 's/.*"text":"\([^"]*\)".*/\1/')
    got=$(sed 's/.*"text":"\([^"]*\)".*/\1/' $L/r$i.json)
    [ "$got" = "$want" ] && same=$((same+1)) || echo "  request $i: $got != monolithic $want"
  done
  echo "$1: $N requests in flight, $ok succeeded (200), $fail failed, $same equal to serve --role both"
}
burst before
kill -9 $P1; sleep 0.5
burst "P1-dead"
P1=$(startP 18101 2 18201)
for t in $(seq 100); do curl -sf http://127.0.0.1:18101/health >/dev/null && break; sleep 0.2; done
sleep 1.5 # the proxy's next health probe re-admits it
burst "P1-restarted"
grep -h "prefill_requests\|hybridxfer_requests_total" <(curl -s http://127.0.0.1:18101/metrics) | head -3
kill $(jobs -p) 2>/dev/null
