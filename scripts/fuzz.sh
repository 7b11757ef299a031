#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (cargo fuzz, pinned nightly, AddressSanitizer).
#
#   ./scripts/fuzz.sh            # smoke run: every target for 20 s (what CI does)
#   ./scripts/fuzz.sh 600        # every target for 10 minutes
#   ./scripts/fuzz.sh 600 trace_file
#
# Seeds come from traces/samples/ (whole files) and from the fuzz/corpus/ of earlier
# runs. A crash leaves its input in fuzz/artifacts/<target>/ and fails the script;
# add it as a regression test where the bug was fixed, and keep the input in
# fuzz/regressions/<target>/: every run replays those first.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-20}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(trace_file trace_block ioctl_decode vmbus_decode fuse_ioctl)
NIGHTLY="nightly-2026-05-20"

for t in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus"
    if [ "$t" = trace_file ]; then
        cp -n traces/samples/*.dxtrace "$corpus/" 2>/dev/null || true
    fi
    echo "== fuzz $t for ${SECS}s" >&2
    (cd fuzz && cargo "+$NIGHTLY" fuzz build "$t")
    # every input that once failed (fuzz/regressions/TARGET/) must pass first
    if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
        if ! (cd fuzz && cargo "+$NIGHTLY" fuzz run "$t" regressions/"$t"/* -- -runs=1) \
            >"/tmp/dxtrace-fuzz-regress-$t.log" 2>&1; then
            grep -E 'panicked|ERROR|SUMMARY' "/tmp/dxtrace-fuzz-regress-$t.log" >&2 || true
            echo "fuzz target $t fails a regression input in fuzz/regressions/$t/" >&2
            exit 1
        fi
        echo "regression inputs of $t: $(ls fuzz/regressions/"$t" | wc -l) pass" >&2
    fi
    (cd fuzz && cargo "+$NIGHTLY" fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -max_len=262144 \
        -print_final_stats=1) 2>&1 | grep -E '^(stat::|==|INFO: Running|Done|#[0-9]+ +DONE)|ERROR|panicked|SUMMARY' || true
    if compgen -G "fuzz/artifacts/$t/crash-*" >/dev/null || compgen -G "fuzz/artifacts/$t/oom-*" >/dev/null \
        || compgen -G "fuzz/artifacts/$t/timeout-*" >/dev/null; then
        echo "fuzz target $t found a failing input: see fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
