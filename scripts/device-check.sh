#!/usr/bin/env bash
# Device checks of issue 18, for a machine with an NVIDIA GPU and no Go.
#
#   bash scripts/device-check.sh build   # here: test binaries, the CLI and the shared
#                                        # libraries it links, into .device/ (ignored)
#   bash scripts/device-check.sh run     # there (carry .device): results under $OUT/device-check
#
# run: the GPU named (nvidia-smi, hybridxfer devices), the CUDA engine's conformance
# (CUDA == CPU == naive reference, mapped host staging), the kernels against device-to-device
# copy bandwidth, and verify through device memory with host staging between processes.
set -euo pipefail
dir=.device
case "${1:-}" in
build)
	rm -rf "$dir" && mkdir -p "$dir/lib"
	flags=(-trimpath -ldflags '-s -w')
	go test -c "${flags[@]}" -o "$dir/cuda.test" ./kernels/cuda
	go test -c "${flags[@]}" -o "$dir/nvml.test" ./kernels/nvml
	go build "${flags[@]}" -o "$dir/hybridxfer" ./cmd/hybridxfer
	# UCX, ZeroMQ and what they link, not glibc's own libraries.
	ldd "$dir/hybridxfer" | awk '/=> \//{print $3}' |
		grep -vE '/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux[^/]*)\.so' |
		while read -r so; do cp -L "$so" "$dir/lib/"; done
	ucxmod=$(dirname "$(ldd "$dir/hybridxfer" | awk '/libucp/{print $3}')")/ucx
	mkdir -p "$dir/lib/ucx" && cp -L "$ucxmod"/*.so* "$dir/lib/ucx/"
	du -sh "$dir"
	;;
run)
	res=${OUT:-/tmp}/device-check
	mkdir -p "$res"
	export LD_LIBRARY_PATH=$PWD/$dir/lib UCX_MODULE_DIR=$PWD/$dir/lib/ucx UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
	{ nvidia-smi -L || true; "$dir/hybridxfer" devices || true; } >"$res/device.txt" 2>&1
	rc=0
	(cd kernels/cuda && "../../$dir/cuda.test" -test.run 'TestOpen|TestConformance|TestMatchesCPU|TestMapHost' -test.v) >"$res/conformance.txt" 2>&1 || rc=1
	"$dir/nvml.test" -test.v >"$res/nvml.txt" 2>&1 || rc=1
	"$dir/cuda.test" -test.run XX -test.bench . -test.benchtime 20x >"$res/bench.txt" 2>&1 || rc=1
	"$dir/hybridxfer" verify --model qwen3.5-27b --prefill-tp 2 --decode-tp 4 --memory-kind device --staging host \
		--transport ucx --requests 4 --prompt-tokens 4096 --json >"$res/verify.json" 2>"$res/verify.err" || rc=1
	tail -n 3 "$res"/*.txt "$res/verify.json" || true
	exit $rc
	;;
*)
	echo "usage: $0 build|run" >&2
	exit 2
	;;
esac
