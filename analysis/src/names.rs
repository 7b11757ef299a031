//! Names from driver-core's tables (never copied here).

/// Ioctl name of a request code (`LX_DXCREATEALLOCATION`, `KVM_RUN`), or `0x…` when no
/// device table knows it.
pub fn ioctl_name(cmd: u32) -> String {
    match driver_core::lookup_code(cmd) {
        Some(d) => d.name.to_string(),
        None => format!("{cmd:#010x}"),
    }
}

/// Rendering of a full ioctl return value (`0`, `-22 (EINVAL)`,
/// `3221225485 = raw NTSTATUS STATUS_INVALID_PARAMETER (0xc000000d)`). Positive values are
/// read as NTSTATUS success codes only for dxg request codes.
pub fn status_label(cmd: u32, ret: i64) -> String {
    let ntstatus = driver_core::lookup_code(cmd)
        .map(|d| d.device.positive_return_is_ntstatus())
        .unwrap_or(false);
    driver_core::render_return(ret, ntstatus)
}
