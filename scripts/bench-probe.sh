#!/usr/bin/env bash
# Probe overhead per ioctl: a tight KVM_CHECK_EXTENSION loop on /dev/kvm with no probe,
# with the dxtrace probe (recording the loop's process to a trace) and under
# `strace -f -e trace=ioctl`. Needs root, /dev/kvm and strace. Prints a small table.
#
#   scripts/bench-probe.sh [CALLS]     (default 1000000; strace runs CALLS/10)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
cargo build --release -p probe --example bench_probe >&2
exec target/release/examples/bench_probe all "$N"
