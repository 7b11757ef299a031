#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (cargo fuzz, pinned nightly, AddressSanitizer).
#
#   ./scripts/fuzz.sh            # smoke run: every target for 20 s (what CI does)
#   ./scripts/fuzz.sh 600        # every target for 10 minutes
#   ./scripts/fuzz.sh 600 trace_file
#   ./scripts/fuzz.sh 600 web_request   # the web server's router (fuzz-web/, links polars)
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
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(trace_file trace_block ioctl_decode vmbus_decode fuse_ioctl web_request)
NIGHTLY="nightly-2026-05-20"

for t in "${TARGETS[@]}"; do
    # web_request lives in its own cargo-fuzz project: it links the web server and with it
    # polars, which the other targets must not have to build.
    dir=fuzz
    [ "$t" = web_request ] && dir=fuzz-web
    corpus="$dir/corpus/$t"
    mkdir -p "$corpus"
    if [ "$t" = trace_file ]; then
        cp -n traces/samples/*.dxtrace "$corpus/" 2>/dev/null || true
    fi
    if [ -d "$dir/seeds/$t" ]; then
        cp -n "$dir/seeds/$t"/* "$corpus/" 2>/dev/null || true
    fi
    echo "== fuzz $t for ${SECS}s" >&2
    flags=()
    # web_request links polars: without a sanitizer (safe Rust; coverage only) and
    # unoptimised, its build takes minutes instead of the better part of an hour.
    [ "$t" = web_request ] && flags=(--dev -s none)
    build=(fuzz build --fuzz-dir "$dir" "${flags[@]}" "$t")
    run=(fuzz run --fuzz-dir "$dir" "${flags[@]}" "$t")
    cargo "+$NIGHTLY" "${build[@]}"
    # every input that once failed ($dir/regressions/TARGET/) must pass first
    if compgen -G "$dir/regressions/$t/*" >/dev/null; then
        if ! cargo "+$NIGHTLY" "${run[@]}" "$dir"/regressions/"$t"/* -- -runs=1 \
            >"/tmp/dxtrace-fuzz-regress-$t.log" 2>&1; then
            grep -E 'panicked|ERROR|SUMMARY' "/tmp/dxtrace-fuzz-regress-$t.log" >&2 || true
            echo "fuzz target $t fails a regression input in $dir/regressions/$t/" >&2
            exit 1
        fi
        echo "regression inputs of $t: $(ls "$dir"/regressions/"$t" | wc -l) pass" >&2
    fi
    cargo "+$NIGHTLY" "${run[@]}" "$corpus" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -max_len=262144 \
        -print_final_stats=1 2>&1 | tee "/tmp/dxtrace-fuzz-$t.log" \
        | grep -E '^(stat::|==|INFO: Running|Done|#[0-9]+ +DONE)|ERROR|panicked|SUMMARY' || true
    if compgen -G "$dir/artifacts/$t/crash-*" >/dev/null || compgen -G "$dir/artifacts/$t/oom-*" >/dev/null \
        || compgen -G "$dir/artifacts/$t/timeout-*" >/dev/null || compgen -G "$dir/artifacts/$t/leak-*" >/dev/null; then
        echo "fuzz target $t found a failing input: see $dir/artifacts/$t/;" \
            "the fuzzer's whole output (stack traces) is in /tmp/dxtrace-fuzz-$t.log" >&2
        exit 1
    fi
done
