//! `dxtrace emulate`: run scenarios against the in-process emulator and write a trace.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use driver_core::emulator::{self, Emulator, EmulatorBackend, EmulatorConfig, Event, Fault};
use driver_core::workload;
use traces::{
    Annotation, Buffer, BufferRole, CaptureSource, DeviceInfo, FdEvent, FdOp, Header, HostSignal,
    IoctlRecord, Record, VmbusCapture, VmbusDir, VmbusMessage, Writer, WriterOptions,
};

/// Run the dxg emulator: in-process scenarios written to a trace.
///
/// The emulator is a user-space build of the dxgkrnl ioctl path over a fake host GPU.
/// Every VMBus message goes through the exported `dxgvmb_send_sync_msg` /
/// `dxgvmb_send_async_msg` symbols of this binary, so a uprobe sees them.
///
/// Faults (repeat --fault): `CMD:status=0xC0000017@N`, `device-removed@after=N`,
/// `hang:CMD@N`, `lose-signal@N`, `dup-signal@N`.
///
/// `--mount DIR` serves the emulated device as `DIR/dxg` on a FUSE mount until SIGINT or
/// SIGTERM (then it unmounts cleanly); with `-o FILE` it also writes a trace of what it
/// served. Unmodified programs open `DIR/dxg` and make real ioctl() syscalls, e.g.
/// `dxtrace workload canonical --device DIR/dxg`. Limits of the FUSE device:
///
/// * restricted ioctls: the kernel copies only `_IOC_SIZE(cmd)` bytes of the struct in and
///   out; the daemon follows embedded pointers in the caller's memory with
///   process_vm_readv / process_vm_writev (needs root or the caller's uid) and reads the
///   argument address from /proc/TID/syscall;
/// * `DIR/dxg` is a regular file, not a character device (no device number; the eBPF
///   probe must filter on it by inode);
/// * no device mmap: fence CPU pages and LOCK2 mappings are not shared with the client,
///   so it cannot poll fence values in memory;
/// * the FUSE ioctl result is an i32: 0, positive NTSTATUS codes (0x103), -errno and the
///   raw-NTSTATUS quirk (0xC000000D arrives as the negative int -1073741811, exactly as the
///   real driver returns it) all pass unchanged; anything wider becomes -EOVERFLOW.
#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    /// Scenario name (see `dxtrace workload --list`) or `all` for every dxg scenario.
    #[arg(long)]
    scenario: Option<String>,
    /// Output trace.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Seed of the fake host.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Inject a fault (repeatable).
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Host advertises async_msg_enabled (all traffic on the global channel).
    #[arg(long)]
    async_msg: bool,
    /// Virtual clock and fixed header fields (hostname, clocks) for reproducible traces.
    #[arg(long)]
    deterministic: bool,
    /// Serve DIR/dxg over FUSE until SIGINT/SIGTERM (see the limits above).
    #[arg(long)]
    mount: Option<PathBuf>,
}

fn role(r: emulator::BufRole) -> BufferRole {
    match r {
        emulator::BufRole::StructIn => BufferRole::StructIn,
        emulator::BufRole::StructOut => BufferRole::StructOut,
        emulator::BufRole::PtrIn => BufferRole::PtrIn,
        emulator::BufRole::PtrOut => BufferRole::PtrOut,
    }
}

