#!/usr/bin/env bash
# Probe overhead per ioctl, each loop with no probe, with the dxtrace probe (recording the
# loop's process to a trace) and under `strace -f -e trace=ioctl`:
#   kvm    KVM_CHECK_EXTENSION on /dev/kvm (no payload), CALLS calls;
#   dxg64  LX_DXQUERYADAPTERINFO with a 64-byte buffer through the emulator's FUSE
#          /dev/dxg (served by the release `emu_mount` example, which links the same
#          emulator as `dxtrace emulate --mount`; VMBus uprobes attached), CALLS/20 calls;
#   dxg4k  the same with a 4-KiB buffer.
# Needs root, /dev/kvm, /dev/fuse and strace. Prints a small table per loop.
#
# The kvm loop also runs with a no-op program alone on the raw and on the syscalls:*
# hooks (the floor), with the probe attached but nobody reading the ring (the kernel side
# alone, with the kernel's per-program BPF statistics), with the probe forced onto the
# syscalls:* tracepoints, and on a VM fd (a derived descriptor, no fd walk).
#
# Each figure is the fastest of BENCH_PROBE_REPS runs (default 3); strace, the syscalls:*
# row and the per-program statistics run once. "reader CPU" is the recording process's
# CPU time per call (ring reader, assembler, writer, compression).
#
#   scripts/bench-probe.sh [CALLS]     (default 1000000; strace runs a tenth)
#   DXTRACE=path/to/dxtrace scripts/bench-probe.sh   (serve the FUSE device with that
#                                     binary's `emulate --mount` instead of emu_mount)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
T="${CARGO_TARGET_DIR:-target}"
if [ -z "${DXTRACE:-}" ]; then
    cargo build --release -p probe --example emu_mount >&2
    DXTRACE="$T/release/examples/emu_mount"
fi
cargo build --release -p probe --example bench_probe >&2
uptime >&2
exec "$T/release/examples/bench_probe" all "$N" "$DXTRACE"
