//! Emulator unit tests: every dxg scenario in-process, the canonical VMBus sequence,
//! fault effects.

use std::collections::HashMap;

use super::*;
use crate::dxg::vmbus::command_name;
use crate::layout::Pod;
use crate::schema::{VmbusChannel, VmbusCmd};
use crate::workload::{self, SCENARIOS};

fn emu(faults: &[&str]) -> (Emulator, VecSink) {
    let sink = VecSink::new();
    let cfg = EmulatorConfig {
        deterministic: true,
        comm: Some("dxtrace-test".into()),
        faults: faults
            .iter()
            .map(|f| Fault::parse(f).expect("valid fault"))
            .collect(),
        ..EmulatorConfig::default()
    };
    (Emulator::new(cfg, Box::new(sink.clone())), sink)
}

fn run(e: &Emulator, name: &str) -> Result<Vec<workload::CallLog>, workload::WorkloadError> {
    let mut b = EmulatorBackend::with_pid(e.clone(), 4242);
    workload::run(name, &mut b, Path::new("/dev/dxg"), None).map(|(c, _)| c)
}

/// Names of the guest→host commands sent, in order (`G:` prefix for global ones).
fn sent(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Vmbus(v) if v.dir == VmbusDirection::GuestToHost => {
                let b = if v.bytes.len() >= 40 && v.bytes[0] == 16 {
                    &v.bytes[16..]
                } else {
                    &v.bytes[..]
                };
                let global = b[12] == 1;
                let value = u32::from_le_bytes(b[16..20].try_into().expect("4"));
                let cmd = VmbusCmd {
                    channel: if global {
                        VmbusChannel::Global
                    } else {
                        VmbusChannel::Adapter
                    },
                    value,
                };
                let n = command_name(cmd).unwrap_or("?");
                Some(if global {
                    format!("G:{n}")
                } else {
                    n.to_string()
                })
            }
            _ => None,
        })
        .collect()
}

#[test]
fn every_dxg_scenario_runs_in_process() {
    for s in SCENARIOS.iter().filter(|s| s.device == "dxg") {
        let (e, _) = emu(&[]);
        let calls = run(&e, s.name).unwrap_or_else(|err| panic!("scenario {}: {err}", s.name));
        assert!(!calls.is_empty(), "{} made no calls", s.name);
    }
}

#[test]
fn scenarios_cover_forty_ioctls() {
    let mut names = std::collections::BTreeSet::new();
    for s in SCENARIOS.iter().filter(|s| s.device == "dxg") {
        let (e, _) = emu(&[]);
        for c in run(&e, s.name).expect("runs") {
            if crate::schema::lookup_name(&c.ioctl).is_some() {
                names.insert(c.ioctl);
            }
        }
    }
    assert!(
        names.len() >= 40,
        "only {} ioctls used: {names:?}",
        names.len()
    );
}

#[test]
fn canonical_session_vmbus_sequence_matches_reference() {
    let (e, sink) = emu(&[]);
    run(&e, "canonical").expect("canonical runs");
    let got = sent(&sink.take());
    // Bring-up per adapter (§3.1), then the §5.3 session with the §1.2 messages.
    let expected: Vec<&str> = vec![
        "G:SETIOSPACEREGION",
        "OPENADAPTER",
        "GETINTERNALADAPTERINFO",
        "G:SETIOSPACEREGION",
        "OPENADAPTER",
        "GETINTERNALADAPTERINFO",
        "G:CREATEPROCESS",
        "QUERYADAPTERINFO",
        "QUERYADAPTERINFO",
        "ISFEATUREENABLED",
        "CREATEDEVICE",
        "CREATEPAGINGQUEUE",
        "CREATECONTEXTVIRTUAL",
        "CREATEHWQUEUE",
        "CREATESYNCOBJECT",
        "CREATEALLOCATION",
        "MAKERESIDENT",
        "RESERVEGPUVIRTUALADDRESS",
        "MAPGPUVIRTUALADDRESS",
        "UPDATEGPUVIRTUALADDRESS",
        "LOCK2",
        "UNLOCK2",
        "ESCAPE",
        "SUBMITCOMMAND",
        "SIGNALSYNCOBJECT",
        "WAITFORSYNCOBJECTFROMCPU",
        "DESTROYALLOCATION",
        "G:DESTROYSYNCOBJECT",
        "DESTROYHWQUEUE",
        "DESTROYCONTEXT",
        "DESTROYPAGINGQUEUE",
        "DESTROYDEVICE",
        "G:DESTROYPROCESS",
    ];
    assert_eq!(got, expected);
}

