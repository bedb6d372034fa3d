#!/usr/bin/env bash
# fuzz-long: run every fuzz target of the repository, one at a time, each
# for FUZZ_LONG_TIME, and print a table of executions per target.
#
# Targets are discovered with grep for ^func Fuzz in *_test.go, so new ones
# are picked up. A crasher is written by go test to the package's
# testdata/fuzz/FuzzName/ (the table names the file); rerun it with
#   go test -run 'FuzzName/<file>' ./pkg
#
# Environment:
#   FUZZ_LONG_TIME      per-target fuzz time, a Go duration in s, m or h (default 75s:
#                       on 2 cores the whole run reaches well over 10,000,000 executions)
#   FUZZ_LONG_MIN_EXECS fail when the total is under this (default 10000000)
#   FUZZ_LONG_RUN       extended regexp on "pkgdir FuzzName" selecting targets (default all)
#   FUZZ_LONG_PARALLEL  fuzz workers per target (default 2)
#   FUZZ_LONG_MINIMIZE  -fuzzminimizetime (default 1s: minimizing new inputs would
#                       otherwise eat most of a short budget)
#   FUZZ_LONG_GOMEMLIMIT GOMEMLIMIT of the fuzz processes (default 2GiB)
#   FUZZ_LONG_VMEM_KB   ulimit -v of each process in KiB (default 8388608 = 8 GiB; 0: none)
#   FUZZ_LONG_LOGDIR    where each target's go test output is kept (default a temp dir)
#   GO                  the go command (default go)
set -uo pipefail

GO=${GO:-go}
TIME=${FUZZ_LONG_TIME:-75s}
MIN=${FUZZ_LONG_MIN_EXECS:-10000000}
RUN=${FUZZ_LONG_RUN:-}
PAR=${FUZZ_LONG_PARALLEL:-2}
MINIMIZE=${FUZZ_LONG_MINIMIZE:-1s}
MEMLIMIT=${FUZZ_LONG_GOMEMLIMIT:-2GiB}
VMEM=${FUZZ_LONG_VMEM_KB:-8388608}
LOGDIR=${FUZZ_LONG_LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/fuzz-long.XXXXXX")}

cd "$(dirname "$0")/.." || exit 2
mkdir -p "$LOGDIR" || exit 2

# seconds of a Go duration made of h, m and s parts (e.g. 90s, 2m, 1h30m).
seconds() {
	local d=$1 total=0 n u
	[[ $d =~ ^([0-9]+[hms])+$ ]] || return 1
	while [[ $d =~ ^([0-9]+)([hms])(.*)$ ]]; do
		n=${BASH_REMATCH[1]} u=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]}
		case $u in h) total=$((total + n * 3600)) ;; m) total=$((total + n * 60)) ;; s) total=$((total + n)) ;; esac
	done
	echo "$total"
}
if ! per=$(seconds "$TIME"); then
	echo "fuzz-long: FUZZ_LONG_TIME=$TIME: want a duration like 60s, 2m or 1h" >&2
	exit 2
fi
[[ $MIN =~ ^[0-9]+$ ]] || { echo "fuzz-long: FUZZ_LONG_MIN_EXECS=$MIN: want a number" >&2; exit 2; }

# Discover "dir name" pairs, sorted, from the tracked and untracked
# (not ignored) test files.
mapfile -t targets < <(
	{ git ls-files --cached --others --exclude-standard -- '*_test.go' 2>/dev/null ||
		find . -name '*_test.go' -not -path '*/testdata/*' | sed 's|^\./||'; } |
		while read -r f; do
			[[ -f $f ]] || continue
			grep -oE '^func Fuzz[A-Za-z0-9_]*\(' "$f" | sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(/\1/' |
				while read -r name; do echo "$(dirname "$f") $name"; done
		done | sort -u | { if [[ -n $RUN ]]; then grep -E -- "$RUN" || true; else cat; fi; }
)
if [[ ${#targets[@]} -eq 0 ]]; then
	echo "fuzz-long: no fuzz targets found" >&2
	exit 1
fi

# Build, minimization of a crasher and the coordinator's shutdown come on
# top of the fuzz time; past this a target is stopped and counted failed.
grace=300
n=${#targets[@]}
echo "fuzz-long: ${n} targets x ${TIME} (parallel ${PAR}, minimize ${MINIMIZE}, GOMEMLIMIT ${MEMLIMIT}, ulimit -v ${VMEM} KiB)"
echo "fuzz-long: expected duration about $(((n * per + 59) / 60)) min of fuzzing plus builds; at most $(((n * (per + grace) + 59) / 60)) min"
echo "fuzz-long: logs in ${LOGDIR}; crashers go to <pkg>/testdata/fuzz/<Target>/"
start=$(date +%s)

rows=() total=0 failed=0
for t in "${targets[@]}"; do
	read -r dir name <<<"$t"
	log="$LOGDIR/${dir//\//_}.${name}.log"
	echo "== ./${dir} ${name} (log ${log})"
	(
		if [[ $VMEM != 0 ]]; then ulimit -v "$VMEM" || exit 2; fi
		GOMEMLIMIT=$MEMLIMIT exec timeout --signal=INT --kill-after=30 $((per + grace)) \
			"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$TIME" -fuzzminimizetime "$MINIMIZE" \
			-parallel "$PAR" "./${dir}"
	) >"$log" 2>&1
	rc=$?
	# The last progress line: "fuzz: elapsed: 1m0s, execs: N (R/sec), new interesting: K (total: M)".
	last=$(grep -E '^fuzz: elapsed: .*execs: [0-9]+' "$log" | tail -n 1)
	execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
	newi=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
	execs=${execs:-0} newi=${newi:-0}
	crash=$(sed -nE 's/.*Failing input written to (testdata\/fuzz\/[^ ]+).*/\1/p' "$log" | tail -n 1)
	if [[ $rc -eq 0 ]] && grep -q 'no fuzz tests to fuzz' "$log"; then
		result="SKIP (not built: build tags?)"
	elif [[ $rc -eq 0 ]]; then
		result=PASS
	elif [[ $rc -eq 124 || $rc -eq 137 ]]; then
		result="FAIL (timed out after $((per + grace))s)" failed=$((failed + 1))
	elif [[ -n $crash ]]; then
		result="FAIL crasher ${dir}/${crash}" failed=$((failed + 1))
	else
		result="FAIL (rc ${rc}, see log)" failed=$((failed + 1))
	fi
	if [[ $result == FAIL* ]]; then
		tail -n 30 "$log" | sed 's/^/    /'
	fi
	total=$((total + execs))
	rows+=("$(printf '%-28s %-26s %12s %8s  %s' "./${dir}" "$name" "$execs" "$newi" "$result")")
	echo "   ${execs} execs, ${newi} new interesting: ${result}"
done

elapsed=$(($(date +%s) - start))
echo
printf '%-28s %-26s %12s %8s  %s\n' package target execs new result
printf '%s\n' "${rows[@]}"
printf '%-28s %-26s %12s\n' total "" "$total"
echo "fuzz-long: ${n} targets, ${total} executions in $((elapsed / 60))m$((elapsed % 60))s (minimum ${MIN})"
status=0
if [[ $failed -gt 0 ]]; then
	echo "fuzz-long: ${failed} target(s) failed; crashers (if any) are in the testdata/fuzz paths above" >&2
	status=1
fi
if [[ $total -lt $MIN ]]; then
	echo "fuzz-long: ${total} executions, under the minimum ${MIN} (raise FUZZ_LONG_TIME)" >&2
	status=1
fi
exit $status
