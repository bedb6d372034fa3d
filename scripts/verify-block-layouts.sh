#!/usr/bin/env bash
# Byte-exact transfer of every preset with cross-layer blocks on P, on D and
# on both, at two tp pairs (P 2 -> D 4 and P 4 -> D 2), in process.
#   HX=bin/hybridxfer TOKENS=4096 bash scripts/verify-block-layouts.sh
# Prints one line per run and exits non-zero if any run is not byte-exact.
set -u
HX=${HX:-bin/hybridxfer}
TOKENS=${TOKENS:-4096}
PAIRS=${PAIRS:-"2:4 4:2"}
fail=0
# A listing that fails must fail the run, not verify nothing and exit 0.
models=$("$HX" models --json | python3 -c 'import json,sys; print(" ".join(r["name"] for r in json.load(sys.stdin)))') || {
  echo "FAIL: cannot list the models with $HX (build it: go build -o bin/hybridxfer ./cmd/hybridxfer)" >&2; exit 1; }
[ -n "$models" ] || { echo "FAIL: $HX models listed no model" >&2; exit 1; }
runs=0
for m in $models; do
  for pair in $PAIRS; do
    p=${pair%:*} d=${pair#*:}
    for layouts in cross-layer:per-layer per-layer:cross-layer cross-layer:cross-layer; do
      pb=${layouts%:*} db=${layouts#*:}
      out=$("$HX" verify --model "$m" --prefill-tp "$p" --decode-tp "$d" --prefill-block-layout "$pb" \
        --decode-block-layout "$db" --prompt-tokens "$TOKENS" --json 2>&1)
      if printf '%s' "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["byte_mismatches"]==0 and r["untouched_violations"]==0 and r["bytes_moved"]==r["expected_bytes"] else 1)' 2>/dev/null; then
        reads=$(printf '%s' "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["reads"], r["bytes_moved"])')
        echo "ok   $m tp $p->$d $pb->$db reads/bytes $reads"
        runs=$((runs + 1))
      elif printf '%s' "$out" | grep -q "tp"; then
        echo "skip $m tp $p->$d $pb->$db: $(printf '%s' "$out" | tail -1)"
      else
        echo "FAIL $m tp $p->$d $pb->$db: $(printf '%s' "$out" | tail -3)"
        fail=1
      fi
    done
  done
done
echo "$runs byte-exact runs"
[ "$runs" -gt 0 ] || fail=1
exit $fail