/// The one place emulator events become trace records.
pub fn to_record(ev: Event) -> Option<Record> {
    Some(match ev {
        Event::Ioctl(i) => Record::Ioctl(IoctlRecord {
            id: i.id,
            ts_enter: i.ts_enter,
            ts_exit: i.ts_exit,
            pid: i.pid,
            tid: i.tid,
            fd: i.fd,
            dev: 0,
            cmd: i.cmd,
            arg: i.arg,
            ret: i.ret,
            buffers: i
                .buffers
                .into_iter()
                .map(|b| Buffer {
                    addr: b.addr,
                    role: role(b.role),
                    path: b.path,
                    len: b.len,
                    flags: if b.unreadable {
                        traces::BUF_UNREADABLE
                    } else {
                        0
                    },
                    data: b.data,
                })
                .collect(),
        }),
        Event::Vmbus(v) => Record::Vmbus(VmbusMessage {
            ts: v.ts,
            dir: match v.dir {
                emulator::VmbusDirection::GuestToHost => VmbusDir::GuestToHost,
                emulator::VmbusDirection::HostReply => VmbusDir::HostReply,
                emulator::VmbusDirection::HostToGuest => VmbusDir::HostToGuest,
            },
            channel: v.channel,
            request_id: v.request_id,
            is_async: v.is_async,
            status: v.status,
            ioctl_id: v.ioctl_id,
            pid: v.pid,
            tid: v.tid,
            len: v.bytes.len() as u64,
            flags: 0,
            bytes: v.bytes,
        }),
        Event::Signal(s) => Record::Signal(HostSignal {
            ts: s.ts,
            event_id: s.event_id,
            pid: s.pid,
            fd: -1,
            source: s.source,
            detail: s.detail,
        }),
        Event::Annotation(a) => Record::Annotation(Annotation {
            ts: a.ts,
            pid: a.pid,
            tid: a.tid,
            key: a.key,
            text: a.text,
        }),
        Event::Fd(f) => Record::Fd(FdEvent {
            ts: f.ts,
            pid: f.pid,
            tid: f.tid,
            fd: f.fd,
            op: if f.open { FdOp::Open } else { FdOp::Close },
            path: f.path,
            ret: f.ret,
            ..FdEvent::default()
        }),
    })
}

/// The emulator's settings from the command line: seed, fault plan, async messages.
fn emulator_config(a: &EmulateArgs) -> anyhow::Result<EmulatorConfig> {
    let faults = a
        .faults
        .iter()
        .map(|f| Fault::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EmulatorConfig {
        seed: a.seed,
        async_msg: a.async_msg,
        faults,
        deterministic: a.deterministic,
        comm: a.deterministic.then(|| "dxtrace".to_string()),
        ..EmulatorConfig::default()
    })
}

/// The header of a trace the emulator writes, in process or behind FUSE. `header.extra`
/// carries everything that decided what the emulator did (seed, fault plan, latency
/// model…): `dxtrace replay --target emulator` configures its emulator from these.
fn emulator_header(a: &EmulateArgs, cfg: &EmulatorConfig, device: &str, vmbus: &str) -> Header {
    let mut header = Header::for_this_machine(CaptureSource::Emulator);
    if a.deterministic {
        header.hostname = "dxtrace-sample".into();
        header.kernel_release = "emulated".into();
        header.wall_clock_start_ns = 0;
        header.monotonic_base_ns = emulator::bus::DETERMINISTIC_BASE_NS;
    }
    header.devices = vec![DeviceInfo {
        path: device.into(),
        schema: "dxg".into(),
        kind: "emulated".into(),
        ..DeviceInfo::default()
    }];
    header.dxg_abi = Some("final (ioctls 0x01-0x49), VMBus interface 40".into());
    header.vmbus = VmbusCapture {
        active: true,
        detail: vmbus.into(),
    };
    header.extra = cfg.header_extras();
    header
}

