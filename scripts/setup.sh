#!/usr/bin/env bash
# Installs everything dxtrace needs on a fresh Debian 12 (bookworm) machine, as root.
# Idempotent: every step checks before it installs, so running it again is cheap.
#
#   - Debian packages: LLVM 22 (for bpf-linker), FUSE 3, Chromium + chromedriver (browser
#     tests), strace (benchmark baseline), bpftool (probe leak checks).
#   - The pinned nightly toolchain with rust-src (builds the eBPF probe for bpfel).
#   - bpf-linker 0.13.0 built against Debian's llvm-22-dev.
#   - cargo-fuzz (the libFuzzer targets in fuzz/).
set -euo pipefail

NIGHTLY="nightly-2026-05-20"       # rustc 1.97.0-nightly (e50aa6fba 2026-05-19), LLVM 22
BPF_LINKER_VERSION="0.13.0"
DEB_PACKAGES=(
    llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev
    fuse3 libfuse3-dev pkg-config
    strace bpftool
    chromium chromium-driver
    python3-pip
)

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        log "run as root (apt-get and the eBPF tests need it)"; exit 1
    fi
}

install_debs() {
    local missing=()
    for p in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then log "Debian packages present"; return; fi
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_nightly() {
    if rustup toolchain list | grep -q "^${NIGHTLY}" \
        && rustup component list --toolchain "$NIGHTLY" --installed | grep -q '^rust-src'; then
        log "$NIGHTLY with rust-src present"; return
    fi
    log "installing $NIGHTLY with rust-src"
    rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src
}

install_bpf_linker() {
    if command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
        log "bpf-linker $BPF_LINKER_VERSION present"; return
    fi
    log "building bpf-linker $BPF_LINKER_VERSION against llvm-22 (a few minutes)"
    LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
        cargo install --locked bpf-linker --version "$BPF_LINKER_VERSION" \
        --no-default-features --features llvm-22
}

install_node() {
    # The machine image ships Node.js 20 with its own npm; Debian's npm package conflicts
    # with that nodejs build, so only install Debian's when there is no node at all.
    if command -v node >/dev/null && command -v npm >/dev/null; then
        log "node $(node --version) present"; return
    fi
    log "installing Debian nodejs + npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
}

install_cargo_fuzz() {
    if cargo fuzz --version >/dev/null 2>&1; then
        log "cargo-fuzz present"; return
    fi
    log "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
}

need_root
install_debs
install_node
install_nightly
install_bpf_linker
install_cargo_fuzz
log "ready"
