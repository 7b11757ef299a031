#!/usr/bin/env bash
# Probe overhead per ioctl, each loop with no probe, with the dxtrace probe (recording the
# loop's process to a trace) and under `strace -f -e trace=ioctl`:
#   kvm    KVM_CHECK_EXTENSION on /dev/kvm (no payload), CALLS calls;
#   dxg64  LX_DXQUERYADAPTERINFO with a 64-byte buffer through the emulator's FUSE
#          /dev/dxg (`dxtrace emulate --mount`, VMBus uprobes attached), CALLS/20 calls;
#   dxg4k  the same with a 4-KiB buffer.
# Needs root, /dev/kvm, /dev/fuse and strace. Prints a small table per loop.
#
#   scripts/bench-probe.sh [CALLS]     (default 1000000; strace runs a tenth)
#   DXTRACE=path/to/dxtrace scripts/bench-probe.sh   (use that binary for the FUSE daemon
#                                                    instead of building it in release)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
T="${CARGO_TARGET_DIR:-target}"
if [ -z "${DXTRACE:-}" ]; then
    cargo build --release -p dxtrace --bin dxtrace >&2
    DXTRACE="$T/release/dxtrace"
fi
cargo build --release -p probe --example bench_probe >&2
uptime >&2
exec "$T/release/examples/bench_probe" all "$N" "$DXTRACE"
