#!/usr/bin/env bash
# Runs the whole dxtrace test suite, as CI does. Run as root: the probe tests load and
# attach real eBPF programs, the replay tests open /dev/kvm, the emulator tests mount FUSE.
#
#   ./scripts/setup.sh && ./scripts/test.sh
#
# Installs nothing itself (setup.sh does, idempotently); fails loudly when something the
# tests need is missing rather than skipping it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --all-targets --locked -- -D warnings

step "fuzz smoke (every libFuzzer target for 20 s)"
./scripts/fuzz.sh 20

step "tests"
# Every default member: libraries' unit tests, the CLI, and the one end-to-end binary.
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --locked --no-fail-fast 2>&1 | tee /tmp/dxtrace-test.log