#[test]
fn request_ids_are_per_channel_from_one_and_ext_header_present() {
    let (e, sink) = emu(&[]);
    run(&e, "canonical").expect("runs");
    let mut last: HashMap<Option<u64>, u64> = HashMap::new();
    for ev in sink.take() {
        if let Event::Vmbus(v) = ev
            && v.dir == VmbusDirection::GuestToHost
            && !v.is_async
        {
            assert_eq!(
                u32::from_le_bytes(v.bytes[..4].try_into().expect("4")),
                16,
                "ext header (v40)"
            );
            let prev = last.insert(v.channel, v.request_id).unwrap_or(0);
            assert_eq!(v.request_id, prev + 1, "request ids count up per channel");
        }
    }
    assert!(last.len() >= 2, "global and adapter channels both used");
}

#[test]
fn status_fault_fails_the_ioctl_and_is_annotated() {
    let (e, sink) = emu(&["CREATEALLOCATION:status=0xC0000017@1"]);
    assert!(run(&e, "canonical").is_err());
    let evs = sink.take();
    assert!(evs.iter().any(|e| matches!(e, Event::Annotation(a) if a.key == "fault" && a.text.contains("CREATEALLOCATION"))));
    assert!(evs.iter().any(
        |e| matches!(e, Event::Ioctl(i) if i.cmd == 0xC0484706 && i.ret == -(libc::ENOMEM as i64))
    ));
}

#[test]
fn hang_fault_is_bounded_and_reported() {
    let (e, sink) = emu(&["hang:SUBMITCOMMAND@1"]);
    assert!(run(&e, "canonical").is_err());
    let evs = sink.take();
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Annotation(a) if a.key == "hang"))
    );
    assert!(evs.iter().any(|e| matches!(e, Event::Ioctl(i) if i.cmd == 0xC180470F && i.ret == -(libc::ETIMEDOUT as i64))));
}

#[test]
fn lost_signal_hangs_the_cpu_wait() {
    let (e, sink) = emu(&["lose-signal@1"]);
    assert!(run(&e, "canonical").is_err());
    let evs = sink.take();
    assert!(evs.iter().any(|e| matches!(e, Event::Ioctl(i) if i.cmd == 0xC028473A && i.ret == -(libc::ETIMEDOUT as i64))));
}

#[test]
fn duplicated_signal_finds_no_waiter() {
    let (e, sink) = emu(&["dup-signal@1"]);
    run(&e, "canonical").expect("a duplicate does not break the client");
    let evs = sink.take();
    let signals = evs
        .iter()
        .filter(|e| matches!(e, Event::Vmbus(v) if v.dir == VmbusDirection::HostToGuest))
        .count();
    assert_eq!(signals, 2);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Signal(s) if s.source == "unknown"))
    );
}

#[test]
fn device_removed_reaches_device_state() {
    let (e, sink) = emu(&["device-removed@after=6"]);
    let _ = run(&e, "frame-loop");
    let evs = sink.take();
    assert!(evs.iter().any(|e| matches!(e, Event::Vmbus(v) if v.dir == VmbusDirection::HostToGuest && v.bytes[16] == 2)), "SETGUESTDATA sent");
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Ioctl(i) if i.ret == -(libc::ENODEV as i64))),
        "an ioctl fails with -ENODEV"
    );
}

/// Texts of the "fault" annotations.
fn fault_notes(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Annotation(a) if a.key == "fault" => Some(a.text.clone()),
            _ => None,
        })
        .collect()
}