pub fn run(a: EmulateArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &a.mount {
        return serve(&a, dir);
    }
    let scenario = a
        .scenario
        .as_deref()
        .context("--scenario NAME|all is required")?;
    let out = a.output.as_ref().context("-o FILE is required")?;
    let names: Vec<&str> = if scenario == "all" {
        workload::SCENARIOS
            .iter()
            .filter(|s| s.device == "dxg")
            .map(|s| s.name)
            .collect()
    } else {
        match workload::scenario(scenario) {
            Some(s) if s.device == "dxg" => vec![s.name],
            Some(_) => bail!("scenario {scenario:?} needs a real device; use `dxtrace workload`"),
            None => bail!("unknown scenario {scenario:?} (see `dxtrace workload --list`)"),
        }
    };
    let cfg = emulator_config(&a)?;
    let mut header = emulator_header(
        &a,
        &cfg,
        "/dev/dxg (emulated)",
        "in-process instrumented driver",
    );
    header.command = if a.deterministic {
        // The output path (and the binary's path) differ between runs of the same command.
        let mut c: Vec<String> = [
            "dxtrace",
            "emulate",
            "--deterministic",
            "--scenario",
            scenario,
        ]
        .map(String::from)
        .into();
        c.extend(["--seed".into(), a.seed.to_string()]);
        c.extend(
            a.faults
                .iter()
                .flat_map(|f| ["--fault".to_string(), f.clone()]),
        );
        c
    } else {
        std::env::args().collect()
    };
    header
        .extra
        .insert(0, ("scenarios".into(), names.join(",")));
    if a.deterministic && !workload::arena::is_fixed() {
        eprintln!(
            "dxtrace: warning: the workload arena could not be mapped at {:#x}; addresses in this trace are not reproducible",
            workload::arena::ARENA_BASE
        );
    }
    let opts = WriterOptions {
        threads: 1,
        max_frame_age: Duration::from_secs(3600),
        ..WriterOptions::default()
    };
    let mut writer = Writer::create(out, &header, opts)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let sink = emulator::VecSink::new();
    let emu = Emulator::new(cfg, Box::new(sink.clone()));
    let mut failures = 0;
    for (i, name) in names.iter().enumerate() {
        let pid = if a.deterministic {
            1000 + i as u32
        } else {
            std::process::id()
        };
        let mut b = EmulatorBackend::with_pid(emu.clone(), pid);
        match workload::run(name, &mut b, std::path::Path::new("/dev/dxg"), None) {
            Ok((calls, notes)) => {
                let _ = writeln!(std::io::stdout(), "{name}: {} ioctls", calls.len());
                for n in notes {
                    let _ = writeln!(std::io::stdout(), "  {n}");
                }
            }
            Err(e) => {
                failures += 1;
                let _ = writeln!(std::io::stdout(), "{name}: stopped: {e}");
            }
        }
        drop(b);
        for ev in sink.take() {
            if let Some(r) = to_record(ev) {
                writer.push(&r)?;
            }
        }
    }
    let s = writer.finish()?;
    let _ = writeln!(
        std::io::stdout(),
        "wrote {} records to {}",
        s.records,
        out.display()
    );
    if failures > 0 && a.faults.is_empty() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Blocks SIGINT and SIGTERM in this thread (and every thread spawned after it, which
/// inherit the mask), so [`wait_for_stop`] can take them synchronously.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_stop(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is initialised and the signals in it are blocked in this thread.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// `--mount DIR`: serve DIR/dxg until SIGINT/SIGTERM, optionally tracing to `-o FILE`.
fn serve(a: &EmulateArgs, dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    if a.scenario.is_some() {
        bail!(
            "--mount serves a device; run scenarios against it with `dxtrace workload NAME --device DIR/dxg`"
        );
    }
    let set = block_stop_signals();
    let cfg = emulator_config(a)?;
    let writer = match &a.output {
        Some(out) => {
            let mut header = emulator_header(
                a,
                &cfg,
                &format!("{}/dxg (emulated, FUSE)", dir.display()),
                "FUSE-served instrumented driver",
            );
            header.command = std::env::args().collect();
            let opts = WriterOptions {
                threads: 1,
                max_frame_age: Duration::from_secs(1),
                ..WriterOptions::default()
            };
            Some(
                Writer::create(out, &header, opts)
                    .with_context(|| format!("cannot create {}", out.display()))?,
            )
        }
        None => None,
    };
    let writer = std::sync::Arc::new(std::sync::Mutex::new(writer));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sink = {
        let (writer, failed) = (writer.clone(), failed.clone());
        emulator::FnSink(move |ev| {
            let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some(w), Some(r)) = (w.as_mut(), to_record(ev))
                && w.push(&r).is_err()
            {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let emu = Emulator::new(cfg, Box::new(sink));
    let mount = emulator::FuseMount::mount(emu, dir)
        .with_context(|| format!("cannot mount FUSE on {}", dir.display()))?;
    let _ = writeln!(
        std::io::stdout(),
        "serving {} (SIGINT or SIGTERM unmounts)",
        mount.device().display()
    );
    let _ = std::io::stdout().flush();
    // Seal the open frame once it is a second old even when no call comes, so a crash
    // (kill -9) loses at most about a second of events, not everything since the last call.
    let ticking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ticker = {
        let (writer, failed, ticking) = (writer.clone(), failed.clone(), ticking.clone());
        std::thread::spawn(move || {
            while ticking.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(w) = w.as_mut()
                    && w.tick().is_err()
                {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let sig = wait_for_stop(&set);
    ticking.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = ticker.join();
    mount
        .unmount()
        .with_context(|| format!("cannot unmount {}", dir.display()))?;
    let _ = writeln!(
        std::io::stdout(),
        "signal {sig}: unmounted {}",
        dir.display()
    );
    if let Some(w) = writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let s = w.finish()?;
        let _ = writeln!(
            std::io::stdout(),
            "wrote {} records to {}",
            s.records,
            a.output
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    if failed.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("some events could not be written to the trace");
    }
    Ok(ExitCode::SUCCESS)
}
