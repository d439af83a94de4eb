#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on
# stable Rust (no sanitizer) and runs each for SECONDS (default 60) from
# the committed corpus. New inputs go to a scratch directory; crashes to
# fuzz/artifacts/TARGET/. Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(sip_parse core numbers config lists rules)
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
# An explicit --target keeps the instrumentation out of build scripts and
# proc macros, which are not linked with libFuzzer.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --bins --target "$host"
for t in "${targets[@]}"; do
	scratch=$(mktemp -d)
	# The files the list and rule targets write for each input, in memory
	# where it can be: an index is written with an fsync.
	CALLGUARD_FUZZ_SCRATCH=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
	export CALLGUARD_FUZZ_SCRATCH
	mkdir -p "artifacts/$t"
	echo "fuzzing $t for ${seconds}s"
	# The exit status counts, not only the artifacts: a crash whose input
	# could not be written still fails the run.
	status=0
	"$CARGO_TARGET_DIR/$host/release/$t" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
		-artifact_prefix="artifacts/$t/" -print_final_stats=1 "$scratch" "corpus/$t" >"$scratch.log" 2>&1 || status=$?
	grep -E "^(#[0-9]+\s+DONE|stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|.*panicked)" "$scratch.log" || true
	rm -rf "$scratch" "$scratch.log" "$CALLGUARD_FUZZ_SCRATCH"
	# One test per kind: `ls` of several globs fails when any one of them
	# matches nothing, which once hid a crash behind the absent timeouts.
	failing=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | head -1)
	if [ "$status" -ne 0 ] || [ -n "$failing" ]; then
		echo "fuzz target $t failed (exit $status): ${failing:-no input written}" >&2
		exit 1
	fi
done