/// A host with faults has its notes taken after sends; one without (it says it never
/// notes) still has the device removal's note taken, once, right after the removal.
#[test]
fn host_notes_reach_the_timeline() {
    let (e, sink) = emu(&["lose-signal@1"]);
    let _ = run(&e, "canonical");
    let notes = fault_notes(&sink.take());
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].starts_with("lose-signal: SIGNALGUESTEVENT #1"));

    let sink = VecSink::new();
    let cfg = EmulatorConfig {
        deterministic: true,
        comm: Some("dxtrace-test".into()),
        faults: vec![Fault::parse("device-removed@after=6").expect("valid")],
        ..EmulatorConfig::default()
    };
    // The host without the fault list: only the driver-level device removal remains.
    let host = host::FakeHost::new(host::HostConfig {
        faults: Vec::new(),
        ..host::HostConfig::of(&cfg)
    });
    assert!(!host.may_note());
    let e = Emulator::with_host(cfg, Box::new(sink.clone()), Box::new(host));
    let _ = run(&e, "frame-loop");
    let evs = sink.take();
    assert_eq!(
        fault_notes(&evs),
        ["device-removed: the host reports every adapter removed (TDR)"]
    );
    // Right after the sixth ioctl (before the seventh's events).
    let note = evs
        .iter()
        .position(|e| matches!(e, Event::Annotation(a) if a.key == "fault"))
        .expect("noted");
    let ioctls_before = evs[..note]
        .iter()
        .filter(|e| matches!(e, Event::Ioctl(_)))
        .count();
    assert_eq!(ioctls_before, 6);
}

#[test]
fn deterministic_runs_are_identical() {
    let a = {
        let (e, s) = emu(&[]);
        run(&e, "frame-loop").expect("runs");
        s.take()
    };
    let b = {
        let (e, s) = emu(&[]);
        run(&e, "frame-loop").expect("runs");
        s.take()
    };
    // Buffers hold addresses of this process's stack, which differ between runs; the
    // VMBus traffic and times must not (except embedded user pointers).
    let ts = |v: &[Event]| {
        v.iter()
            .map(|e| match e {
                Event::Ioctl(i) => (i.ts_enter, i.ret),
                Event::Vmbus(v) => (v.ts, v.request_id as i64),
                _ => (0, 0),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ts(&a), ts(&b));
}

#[test]
fn async_messages_go_on_the_global_channel() {
    let sink = VecSink::new();
    let cfg = EmulatorConfig {
        deterministic: true,
        async_msg: true,
        ..EmulatorConfig::default()
    };
    let e = Emulator::new(cfg, Box::new(sink.clone()));
    run(&e, "frame-loop").expect("runs");
    let evs = sink.take();
    let asyncs: Vec<&VmbusEvent> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Vmbus(v) if v.is_async => Some(v),
            _ => None,
        })
        .collect();
    assert!(!asyncs.is_empty());
    assert!(
        asyncs
            .iter()
            .all(|v| v.channel.is_none() && v.request_id == 0)
    );
    let sessions: Vec<&VmbusEvent> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Vmbus(v) if v.ioctl_id.is_some() && v.dir == VmbusDirection::GuestToHost => {
                Some(v)
            }
            _ => None,
        })
        .collect();
    assert!(
        sessions.iter().all(|v| v.channel.is_none()),
        "with async_msg_enabled every message uses the global channel"
    );
}

#[test]
fn config_round_trips_through_header_extras() {
    let mut cfg = EmulatorConfig {
        seed: 42,
        async_msg: true,
        deterministic: true,
        comm: Some("dxtrace".into()),
        faults: ["lose-signal@2", "dup-signal@4", "device-removed@after=30"]
            .iter()
            .map(|f| Fault::parse(f).expect("valid"))
            .collect(),
        hang_bound_ns: 7_000_000,
        ..EmulatorConfig::default()
    };
    cfg.latency.gpu_work_ns = Some(1234);
    cfg.latency.overrides.insert("CREATEALLOCATION".into(), 99);
    let back = EmulatorConfig::from_header_extras(&cfg.header_extras()).expect("parses");
    assert_eq!(back.seed, 42);
    assert!(back.async_msg && back.deterministic);
    assert_eq!(back.comm.as_deref(), Some("dxtrace"));
    assert_eq!(back.faults, cfg.faults);
    assert_eq!(back.hang_bound_ns, 7_000_000);
    assert_eq!(back.latency.gpu_work_ns, Some(1234));
    assert_eq!(back.latency.overrides.get("CREATEALLOCATION"), Some(&99));
    let bad = vec![("emulator.faults".to_string(), "nope@1".to_string())];
    let e = EmulatorConfig::from_header_extras(&bad).expect_err("bad fault");
    assert!(e.to_string().contains("emulator.faults"), "{e}");
}

