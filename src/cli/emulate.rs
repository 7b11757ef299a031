//! `dxtrace emulate`: run scenarios against the in-process emulator and write a trace.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use driver_core::emulator::{self, Emulator, EmulatorBackend, EmulatorConfig, Event, Fault};
use driver_core::workload;
use traces::{
    Annotation, Buffer, BufferRole, CaptureSource, DeviceInfo, Header, HostSignal, IoctlRecord, Record, VmbusCapture,
    VmbusDir, VmbusMessage, Writer, WriterOptions,
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
/// `--mount DIR` (a FUSE `DIR/dxg`) is not built yet.
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
    /// Serve DIR/dxg over FUSE (not built yet).
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
                    flags: if b.unreadable { traces::BUF_UNREADABLE } else { 0 },
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
        Event::Annotation(a) => Record::Annotation(Annotation { ts: a.ts, pid: a.pid, tid: a.tid, key: a.key, text: a.text }),
        Event::Fd(_) => return None,
    })
}

pub fn run(a: EmulateArgs) -> anyhow::Result<ExitCode> {
    if a.mount.is_some() {
        bail!("`dxtrace emulate --mount` (the FUSE /dev/dxg) is not built yet (issue 4); nothing was done");
    }
    let scenario = a.scenario.as_deref().context("--scenario NAME|all is required")?;
    let out = a.output.as_ref().context("-o FILE is required")?;
    let names: Vec<&str> = if scenario == "all" {
        workload::SCENARIOS.iter().filter(|s| s.device == "dxg").map(|s| s.name).collect()
    } else {
        match workload::scenario(scenario) {
            Some(s) if s.device == "dxg" => vec![s.name],
            Some(_) => bail!("scenario {scenario:?} needs a real device; use `dxtrace workload`"),
            None => bail!("unknown scenario {scenario:?} (see `dxtrace workload --list`)"),
        }
    };
    let faults = a.faults.iter().map(|f| Fault::parse(f)).collect::<Result<Vec<_>, _>>()?;
    let mut header = Header::for_this_machine(CaptureSource::Emulator);
    if a.deterministic {
        header.hostname = "dxtrace-sample".into();
        header.kernel_release = "emulated".into();
        header.wall_clock_start_ns = 0;
        header.monotonic_base_ns = emulator::bus::DETERMINISTIC_BASE_NS;
    }
    header.devices = vec![DeviceInfo {
        path: "/dev/dxg (emulated)".into(),
        schema: "dxg".into(),
        kind: "emulated".into(),
        ..DeviceInfo::default()
    }];
    header.dxg_abi = Some("final (ioctls 0x01-0x49), VMBus interface 40".into());
    header.vmbus = VmbusCapture { active: true, detail: "in-process instrumented driver".into() };
    header.command = std::env::args().collect();
    header.extra = vec![("scenarios".into(), names.join(",")), ("seed".into(), a.seed.to_string())];
    let opts = WriterOptions { threads: 1, max_frame_age: Duration::from_secs(3600), ..WriterOptions::default() };
    let mut writer = Writer::create(out, &header, opts).with_context(|| format!("cannot create {}", out.display()))?;
    let sink = emulator::VecSink::new();
    let cfg = EmulatorConfig {
        seed: a.seed,
        async_msg: a.async_msg,
        faults,
        deterministic: a.deterministic,
        comm: a.deterministic.then(|| "dxtrace".to_string()),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::new(cfg, Box::new(sink.clone()));
    let mut failures = 0;
    for (i, name) in names.iter().enumerate() {
        let pid = if a.deterministic { 1000 + i as u32 } else { std::process::id() };
        let mut b = EmulatorBackend::with_pid(emu.clone(), pid);
        match workload::run(name, &mut b, std::path::Path::new("/dev/dxg"), None) {
            Ok((calls, notes)) => {
                println!("{name}: {} ioctls", calls.len());
                for n in notes {
                    println!("  {n}");
                }
            }
            Err(e) => {
                failures += 1;
                println!("{name}: stopped: {e}");
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
    println!("wrote {} records to {}", s.records, out.display());
    if failures > 0 && a.faults.is_empty() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
