//! What capture can do on this machine, and how to fix what is missing.
//!
//! Every check actually tries the thing (loads a program of each type, attaches it)
//! rather than guessing from kernel versions or config files.

use std::path::Path;

use aya::programs::{FEntry, KProbe, RawTracePoint, TracePoint, UProbe, uprobe::UProbeScope};
use aya::{EbpfLoader, include_bytes_aligned};

use crate::load::{chain, ensure_tracefs, kallsyms_has};

static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Missing, but capture still works without it.
    Warn,
    /// Capture cannot work until this is fixed.
    Fail,
    /// Informational.
    Info,
}

impl Status {
    /// Short label.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Info => "info",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Result.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it (empty when nothing to do).
    pub fix: String,
}

fn check(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

fn caps() -> (bool, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = text
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    // SAFETY: no arguments.
    (unsafe { libc::geteuid() } == 0, eff)
}

/// Runs every check.
pub fn run() -> Vec<Check> {
    let mut out = Vec::new();
    let (root, eff) = caps();
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    const CAP_SYS_RESOURCE: u64 = 24;
    let has = |c: u64| eff & (1 << c) != 0;
    let privileged = has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
    out.push(check(
        "privileges",
        if privileged { Status::Ok } else { Status::Fail },
        format!(
            "euid {}; CAP_SYS_ADMIN {}, CAP_BPF {}, CAP_PERFMON {}, CAP_SYS_RESOURCE {}",
            if root { "0 (root)" } else { "non-root" },
            has(CAP_SYS_ADMIN),
            has(CAP_BPF),
            has(CAP_PERFMON),
            has(CAP_SYS_RESOURCE)
        ),
        if privileged {
            ""
        } else {
            "run as root (sudo dxtrace record …)"
        },
    ));

    let btf = Path::new("/sys/kernel/btf/vmlinux");
    let btf_parsed = crate::btf::Btf::from_sys_fs();
    match &btf_parsed {
        Ok(b) => out.push(match b.kernel_offsets() {
            Ok(o) => check(
                "kernel BTF",
                Status::Ok,
                format!(
                    "{} ({} bytes); task.files@{}, file.f_inode@{}, inode.i_rdev@{}",
                    btf.display(),
                    std::fs::metadata(btf).map(|m| m.len()).unwrap_or(0),
                    o.task_files,
                    o.file_inode,
                    o.inode_rdev
                ),
                "",
            ),
            Err(e) => check(
                "kernel BTF",
                Status::Fail,
                e.to_string(),
                "report this kernel version",
            ),
        }),
        Err(e) => out.push(check(
            "kernel BTF",
            Status::Fail,
            e.to_string(),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (WSL2 kernels ≥ 5.15 have it)",
        )),
    }

    let tracefs = ensure_tracefs();
    out.push(match &tracefs {
        Ok(()) => check(
            "tracefs",
            Status::Ok,
            "/sys/kernel/tracing/events present",
            "",
        ),
        Err(e) => check(
            "tracefs",
            Status::Fail,
            e.to_string(),
            "mount -t tracefs tracefs /sys/kernel/tracing",
        ),
    });

    // RLIMIT_MEMLOCK: only matters on kernels < 5.11 (no memcg accounting of BPF memory).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    let fmt_lim = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{} KiB", v / 1024)
        }
    };
    out.push(check(
        "ring buffer limits",
        Status::Info,
        format!(
            "RLIMIT_MEMLOCK {} (cur) / {} (max); kernels ≥ 5.11 charge BPF maps to the memory cgroup instead; default ring 4 MiB, --ringbuf-size sets it (power of two)",
            fmt_lim(lim.rlim_cur),
            fmt_lim(lim.rlim_max)
        ),
        "",
    ));

    out.extend(program_checks());

    let dxg = Path::new("/dev/dxg");
    out.push(if dxg.exists() {
        check(
            "/dev/dxg",
            Status::Ok,
            "present (WSL2 GPU paravirtualisation)",
            "",
        )
    } else {
        check(
            "/dev/dxg",
            Status::Warn,
            "absent: not a WSL2 kernel with dxgkrnl",
            "capture /dev/kvm or the emulator's FUSE device (dxtrace emulate --mount DIR) instead",
        )
    });
    let syms = [
        "dxgvmb_send_sync_msg",
        "dxgvmb_send_async_msg",
        "dxgk_unlocked_ioctl",
    ];
    let in_kallsyms: Vec<&str> = syms.iter().copied().filter(|s| kallsyms_has(s)).collect();
    let in_btf: Vec<&str> = match &btf_parsed {
        Ok(b) => syms.iter().copied().filter(|s| b.has_func(s)).collect(),
        Err(_) => Vec::new(),
    };
    out.push(if in_kallsyms.len() == syms.len() {
        check(
            "dxgkrnl symbols",
            Status::Ok,
            format!("kallsyms: {}; BTF: {}", in_kallsyms.join(", "), in_btf.join(", ")),
            "",
        )
    } else {
        check(
            "dxgkrnl symbols",
            Status::Warn,
            format!(
                "not in /proc/kallsyms{}; VMBus capture only via uprobes on the emulator",
                if in_kallsyms.is_empty() {
                    String::new()
                } else {
                    format!(" (found only {})", in_kallsyms.join(", "))
                }
            ),
            "on WSL2, run as root so kallsyms shows addresses; elsewhere use --uprobe-binary with the emulator",
        )
    });
    out
}