/// One ioctl by name on an in-process backend, `s` as the argument struct.
fn call<T: Pod>(b: &mut EmulatorBackend, fd: i32, name: &str, s: &mut T) -> i64 {
    let code = crate::schema::lookup_name(name).expect(name).code;
    // SAFETY: `s` is a live struct of the ioctl's type; its pointers (if any) are live.
    unsafe { b.ioctl(fd, code, s as *mut T as u64) }
}

/// A device on the first adapter: (backend, fd, device handle).
fn device() -> (EmulatorBackend, i32, u32) {
    let (e, _) = emu(&[]);
    let mut b = EmulatorBackend::with_pid(e, 4242);
    let fd = b.open(Path::new("/dev/dxg"), libc::O_RDWR).expect("open");
    let mut infos = [crate::dxg::types::AdapterInfo::zeroed(); 4];
    let mut ea = crate::dxg::types::EnumAdapters3::zeroed();
    ea.adapter_count = infos.len() as u32;
    ea.adapters = infos.as_mut_ptr() as u64;
    assert_eq!(call(&mut b, fd, "LX_DXENUMADAPTERS3", &mut ea), 0);
    let mut d = crate::dxg::types::CreateDevice::zeroed();
    d.adapter = infos[0].adapter_handle;
    assert_eq!(call(&mut b, fd, "LX_DXCREATEDEVICE", &mut d), 0);
    assert_ne!(d.device, 0);
    (b, fd, d.device)
}

/// A monitored fence: (handle, CPU address of its value).
fn fence(b: &mut EmulatorBackend, fd: i32, device: u32) -> (u32, u64) {
    let mut s = crate::dxg::types::CreateSyncObject2::zeroed();
    s.device = device;
    s.info.type_ = 5;
    assert_eq!(call(b, fd, "LX_DXCREATESYNCHRONIZATIONOBJECT", &mut s), 0);
    assert_ne!(s.info.params[1], 0, "monitored fence has a CPU address");
    (s.sync_object, s.info.params[1])
}

fn fence_value(cpu_va: u64) -> u64 {
    // SAFETY: the emulator maps fence pages in this process for as long as it lives.
    unsafe { std::ptr::read_volatile(cpu_va as *const u64) }
}

fn signal_from_cpu(b: &mut EmulatorBackend, fd: i32, device: u32, h: u32, v: u64) {
    let mut objs = [h];
    let mut vals = [v];
    let mut s = crate::dxg::types::SignalSyncObjectFromCpu::zeroed();
    s.device = device;
    s.object_count = 1;
    s.objects = objs.as_mut_ptr() as u64;
    s.fence_values = vals.as_mut_ptr() as u64;
    assert_eq!(
        call(b, fd, "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU", &mut s),
        0
    );
}

#[test]
fn fence_pages_are_reused_only_after_their_fence_is_destroyed() {
    let (mut b, fd, dev) = device();
    let (f1, va1) = fence(&mut b, fd, dev);
    let (f2, va2) = fence(&mut b, fd, dev);
    assert_ne!(va1, va2, "two live fences never share a page");
    signal_from_cpu(&mut b, fd, dev, f1, 7);
    signal_from_cpu(&mut b, fd, dev, f2, 9);
    assert_eq!((fence_value(va1), fence_value(va2)), (7, 9));
    let mut ds = crate::dxg::types::DestroySyncObject { sync_object: f1 };
    assert_eq!(
        call(&mut b, fd, "LX_DXDESTROYSYNCHRONIZATIONOBJECT", &mut ds),
        0
    );
    // The destroyed fence's page is the next fence's, starting from its own initial value.
    let (f3, va3) = fence(&mut b, fd, dev);
    assert_eq!(va3, va1, "the freed page is reused");
    assert_ne!(f3, f1, "handles are not reused");
    assert_eq!(
        fence_value(va3),
        0,
        "a reused page holds the new fence's value"
    );
    // f2 is alive: a further fence gets a page of its own.
    let (f4, va4) = fence(&mut b, fd, dev);
    assert!(va4 != va2 && va4 != va3);
    signal_from_cpu(&mut b, fd, dev, f4, 11);
    signal_from_cpu(&mut b, fd, dev, f3, 5);
    assert_eq!(
        (fence_value(va2), fence_value(va3), fence_value(va4)),
        (9, 5, 11)
    );
    // The destroyed handle stays invalid, though its page lives on under f3.
    let mut again = crate::dxg::types::DestroySyncObject { sync_object: f1 };
    assert!(call(&mut b, fd, "LX_DXDESTROYSYNCHRONIZATIONOBJECT", &mut again) < 0);
    assert_eq!(fence_value(va3), 5);
}

