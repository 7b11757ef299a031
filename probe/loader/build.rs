//! Builds `probe/ebpf` for bpfel with the pinned nightly (see its rust-toolchain.toml) and
//! leaves the object in OUT_DIR, where `include_bytes_aligned!` picks it up.
//! Set AYA_BUILD_SKIP=1 to skip (the loader then embeds an empty object and fails to load).

fn main() -> aya_build::Result<()> {
    let dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root_dir = format!("{dir}/../ebpf");
    let skip = std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true");
    if skip {
        // Keep include_bytes_aligned! compiling: an empty object that fails at load time.
        let out = std::env::var("OUT_DIR")?;
        std::fs::write(format!("{out}/probe"), [])?;
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "probe-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom("nightly-2026-05-20"),
    )
}