/// Loads (and where possible attaches) one tiny program of each type.
fn program_checks() -> Vec<Check> {
    let mut out = Vec::new();
    let mut ebpf = match EbpfLoader::new().load(OBJECT) {
        Ok(e) => e,
        Err(e) => {
            out.push(check(
                "eBPF object",
                Status::Fail,
                chain(&e),
                "run as root; see the privileges line",
            ));
            return out;
        }
    };
    // tracepoint: the capture's main path.
    let tp = (|| -> Result<(), String> {
        let p: &mut TracePoint = ebpf
            .program_mut("sched_process_fork")
            .ok_or("program missing")?
            .try_into()
            .map_err(|e| chain(&e))?;
        p.load().map_err(|e| chain(&e))?;
        p.attach("sched", "sched_process_fork")
            .map_err(|e| chain(&e))?;
        Ok(())
    })();
    out.push(match tp {
        Ok(()) => check("tracepoint programs", Status::Ok, "load and attach", ""),
        Err(e) => check(
            "tracepoint programs",
            Status::Fail,
            e,
            "capture needs syscalls:sys_enter_ioctl; check CONFIG_FTRACE_SYSCALLS and privileges",
        ),
    });
    // raw tracepoints: the cheaper syscall hooks the capture uses when they attach.
    let raw = (|| -> Result<(), String> {
        let p: &mut RawTracePoint = ebpf
            .program_mut("noop_raw_tracepoint")
            .ok_or("program missing")?
            .try_into()
            .map_err(|e| chain(&e))?;
        p.load().map_err(|e| chain(&e))?;
        p.attach("sys_enter").map_err(|e| chain(&e))?;
        Ok(())
    })();
    out.push(match raw {
        Ok(()) => check(
            "raw tracepoint programs",
            Status::Ok,
            "load and attach (sys_enter)",
            "",
        ),
        Err(e) => check(
            "raw tracepoint programs",
            Status::Warn,
            e,
            "capture falls back to the syscalls:* tracepoints, which cost more per call",
        ),
    });
    // fentry: preferred for the dxgkrnl VMBus hooks where allowed.
    let fe = (|| -> Result<(), String> {
        let btf = aya::Btf::from_sys_fs().map_err(|e| chain(&e))?;
        let p: &mut FEntry = ebpf
            .program_mut("doctor_fentry")
            .ok_or("program missing")?
            .try_into()
            .map_err(|e| chain(&e))?;
        p.load("do_sys_openat2", &btf).map_err(|e| chain(&e))?;
        Ok(())
    })();
    out.push(match fe {
        Ok(()) => check("fentry programs", Status::Ok, "load", ""),
        Err(e) => check(
            "fentry programs",
            Status::Warn,
            e,
            "not needed: kprobes are used for the dxgkrnl hooks where fentry is refused",
        ),
    });
    // kprobe: the dxgkrnl VMBus hooks.
    let kp = (|| -> Result<(), String> {
        let p: &mut KProbe = ebpf
            .program_mut("kprobe_send_async")
            .ok_or("program missing")?
            .try_into()
            .map_err(|e| chain(&e))?;
        p.load().map_err(|e| chain(&e))?;
        p.attach("do_sys_openat2", 0).map_err(|e| chain(&e))?;
        Ok(())
    })();
    out.push(match kp {
        Ok(()) => check(
            "kprobe programs",
            Status::Ok,
            "load and attach (do_sys_openat2)",
            "",
        ),
        Err(e) => check(
            "kprobe programs",
            Status::Warn,
            e,
            "VMBus capture on a real dxgkrnl needs CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y",
        ),
    });
    // uprobe: the emulator's VMBus hooks.
    let up = (|| -> Result<(), String> {
        let p: &mut UProbe = ebpf
            .program_mut("uprobe_send_async")
            .ok_or("program missing")?
            .try_into()
            .map_err(|e| chain(&e))?;
        p.load().map_err(|e| chain(&e))?;
        p.attach("getpid", "libc", UProbeScope::CallingProcess)
            .map_err(|e| chain(&e))?;
        Ok(())
    })();
    out.push(match up {
        Ok(()) => check(
            "uprobe programs",
            Status::Ok,
            "load and attach (libc getpid)",
            "",
        ),
        Err(e) => check(
            "uprobe programs",
            Status::Warn,
            e,
            "VMBus capture of the emulator needs CONFIG_UPROBE_EVENTS=y",
        ),
    });
    out
}