/// GPU VA numbers come from the guest unchecked. Sizes and bases that run past the top of
/// the address space are refused (a reservation gets no address, a mapping fails) instead
/// of overflowing in the host: the fuse_ioctl fuzz target found the host panicking on
/// `base + size` in its range search. Ordinary ranges still work next to them.
#[test]
fn gpu_va_ranges_past_the_top_of_the_address_space_are_refused() {
    use crate::dxg::types::{
        AllocationInfo2, CreateAllocation, CreatePagingQueue, MapGpuVa, ReserveGpuVa,
    };
    let (mut b, fd, device) = device();
    let mut pq = CreatePagingQueue::zeroed();
    pq.device = device;
    assert_eq!(call(&mut b, fd, "LX_DXCREATEPAGINGQUEUE", &mut pq), 0);
    let mut priv_ = [1u8; 32];
    let mut infos = [AllocationInfo2::zeroed()];
    infos[0].priv_drv_data = priv_.as_mut_ptr() as u64;
    infos[0].priv_drv_data_size = 32;
    let mut ca = CreateAllocation::zeroed();
    ca.device = device;
    ca.alloc_count = 1;
    ca.allocation_info = infos.as_mut_ptr() as u64;
    assert_eq!(call(&mut b, fd, "LX_DXCREATEALLOCATION", &mut ca), 0);
    let allocation = infos[0].allocation;

    let reserve = |b: &mut EmulatorBackend, base: u64, min: u64, size: u64| {
        let mut rv = ReserveGpuVa::zeroed();
        rv.adapter = pq.paging_queue; // the paging queue names its adapter
        rv.base_address = base;
        rv.minimum_address = min;
        rv.size = size;
        assert_eq!(call(b, fd, "LX_DXRESERVEGPUVIRTUALADDRESS", &mut rv), 0);
        rv.virtual_address
    };
    let top: u64 = !0xffff;
    for (base, min, size) in [
        (0, 0, u64::MAX),
        (0, 0, u64::MAX - 0x1000),
        (top, 0, 0x20000),
        (0, top, 0x20000),
        (u64::MAX - 0xfff, 0, 0x1000),
    ] {
        assert_eq!(
            reserve(&mut b, base, min, size),
            0,
            "reserve base {base:#x} min {min:#x} size {size:#x}"
        );
    }
    let ok = reserve(&mut b, 0, 0, 0x40000);
    assert_ne!(ok, 0, "an ordinary reservation still gets an address");

    let map = |b: &mut EmulatorBackend, base: u64, min: u64, pages: u64| {
        let mut mv = MapGpuVa::zeroed();
        mv.paging_queue = pq.paging_queue;
        mv.allocation = allocation;
        mv.base_address = base;
        mv.minimum_address = min;
        mv.size_in_pages = pages;
        mv.protection = 1;
        call(b, fd, "LX_DXMAPGPUVIRTUALADDRESS", &mut mv)
    };
    for (base, min, pages) in [
        (0, 0, u64::MAX / 4096 + 1), // size in bytes overflows
        (0, 0, u64::MAX / 4096),     // rounding to 64 KiB overflows
        (0, top, 0x20),              // first free address + size overflows
        (ok, 0, u64::MAX / 4096),    // end of the range overflows
        (u64::MAX - 0xfff, 0, 1),    // inside no reservation, end overflows
    ] {
        assert!(
            map(&mut b, base, min, pages) < 0,
            "map base {base:#x} min {min:#x} pages {pages:#x} fails"
        );
    }
    assert!(
        map(&mut b, ok, 0, 16) >= 0,
        "mapping inside the reservation works"
    );
}

