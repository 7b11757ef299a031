#!/usr/bin/env bash
# Regenerates the emulator sample traces in traces/samples/ (or in the directory given as
# the first argument): one deterministic trace per dxg scenario and one with injected
# faults. The output is byte-identical on every run of the same build, and a test
# (e2e::emulator::samples_are_up_to_date) regenerates them into a temporary directory and
# compares bytes, so rerun this script after changing the emulator, the scenarios or the
# trace format. traces/samples/synthetic-dxg.dxtrace is not touched (it has its own test).
#
# Usage: scripts/gen-samples.sh [OUT_DIR]     (DXTRACE=path overrides the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-traces/samples}"
if [[ -z "${DXTRACE:-}" ]]; then
    cargo build --quiet -p dxtrace --bin dxtrace
    DXTRACE="${CARGO_TARGET_DIR:-target}/debug/dxtrace"
fi
mkdir -p "$out"
scenarios=$("$DXTRACE" workload --list | awk -F'\t' '$2 == "dxg" { print $1 }')
for s in $scenarios; do
    "$DXTRACE" emulate --deterministic --scenario "$s" -o "$out/emu-$s.dxtrace" >/dev/null
done
# Faults: the second host signal is lost, so frame 2's CPU wait becomes a bounded hang
# (annotated `fault` and `hang`) and the scenario stops there with -ETIMEDOUT; the
# duplicate signal and the device removal stay armed but are not reached.
"$DXTRACE" emulate --deterministic --scenario frame-loop \
    --fault 'lose-signal@2' --fault 'dup-signal@4' \
    --fault 'device-removed@after=30' \
    -o "$out/emu-faults.dxtrace" >/dev/null
ls -l "$out"/emu-*.dxtrace