/// The emulator backend with the vouched-memory fast path switched off: `ioctl_live`
/// falls back to [`Backend::ioctl`], where every access is a checked copy.
struct Checked(EmulatorBackend);

impl Backend for Checked {
    fn open(&mut self, path: &Path, flags: i32) -> io::Result<i32> {
        self.0.open(path, flags)
    }
    unsafe fn ioctl(&mut self, fd: i32, cmd: u32, arg: u64) -> i64 {
        // SAFETY: forwarded; the caller upholds the contract.
        unsafe { self.0.ioctl(fd, cmd, arg) }
    }
    fn close(&mut self, fd: i32) -> io::Result<()> {
        self.0.close(fd)
    }
    fn pid(&self) -> u32 {
        self.0.pid()
    }
}

/// CPU addresses in the emulated IO space (fence pages, LOCK2 data) rewritten as offsets
/// in it: every emulator maps the space at its own address.
fn io_offsets(b: &mut [u8]) {
    let lo = host::IO_WINDOW_BASE;
    let hi = lo + 4096 * host::IO_SPACE_SIZE;
    for i in 0..b.len().saturating_sub(7) {
        let v = u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        if (lo..hi).contains(&v) {
            b[i..i + 8].copy_from_slice(&(v % host::IO_SPACE_SIZE).to_le_bytes());
        }
    }
}

/// The driver reads and writes vouched memory in place (plain copies, borrowed slices);
/// every scenario must behave exactly as with checked copies: same returns, same out
/// structs, same events (VMBus bytes and captured buffers included).
#[test]
fn vouched_and_checked_memory_give_identical_runs() {
    let calls = |r: Result<(Vec<workload::CallLog>, Vec<String>), workload::WorkloadError>| {
        let (calls, notes) = r.expect("scenario runs");
        let calls: Vec<_> = calls
            .into_iter()
            .map(|c| {
                let mut out: Vec<u8> = (0..c.out.len() / 2)
                    .map(|i| u8::from_str_radix(&c.out[2 * i..2 * i + 2], 16).expect("hex"))
                    .collect();
                io_offsets(&mut out);
                (c.ioctl, c.ret, out)
            })
            .collect();
        (calls, notes)
    };
    let events = |mut v: Vec<Event>| {
        for e in &mut v {
            if let Event::Ioctl(i) = e {
                for b in &mut i.buffers {
                    io_offsets(&mut b.data);
                }
            }
        }
        v
    };
    for s in SCENARIOS.iter().filter(|s| s.device == "dxg") {
        let (e1, sink1) = emu(&[]);
        let mut fast = EmulatorBackend::with_pid(e1, 4242);
        let r1 = calls(workload::run(
            s.name,
            &mut fast,
            Path::new("/dev/dxg"),
            None,
        ));
        drop(fast);
        let (e2, sink2) = emu(&[]);
        let mut slow = Checked(EmulatorBackend::with_pid(e2, 4242));
        let r2 = calls(workload::run(
            s.name,
            &mut slow,
            Path::new("/dev/dxg"),
            None,
        ));
        drop(slow);
        assert_eq!(r1, r2, "scenario {}: calls differ", s.name);
        let (a, b) = (events(sink1.take()), events(sink2.take()));
        assert!(!a.is_empty());
        assert_eq!(a.len(), b.len(), "scenario {}", s.name);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "scenario {}: event {i}", s.name);
        }
    }
}

/// A read that starts inside a vouched range but runs past its end is a checked read:
/// here the rest is an inaccessible page, so the call fails with EFAULT (a plain copy
/// would crash the process). A buffer wholly outside the ranges is read checked too.
#[test]
fn accesses_leaving_the_vouched_ranges_are_checked() {
    let (mut b, fd, dev) = device();
    let (f, va) = fence(&mut b, fd, dev);
    // SAFETY: a fresh private mapping of two pages, the second made inaccessible.
    let page = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(
            libc::mprotect(p.cast::<u8>().add(4096).cast(), 4096, libc::PROT_NONE),
            0
        );
        p.cast::<u8>()
    };
    let code = crate::schema::lookup_name("LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU")
        .expect("in the table")
        .code;
    let mut objs = [f];
    let mut s = crate::dxg::types::SignalSyncObjectFromCpu::zeroed();
    s.device = dev;
    s.object_count = 1;
    s.objects = objs.as_mut_ptr() as u64;
    let size = std::mem::size_of_val(&s);
    // One call with the fence value at `value`; the struct and the first page vouched.
    let mut signal = |value: u64| {
        s.fence_values = value;
        let arg = &mut s as *mut _ as u64;
        let live = [(arg, size), (page as u64, 4096)];
        // SAFETY: the struct and the first page are live for the call; `objs` is live.
        unsafe { b.ioctl_live(fd, code, arg, &live) }
    };
    // The 8-byte fence value straddles the end of the accessible page.
    // SAFETY: 4 bytes at `page + 4092` are accessible.
    unsafe { page.add(4092).cast::<u32>().write_unaligned(3) };
    let r = signal(page as u64 + 4092);
    assert_eq!(r, -(libc::EFAULT as i64), "straddling read fails checked");
    assert_eq!(fence_value(va), 0, "nothing was signalled");
    // The value moved inside the page, and the handle array outside every range: both
    // are read (the array checked), and the signal lands.
    // SAFETY: inside the accessible page.
    unsafe { page.add(4000).cast::<u64>().write_unaligned(12) };
    assert_eq!(signal(page as u64 + 4000), 0);
    assert_eq!(fence_value(va), 12);
    // SAFETY: our own mapping, no longer used.
    unsafe { libc::munmap(page.cast(), 8192) };
}

/// A device on the first adapter for process `pid` of emulator `e`: (backend, fd, device).
fn device_of(e: &Emulator, pid: u32) -> (EmulatorBackend, i32, u32) {
    let mut b = EmulatorBackend::with_pid(e.clone(), pid);
    let fd = b.open(Path::new("/dev/dxg"), libc::O_RDWR).expect("open");
    let mut infos = [crate::dxg::types::AdapterInfo::zeroed(); 4];
    let mut ea = crate::dxg::types::EnumAdapters3::zeroed();
    ea.adapter_count = infos.len() as u32;
    ea.adapters = infos.as_mut_ptr() as u64;
    assert_eq!(call(&mut b, fd, "LX_DXENUMADAPTERS3", &mut ea), 0);
    let mut d = crate::dxg::types::CreateDevice::zeroed();
    d.adapter = infos[0].adapter_handle;
    assert_eq!(call(&mut b, fd, "LX_DXCREATEDEVICE", &mut d), 0);
    assert_ne!(d.device, 0);
    (b, fd, d.device)
}

fn device_state(b: &mut EmulatorBackend, fd: i32, device: u32) -> i64 {
    let mut s = crate::dxg::types::GetDeviceState::zeroed();
    s.device = device;
    s.state_type = 1;
    call(b, fd, "LX_DXGETDEVICESTATE", &mut s)
}

/// Handles are per process. The driver tries the process it looked up last first and
/// reuses a departed process's slot (and its emptied tables) for the next one: neither
/// may let a process reach another's objects, or a departed process's.
#[test]
fn processes_never_see_each_others_objects() {
    let (e, _) = emu(&[]);
    let (mut a, fa, da) = device_of(&e, 100);
    let (mut b, fb, db) = device_of(&e, 200);
    assert_eq!(device_state(&mut a, fa, da), 0);
    assert_eq!(device_state(&mut b, fb, db), 0);
    // Right after each process's own successful lookup, the other's handle is refused.
    assert_eq!(device_state(&mut a, fa, db), -(libc::EINVAL as i64));
    assert_eq!(device_state(&mut b, fb, db), 0);
    assert_eq!(device_state(&mut b, fb, da), -(libc::EINVAL as i64));
    // Process 100 goes: its slot (the last one looked up) is reused by process 300.
    let (fence_a, _) = fence(&mut a, fa, da);
    assert_eq!(device_state(&mut a, fa, da), 0);
    a.close(fa).expect("close");
    let (mut c, fc, dc) = device_of(&e, 300);
    assert_eq!(
        device_state(&mut c, fc, da),
        -(libc::EINVAL as i64),
        "departed"
    );
    let mut ds = crate::dxg::types::DestroySyncObject {
        sync_object: fence_a,
    };
    assert_eq!(
        call(&mut c, fc, "LX_DXDESTROYSYNCHRONIZATIONOBJECT", &mut ds),
        -(libc::EINVAL as i64),
        "a departed process's fence"
    );
    assert_eq!(
        device_state(&mut c, fc, db),
        -(libc::EINVAL as i64),
        "other's"
    );
    assert_eq!(device_state(&mut c, fc, dc), 0);
    assert_eq!(device_state(&mut b, fb, dc), -(libc::EINVAL as i64));
    assert_eq!(device_state(&mut b, fb, db), 0);
    // Process 100 comes back as a new process: its old device is gone.
    let (mut a2, fa2, da2) = device_of(&e, 100);
    assert_eq!(device_state(&mut a2, fa2, da), -(libc::EINVAL as i64));
    assert_eq!(device_state(&mut a2, fa2, da2), 0);
    // A closed fd is refused even though it was the last one used.
    assert_eq!(device_state(&mut c, fc, dc), 0);
    c.close(fc).expect("close");
    assert_eq!(device_state(&mut c, fc, dc), -(libc::EBADF as i64));
}

/// The CPU wait the driver blocks in is registered apart from the others; waits that do
/// not block (async_event) stay registered until their signal, which finds them (a
/// `cpu_event` signal, not an unknown or duplicate one), also while another wait blocks.
#[test]
fn async_cpu_waits_stay_registered_beside_the_blocking_one() {
    let (e, sink) = emu(&[]);
    let (mut b, fd, dev) = device_of(&e, 4242);
    let (f, va) = fence(&mut b, fd, dev);
    let wait = |b: &mut EmulatorBackend, value: u64, async_event: u64| {
        let mut objs = [f];
        let mut vals = [value];
        let mut w = crate::dxg::types::WaitSyncObjectFromCpu::zeroed();
        w.device = dev;
        w.object_count = 1;
        w.objects = objs.as_mut_ptr() as u64;
        w.fence_values = vals.as_mut_ptr() as u64;
        w.async_event = async_event;
        call(b, fd, "LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU", &mut w)
    };
    sink.take();
    assert_eq!(wait(&mut b, 1, 7), 0, "async: returns at once");
    assert_eq!(wait(&mut b, 2, 7), 0, "async: returns at once");
    signal_from_cpu(&mut b, fd, dev, f, 1);
    assert_eq!(fence_value(va), 1);
    assert_eq!(wait(&mut b, 1, 0), 0, "blocking wait on a reached value");
    signal_from_cpu(&mut b, fd, dev, f, 2);
    assert_eq!(wait(&mut b, 2, 0), 0, "blocking wait on a reached value");
    let evs = sink.take();
    let signals: Vec<&str> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Signal(s) => Some(s.source.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(signals, ["cpu_event"; 4], "{evs:#?}");
    assert!(
        !evs.iter()
            .any(|e| matches!(e, Event::Annotation(a) if a.key == "duplicate-signal"))
    );
    assert_eq!(e.lock().host_events(), 0, "signalled waits are dropped");
    // Many async waits, each signalled: none stays registered (they were kept forever).
    for v in 3..203 {
        assert_eq!(wait(&mut b, v, 7), 0);
        signal_from_cpu(&mut b, fd, dev, f, v);
    }
    assert_eq!(
        e.lock().host_events(),
        0,
        "signalled async waits are dropped"
    );
    // A wait whose fence is never reached stays registered until its signal.
    assert_eq!(wait(&mut b, 1000, 7), 0);
    assert_eq!(e.lock().host_events(), 1);
    signal_from_cpu(&mut b, fd, dev, f, 1000);
    assert_eq!(e.lock().host_events(), 0);
    let evs = sink.take();
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Event::Signal(s) if s.source == "cpu_event"))
            .count(),
        201
    );
}
