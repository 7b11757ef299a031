//! Replay tests: real `/dev/kvm` (skipped with a printed reason when absent), and dxg
//! handle remapping / errors against a small fake backend.

use std::io;
use std::path::{Path, PathBuf};

use driver_core::schema::lookup_name;
use driver_core::{Backend, InProcessMemory, RealDevice, UserMemory};
use traces::{Buffer, BufferRole, FdEvent, FdOp, IoctlRecord, Record};

use crate::capture::{RecordingBackend, write_trace};
use crate::{ReplayError, ReplayOptions, Replayer, Target, TrimOptions, replay_file, trim};

fn kvm_available() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    eprintln!("skipped: /dev/kvm is not present on this machine");
    false
}

/// A kvm capture made by running the smoke VMM on the real device through the in-process
/// recorder (labelled in its header; the eBPF probe writes the same records).
fn kvm_capture() -> Vec<Record> {
    let mut rb = RecordingBackend::new(RealDevice::new());
    let out = crate::kvm_smoke::run(&mut rb, Path::new("/dev/kvm")).expect("kvm smoke VM runs");
    assert_eq!(out.rax & 0xff, 0x2b, "guest ran mov/add");
    rb.into_records()
}

fn write(records: &[Record]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t.dxtrace");
    write_trace(
        &p,
        &RecordingBackend::<RealDevice>::header("/dev/kvm", "kvm"),
        records,
    )
    .expect("write trace");
    (dir, p)
}

fn kvm_opts() -> ReplayOptions {
    ReplayOptions::new(Target::Device("/dev/kvm".into()))
}

fn call_index(records: &[Record], name: &str) -> usize {
    let code = lookup_name(name).expect("known").code;
    records
        .iter()
        .filter_map(|r| {
            if let Record::Ioctl(i) = r {
                Some(i)
            } else {
                None
            }
        })
        .position(|i| i.cmd == code)
        .expect("call present")
}

#[test]
fn kvm_capture_replays_on_real_kvm_with_zero_divergences() {
    if !kvm_available() {
        return;
    }
    let recs = kvm_capture();
    let (_d, path) = write(&recs);
    // Hold a few fds so the replay's VM and vCPU fds get other numbers than the capture's.
    let hold: Vec<std::fs::File> = (0..3)
        .map(|_| std::fs::File::open("/dev/null").expect("open"))
        .collect();
    let mut r = Replayer::new(RealDevice::new(), kvm_opts());
    let reader = traces::Reader::open(&path).expect("read");
    r.run(reader.records(), &mut |_| {}).expect("replay runs");
    let vm_rec = recs.iter().find_map(|x| match x {
        Record::Ioctl(i) if i.cmd == lookup_name("KVM_CREATE_VM").expect("known").code => {
            Some(i.ret)
        }
        _ => None,
    });
    let vcpu_rec = recs.iter().find_map(|x| match x {
        Record::Ioctl(i) if i.cmd == lookup_name("KVM_CREATE_VCPU").expect("known").code => {
            Some(i.ret)
        }
        _ => None,
    });
    let rep = r.finish();
    drop(hold);
    assert!(
        rep.divergences.is_empty(),
        "divergences: {:#?}",
        rep.divergences
    );
    assert_eq!(rep.calls, 11);
    assert!(vm_rec.is_some() && vcpu_rec.is_some());
}

#[test]
fn kvm_fds_are_remapped() {
    if !kvm_available() {
        return;
    }
    let recs = kvm_capture();
    let hold: Vec<std::fs::File> = (0..3)
        .map(|_| std::fs::File::open("/dev/null").expect("open"))
        .collect();
    let mut r = Replayer::new(RealDevice::new(), kvm_opts());
    let vcpu_at = call_index(&recs, "KVM_CREATE_VCPU");
    let mut calls = 0;
    let mut checked = false;
    for rec in &recs {
        r.step(rec).expect("step");
        if let Record::Ioctl(i) = rec {
            if calls == vcpu_at {
                let m = r.mapped_fd(i.ret).expect("vcpu fd mapped");
                assert_ne!(
                    m as i64, i.ret,
                    "fresh fd numbers differ from the capture's"
                );
                checked = true;
            }
            calls += 1;
        }
    }
    drop(hold);
    assert!(checked);
    assert!(r.finish().divergences.is_empty());
}

#[test]
fn one_altered_result_byte_is_one_decoded_divergence() {
    if !kvm_available() {
        return;
    }
    let mut recs = kvm_capture();
    let code = lookup_name("KVM_GET_REGS").expect("known").code;
    for r in recs.iter_mut() {
        if let Record::Ioctl(i) = r
            && i.cmd == code
        {
            let b = i
                .buffers
                .iter_mut()
                .find(|b| b.role == BufferRole::StructOut)
                .expect("regs out");
            b.data[0] ^= 0x01; // rax low byte: 0x2b → 0x2a
        }
    }
    let (_d, path) = write(&recs);
    let rep = replay_file(&path, RealDevice::new(), kvm_opts(), &mut |_| {}).expect("replay");
    assert_eq!(rep.divergences.len(), 1, "{:#?}", rep.divergences);
    let d = &rep.divergences[0];
    assert_eq!(d.ioctl, "KVM_GET_REGS");
    assert_eq!(d.field, "out.rax");
    assert_eq!(d.recorded, "0x2a");
    assert_eq!(d.replayed, "0x2b");
}

#[test]
fn strict_stops_at_first_divergence() {
    if !kvm_available() {
        return;
    }
    let mut recs = kvm_capture();
    for r in recs.iter_mut() {
        if let Record::Ioctl(i) = r {
            i.ret ^= 0; // keep returns; alter the API version's return instead below
            if i.cmd == lookup_name("KVM_GET_API_VERSION").expect("known").code {
                i.ret = 11;
            }
        }
    }
    let (_d, path) = write(&recs);
    let mut o = kvm_opts();
    o.strict = true;
    let rep = replay_file(&path, RealDevice::new(), o, &mut |_| {}).expect("replay");
    assert!(rep.stopped_early);
    assert_eq!(rep.divergences.len(), 1);
    assert_eq!(rep.divergences[0].field, "return");
    assert_eq!(rep.calls, 1);
}

#[test]
fn unknown_ioctl_is_refused_on_a_real_device() {
    let recs = vec![
        Record::Fd(FdEvent {
            fd: 3,
            op: FdOp::Open,
            path: "/dev/null".into(),
            ret: 3,
            ..Default::default()
        }),
        Record::Ioctl(IoctlRecord {
            id: 1,
            fd: 3,
            cmd: 0xC008_7A01,
            ..Default::default()
        }),
    ];
    let mut r = Replayer::new(
        RealDevice::new(),
        ReplayOptions::new(Target::Device("/dev/null".into())),
    );
    r.step(&recs[0]).expect("open /dev/null");
    match r.step(&recs[1]) {
        Err(ReplayError::UnknownRefused {
            call: 0,
            cmd: 0xC008_7A01,
        }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Explicitly allowed: it goes through (and /dev/null answers ENOTTY, as recorded? no: -25 vs 0).
    let mut o = ReplayOptions::new(Target::Device("/dev/null".into()));
    o.allow_unknown = true;
    let mut r = Replayer::new(RealDevice::new(), o);
    for x in &recs {
        r.step(x).expect("allowed");
    }
    let rep = r.finish();
    assert_eq!(rep.calls, 1);
    assert_eq!(
        rep.divergences.len(),
        1,
        "recorded 0, /dev/null says ENOTTY"
    );
}

#[test]
fn trim_keeps_the_lineage_and_the_trimmed_trace_replays() {
    if !kvm_available() {
        return;
    }
    let recs = kvm_capture();
    let vcpu = call_index(&recs, "KVM_CREATE_VCPU") as u64;
    let getregs = call_index(&recs, "KVM_GET_REGS") as u64;
    let vm = call_index(&recs, "KVM_CREATE_VM") as u64;
    let t = trim(&recs, getregs, TrimOptions::default()).expect("trim");
    assert_eq!(t.kept_calls, vec![vm, vcpu, getregs]);
    assert!(
        t.records
            .iter()
            .any(|r| matches!(r, Record::Fd(FdEvent { op: FdOp::Open, .. }))),
        "device open kept"
    );
    // The creation call replays identically on its lineage alone.
    let t = trim(&recs, vcpu, TrimOptions::default()).expect("trim");
    let (_d, p) = write(&t.records);
    let rep = replay_file(&p, RealDevice::new(), kvm_opts(), &mut |_| {}).expect("replay trimmed");
    assert_eq!(rep.calls, 2);
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);
    // With the setters on the lineage kept, the register read after KVM_RUN matches too.
    let t = trim(&recs, getregs, TrimOptions { with_state: true }).expect("trim");
    assert!(
        t.kept_calls
            .contains(&(call_index(&recs, "KVM_RUN") as u64))
    );
    let (_d2, p) = write(&t.records);
    let rep = replay_file(&p, RealDevice::new(), kvm_opts(), &mut |_| {}).expect("replay trimmed");
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);
}

/// A fake dxg driver that hands out handles different from the capture's: the adapter
/// is 0x40000100 and devices count up from 0x80000001; CREATEDEVICE fails unless it is
/// given the adapter it handed out.
/// GETDEVICESTATE succeeds only on a device that is created and not yet destroyed.
#[derive(Default)]
struct FakeDxg {
    devices: u32,
    live: std::collections::HashSet<u32>,
}

impl Backend for FakeDxg {
    fn open(&mut self, _p: &Path, _f: i32) -> io::Result<i32> {
        Ok(100)
    }
    unsafe fn ioctl(&mut self, _fd: i32, cmd: u32, arg: u64) -> i64 {
        let mut m = InProcessMemory;
        if cmd == lookup_name("LX_DXOPENADAPTERFROMLUID").expect("known").code {
            m.write(arg + 8, &0x4000_0100u32.to_le_bytes())
                .expect("arg");
            return 0;
        }
        if cmd == lookup_name("LX_DXCREATEDEVICE").expect("known").code {
            let a = m.read_vec(arg, 4).expect("arg");
            if a != 0x4000_0100u32.to_le_bytes() {
                return -(libc::EINVAL as i64);
            }
            self.devices += 1;
            self.live.insert(0x8000_0000u32 + self.devices);
            m.write(arg + 12, &(0x8000_0000u32 + self.devices).to_le_bytes())
                .expect("arg");
            return 0;
        }
        let device = || {
            let d = m.read_vec(arg, 4).expect("arg");
            u32::from_le_bytes(d.try_into().expect("4 bytes"))
        };
        if cmd == lookup_name("LX_DXGETDEVICESTATE").expect("known").code {
            return if self.live.contains(&device()) {
                0
            } else {
                -(libc::EINVAL as i64)
            };
        }
        if cmd == lookup_name("LX_DXCLOSEADAPTER").expect("known").code {
            self.live.clear(); // the adapter's devices go with it
            return 0;
        }
        if cmd == lookup_name("LX_DXDESTROYDEVICE").expect("known").code {
            return if self.live.remove(&device()) {
                0
            } else {
                -(libc::EINVAL as i64)
            };
        }
        -(libc::ENOTTY as i64)
    }
    fn close(&mut self, _fd: i32) -> io::Result<()> {
        Ok(())
    }
}

fn dxg_call(id: u64, name: &str, sin: Vec<u8>, sout: Vec<u8>) -> Record {
    let e = lookup_name(name).expect("known");
    Record::Ioctl(IoctlRecord {
        id,
        fd: 3,
        cmd: e.code,
        arg: 0x7000_0000 + id * 0x100,
        buffers: vec![
            Buffer {
                role: BufferRole::StructIn,
                len: sin.len() as u64,
                data: sin,
                ..Default::default()
            },
            Buffer {
                role: BufferRole::StructOut,
                len: sout.len() as u64,
                data: sout,
                ..Default::default()
            },
        ],
        ..Default::default()
    })
}

fn dxg_trace(adapter_used: u32) -> Vec<Record> {
    let mut open_out = vec![0u8; 12];
    open_out[8..12].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    let mut cd_in = vec![0u8; 64];
    cd_in[0..4].copy_from_slice(&adapter_used.to_le_bytes());
    let mut cd_out = cd_in.clone();
    cd_out[12..16].copy_from_slice(&0x8000_0001u32.to_le_bytes());
    vec![
        Record::Fd(FdEvent {
            fd: 3,
            op: FdOp::Open,
            path: "/dev/dxg".into(),
            ret: 3,
            ..Default::default()
        }),
        dxg_call(1, "LX_DXOPENADAPTERFROMLUID", vec![0; 12], open_out),
        dxg_call(2, "LX_DXCREATEDEVICE", cd_in, cd_out),
    ]
}

#[test]
fn dxg_handles_are_remapped_through_the_table() {
    let mut r = Replayer::new(FakeDxg::default(), ReplayOptions::new(Target::InProcess));
    for x in dxg_trace(0x4000_0000) {
        r.step(&x).expect("step");
    }
    assert_eq!(r.mapped_handle(0x4000_0000), Some(0x4000_0100));
    assert_eq!(r.mapped_handle(0x8000_0001), Some(0x8000_0001));
    let rep = r.finish();
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);
}

#[test]
fn destroying_a_handle_forgets_what_was_created_under_it() {
    let mut r = Replayer::new(FakeDxg::default(), ReplayOptions::new(Target::InProcess));
    let mut t = dxg_trace(0x4000_0000);
    // A second device on the same adapter, then the first one destroyed: only it goes.
    let mut cd_out = vec![0u8; 64];
    cd_out[0..4].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    let cd_in = cd_out.clone();
    cd_out[12..16].copy_from_slice(&0x8000_0002u32.to_le_bytes());
    t.push(dxg_call(3, "LX_DXCREATEDEVICE", cd_in, cd_out));
    t.push(dxg_call(
        4,
        "LX_DXDESTROYDEVICE",
        0x8000_0001u32.to_le_bytes().to_vec(),
        Vec::new(),
    ));
    for x in &t {
        r.step(x).expect("step");
    }
    assert_eq!(r.mapped_handle(0x8000_0001), None);
    assert_eq!(r.mapped_handle(0x8000_0002), Some(0x8000_0002));
    assert_eq!(r.mapped_handle(0x4000_0000), Some(0x4000_0100));
    // Closing the adapter forgets the device created under it (lineage cascade).
    r.step(&dxg_call(
        5,
        "LX_DXCLOSEADAPTER",
        0x4000_0000u32.to_le_bytes().to_vec(),
        Vec::new(),
    ))
    .expect("close adapter");
    assert_eq!(r.mapped_handle(0x4000_0000), None);
    assert_eq!(r.mapped_handle(0x8000_0002), None);
    let rep = r.finish();
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);
}

/// Many devices created and destroyed under one adapter (the children list of the
/// adapter and of the fd is compacted on the way), one recorded device handle reused
/// after its destroy: the devices still alive are exactly the mapped ones, and closing
/// the adapter forgets every one of them.
#[test]
fn lineage_survives_many_children_coming_and_going() {
    let mut r = Replayer::new(FakeDxg::default(), ReplayOptions::new(Target::InProcess));
    for x in dxg_trace(0x4000_0000) {
        r.step(&x).expect("step");
    }
    let create = |id: u64, h: u32| {
        let mut cd_out = vec![0u8; 64];
        cd_out[0..4].copy_from_slice(&0x4000_0000u32.to_le_bytes());
        let cd_in = cd_out.clone();
        cd_out[12..16].copy_from_slice(&h.to_le_bytes());
        dxg_call(id, "LX_DXCREATEDEVICE", cd_in, cd_out)
    };
    let destroy = |id: u64, h: u32| {
        dxg_call(
            id,
            "LX_DXDESTROYDEVICE",
            h.to_le_bytes().to_vec(),
            Vec::new(),
        )
    };
    let mut id = 10;
    let mut kept = vec![0x8000_0001u32];
    for i in 2..=60u32 {
        let h = 0x8000_0000 + i;
        r.step(&create(id, h)).expect("create");
        id += 1;
        if i % 10 == 0 {
            kept.push(h);
        } else {
            r.step(&destroy(id, h)).expect("destroy");
            id += 1;
        }
    }
    // Recorded handle 0x80000005 again (destroyed above): the replay gives a new one.
    r.step(&create(id, 0x8000_0005)).expect("create again");
    id += 1;
    kept.push(0x8000_0005);
    for i in 2..=60u32 {
        let h = 0x8000_0000 + i;
        assert_eq!(
            r.mapped_handle(h.into()).is_some(),
            kept.contains(&h),
            "{h:#x}"
        );
    }
    assert_eq!(r.mapped_handle(0x8000_0005), Some(0x8000_003d));
    r.step(&dxg_call(
        id,
        "LX_DXCLOSEADAPTER",
        0x4000_0000u32.to_le_bytes().to_vec(),
        Vec::new(),
    ))
    .expect("close adapter");
    for h in kept {
        assert_eq!(r.mapped_handle(h.into()), None, "{h:#x}");
    }
    let rep = r.finish();
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);
}

#[test]
fn unmapped_handle_is_an_error_naming_call_and_field() {
    let mut r = Replayer::new(FakeDxg::default(), ReplayOptions::new(Target::InProcess));
    let err = dxg_trace(0x4000_0040)
        .iter()
        .try_for_each(|x| r.step(x))
        .expect_err("adapter 0x40000040 was never created");
    match &err {
        ReplayError::UnmappedHandle {
            call: 1,
            ioctl,
            field,
            value: 0x4000_0040,
        } => {
            assert_eq!(ioctl, "LX_DXCREATEDEVICE");
            assert_eq!(field, "adapter");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("call 1 (LX_DXCREATEDEVICE): field `adapter`"),
        "{err}"
    );
}

/// Sets a record's thread and its entry / exit times.
fn timed(mut r: Record, tid: u32, enter: u64, exit: u64) -> Record {
    match &mut r {
        Record::Ioctl(io) => {
            io.tid = tid;
            io.ts_enter = enter;
            io.ts_exit = exit;
        }
        Record::Fd(ev) => {
            ev.tid = tid;
            ev.ts = enter;
        }
        _ => {}
    }
    r
}

fn device_call(id: u64, name: &str, size: usize, device: u32) -> Record {
    let mut v = vec![0u8; size];
    v[0..4].copy_from_slice(&device.to_le_bytes());
    dxg_call(id, name, v.clone(), v)
}

/// Two threads, in the order the probe writes them (by exit): thread A opens the adapter
/// and creates device D, thread B enters GETDEVICESTATE(D) at t=50 and stays in the
/// driver until t=200, while thread A destroys D at t=60..70. Issued in file order (or
/// one thread after the other), the destroy comes first and B's call finds no device.
fn two_thread_trace() -> Vec<Record> {
    let mut t = dxg_trace(0x4000_0000);
    t[0] = timed(t[0].clone(), 1, 5, 5);
    t[1] = timed(t[1].clone(), 1, 10, 20);
    t[2] = timed(t[2].clone(), 1, 30, 40);
    t.push(timed(
        device_call(3, "LX_DXDESTROYDEVICE", 4, 0x8000_0001),
        1,
        60,
        70,
    ));
    t.push(timed(
        device_call(4, "LX_DXGETDEVICESTATE", 56, 0x8000_0001),
        2,
        50,
        200,
    ));
    t
}

#[test]
fn threads_are_interleaved_by_recorded_entry_time_not_file_order() {
    let recs = two_thread_trace();
    assert_eq!(crate::replay_order(&recs), vec![0, 1, 2, 4, 3]);

    // Streaming (what `dxtrace replay` does).
    let mut r = Replayer::new(FakeDxg::default(), ReplayOptions::new(Target::InProcess));
    r.run(recs.iter().cloned().map(Ok), &mut |_| {})
        .expect("B's call runs while the device is alive");
    let rep = r.finish();
    assert_eq!(rep.calls, 4);
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);

    // Compiled ahead.
    let plan = crate::ReplayPlan::new(&recs);
    let mut r = Replayer::new(FakeDxg::default(), ReplayOptions::new(Target::InProcess));
    r.run_plan(&plan, &mut |_| {}).expect("replay");
    let rep = r.finish();
    assert_eq!(rep.calls, 4);
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);

    // Call indices stay those of the file: B's call is call 3 even though it runs third.
    let mut recs = recs;
    if let Record::Ioctl(io) = &mut recs[4] {
        io.ret = 1; // recorded STATUS_WAIT_1: replay returns 0
    }
    let mut r = Replayer::new(FakeDxg::default(), ReplayOptions::new(Target::InProcess));
    r.run(recs.iter().cloned().map(Ok), &mut |_| {})
        .expect("replay");
    let rep = r.finish();
    assert_eq!(rep.divergences.len(), 1, "{:#?}", rep.divergences);
    assert_eq!(rep.divergences[0].call, 3);
    assert_eq!(rep.divergences[0].ioctl, "LX_DXGETDEVICESTATE");
}

#[test]
fn file_order_replay_of_the_two_thread_trace_fails() {
    // The regression the ordering fixes: stepping records one by one in file order
    // destroys the device before thread B's call uses it.
    let mut r = Replayer::new(FakeDxg::default(), ReplayOptions::new(Target::InProcess));
    let err = two_thread_trace()
        .iter()
        .try_for_each(|x| r.step(x))
        .expect_err("device destroyed first");
    assert!(
        matches!(&err, ReplayError::UnmappedHandle { call: 3, .. }),
        "{err}"
    );
}

/// OPENADAPTER at t=1 ms, CREATEDEVICE entered 300 ms later.
fn gap_trace() -> Vec<Record> {
    let ms = 1_000_000;
    let mut t = dxg_trace(0x4000_0000);
    t[0] = timed(t[0].clone(), 1, ms, ms);
    t[1] = timed(t[1].clone(), 1, ms, 2 * ms);
    t[2] = timed(t[2].clone(), 1, 301 * ms, 302 * ms);
    t
}

#[test]
fn pace_original_keeps_the_recorded_gap() {
    let opts = ReplayOptions {
        pace: crate::Pace::Original,
        ..ReplayOptions::new(Target::InProcess)
    };
    let mut r = Replayer::new(FakeDxg::default(), opts);
    let t = std::time::Instant::now();
    r.run(gap_trace().into_iter().map(Ok), &mut |_| {})
        .expect("replay");
    let took = t.elapsed();
    let rep = r.finish();
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);
    // Lower bound only: the 300 ms gap was kept.
    assert!(
        took >= std::time::Duration::from_millis(300),
        "took {took:?}"
    );
    assert!(rep.pace_waits >= 1);
    let json = serde_json::to_value(&rep).expect("json");
    assert_eq!(json["pace"], "original");
    assert!(json["pace_lag_ns"].is_array(), "{json}");
}

#[test]
fn pace_fast_does_not_wait() {
    let mut r = Replayer::new(FakeDxg::default(), ReplayOptions::new(Target::InProcess));
    r.run(gap_trace().into_iter().map(Ok), &mut |_| {})
        .expect("replay");
    let rep = r.finish();
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);
    assert_eq!(rep.pace_waits, 0, "fast never holds a call back");
    assert_eq!(rep.pace_lag_ns, None);
    let json = serde_json::to_value(&rep).expect("json");
    assert_eq!(json["pace"], "fast");
}

#[test]
fn divergences_past_the_cap_are_counted_not_kept() {
    let mut recs = dxg_trace(0x4000_0000);
    // 50 state queries on a device that does not exist (0 is not remapped): recorded as
    // successes, each fails on replay.
    for i in 0..50 {
        recs.push(device_call(10 + i, "LX_DXGETDEVICESTATE", 56, 0));
    }
    let opts = ReplayOptions {
        max_divergences: 10,
        ..ReplayOptions::new(Target::InProcess)
    };
    let mut r = Replayer::new(FakeDxg::default(), opts);
    r.run(recs.into_iter().map(Ok), &mut |_| {})
        .expect("replay");
    let rep = r.finish();
    assert_eq!(rep.divergences.len(), 10);
    assert_eq!(rep.divergences_total, 50);
    assert_eq!(rep.divergences_dropped(), 40);
    assert!(rep.diverged());
    assert_eq!(rep.divergences[0].call, 2, "the first ones are kept");
    let json = serde_json::to_value(&rep).expect("json");
    assert_eq!(json["divergences_total"], 50);
}

/// Logs the `arg` of every ioctl (plain-value calls of an unknown request code).
#[derive(Default)]
struct ArgLog {
    args: Vec<u64>,
}

impl Backend for ArgLog {
    fn open(&mut self, _p: &Path, _f: i32) -> io::Result<i32> {
        Ok(7)
    }
    unsafe fn ioctl(&mut self, _fd: i32, _cmd: u32, arg: u64) -> i64 {
        self.args.push(arg);
        0
    }
    fn close(&mut self, _fd: i32) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn streaming_issues_records_in_replay_order() {
    // Mostly ascending entry times with ties, records without a timestamp, and records
    // that entered long before the ones around them: the reordering window's in-order
    // queue and its heap both serve, and the issue order must be `replay_order`'s.
    let cmd = 0xc008_7a99; // _IOWR('z', 0x99, 8): in no table
    assert!(driver_core::schema::lookup_code(cmd).is_none());
    let mut recs = vec![timed(
        Record::Fd(FdEvent {
            fd: 3,
            op: FdOp::Open,
            path: "/dev/null".into(),
            ret: 3,
            ..FdEvent::default()
        }),
        1,
        1,
        1,
    )];
    let mut x = 12345u64;
    for i in 0..3000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = x >> 33;
        let enter = match r % 10 {
            0 => 0,                                // no timestamp: stays where the file has it
            1 => (i * 10).saturating_sub(r % 500), // entered earlier than its neighbours
            2 => (i * 10) / 20 * 20,               // a tie with a neighbour
            _ => i * 10 + 5,
        };
        let io = IoctlRecord {
            id: i,
            fd: 3,
            cmd,
            arg: i,
            ts_enter: enter,
            ts_exit: i * 10 + 9,
            ..IoctlRecord::default()
        };
        recs.push(Record::Ioctl(io));
    }
    let expected: Vec<u64> = crate::replay_order(&recs)
        .into_iter()
        .filter_map(|i| match &recs[i] {
            Record::Ioctl(io) => Some(io.arg),
            _ => None,
        })
        .collect();
    let mut r = Replayer::new(ArgLog::default(), ReplayOptions::new(Target::InProcess));
    r.run(recs.iter().map(Ok), &mut |_| {}).expect("replay");
    assert_eq!(r.backend_mut().args, expected);
    let rep = r.finish();
    assert_eq!(rep.calls, 3000);
    assert!(rep.divergences.is_empty(), "{:?}", rep.divergences.first());
}

/// The dxg frame-loop workload recorded `n` times on the in-process emulator.
fn frame_loop_records(n: usize) -> Vec<Record> {
    let mut rb = RecordingBackend::new(emulator_backend());
    for _ in 0..n {
        driver_core::workload::run("frame-loop", &mut rb, Path::new("/dev/dxg"), None)
            .expect("frame-loop runs on the emulator");
    }
    rb.into_records()
}

fn emulator_backend() -> driver_core::emulator::EmulatorBackend {
    use driver_core::emulator::{Emulator, EmulatorBackend, EmulatorConfig, NullSink};
    let cfg = EmulatorConfig {
        deterministic: true,
        ..EmulatorConfig::default()
    };
    EmulatorBackend::new(Emulator::new(cfg, Box::new(NullSink)))
}

/// `replayed_ioctl_ns` (the time inside the backend, summed in TSC ticks where the
/// kernel uses the TSC and converted at `finish`) is filled in and lies within the
/// replay's wall time: it fails if `finish` leaves it out or the conversion is off.
#[test]
fn time_inside_the_backend_is_reported_within_the_replay_time() {
    let records = frame_loop_records(3);
    let mut r = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
    r.run(records.iter().map(Ok), &mut |_| {}).expect("replay");
    let rep = r.finish();
    assert!(rep.divergences.is_empty(), "{:?}", rep.divergences.first());
    assert!(rep.calls > 100);
    assert!(
        rep.replayed_ioctl_ns > 0,
        "no time inside the backend reported"
    );
    assert!(
        rep.replayed_ioctl_ns <= rep.elapsed.as_nanos() as u64,
        "{} ns inside the backend, {:?} in all",
        rep.replayed_ioctl_ns,
        rep.elapsed
    );
}

fn sample_records() -> Vec<(String, Vec<Record>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces/samples");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("samples dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "dxtrace") {
            let r = traces::Reader::open(&p).expect("sample opens");
            let recs: Vec<Record> = r.records().collect::<Result<_, _>>().expect("decodes");
            out.push((p.display().to_string(), recs));
        }
    }
    assert!(out.len() >= 5, "samples found in {}", dir.display());
    out
}

#[test]
fn shared_shapes_build_the_same_call_plans_as_fresh_compiles() {
    // Every call of the samples and of a repeated workload, compiled through the shape
    // cache (shapes shared between calls of the same shape) and afresh from the call
    // alone: the plans must be identical, field for field.
    let mut sets = sample_records();
    sets.push(("frame-loop x3".into(), frame_loop_records(3)));
    let mut kvm = RecordingBackend::new(RealDevice::new());
    if kvm_available() && crate::kvm_smoke::run(&mut kvm, Path::new("/dev/kvm")).is_ok() {
        sets.push(("kvm-smoke".into(), kvm.into_records()));
    }
    let mut hits = 0;
    for (name, recs) in &sets {
        let mut cached = crate::plan::PlanCache::default();
        let mut fresh = crate::plan::PlanCache::default();
        // The cached side also binds into the previous call's vectors, as streaming does.
        let mut spare = crate::call::Spare::default();
        for (i, r) in recs.iter().enumerate() {
            let Record::Ioctl(io) = r else { continue };
            let Some(e) = driver_core::schema::lookup_code(io.cmd) else {
                continue;
            };
            let a = crate::call::compile_with(e, io, &mut cached, &mut spare);
            let b = crate::call::compile_fresh(e, io, &mut fresh);
            assert_eq!(
                format!("{a:?}"),
                format!("{b:?}"),
                "{name}: record {i} ({})",
                e.name
            );
            spare.recycle(a);
        }
        hits += cached.shapes.hits;
        assert!(cached.shapes.misses > 0, "{name}");
    }
    assert!(hits > 100, "shapes were reused ({hits} hits)");
}

/// Variants of a recorded call that differ from it in its shape key: a pointer buffer
/// dropped, a pointer field nulled, a buffer given another buffer's path (its own path
/// then found by address), the input struct cut short, more buffers than the key's
/// path-id lookup takes.
fn shape_variants(e: &driver_core::schema::IoctlDesc, io: &IoctlRecord) -> Vec<IoctlRecord> {
    let mut out = Vec::new();
    let ptr_bufs: Vec<usize> = (0..io.buffers.len())
        .filter(|&i| matches!(io.buffers[i].role, BufferRole::PtrIn | BufferRole::PtrOut))
        .collect();
    for &i in &ptr_bufs {
        let mut v = io.clone();
        v.buffers.remove(i);
        out.push(v);
        for &j in &ptr_bufs {
            if io.buffers[j].path != io.buffers[i].path {
                let mut v = io.clone();
                v.buffers[j].path = io.buffers[i].path.clone();
                out.push(v);
            }
        }
    }
    let sin = io
        .buffers
        .iter()
        .position(|b| b.role == BufferRole::StructIn && b.path.is_empty());
    if let Some(si) = sin {
        for p in e.pointers {
            if let driver_core::schema::PtrAddr::Field { offset } = p.addr {
                let o = offset as usize;
                let mut v = io.clone();
                if let Some(f) = v.buffers[si].data.get_mut(o..o + 8)
                    && f.iter().any(|b| *b != 0)
                {
                    f.fill(0);
                    out.push(v);
                }
            }
        }
        if io.buffers[si].data.len() >= 4 {
            let mut v = io.clone();
            let n = v.buffers[si].data.len() - 4;
            v.buffers[si].data.truncate(n);
            out.push(v);
        }
    }
    if let Some(so) = io.buffers.iter().find(|b| b.role == BufferRole::StructOut) {
        let mut v = io.clone();
        for _ in 0..17 {
            v.buffers.push(so.clone());
        }
        out.push(v);
    }
    out
}

#[test]
fn calls_of_one_request_with_alternating_shapes_get_their_own_shapes() {
    // The shape cache remembers the last shape of each request and checks it first:
    // calls of one request alternating between shapes (each recorded call of the
    // samples and a workload, then variants of it whose shape keys differ, back and
    // forth) must each compile as they do afresh.
    let mut sets = sample_records();
    sets.push(("frame-loop x2".into(), frame_loop_records(2)));
    let mut variants = 0;
    for (name, recs) in &sets {
        let mut cached = crate::plan::PlanCache::default();
        let mut fresh = crate::plan::PlanCache::default();
        let mut spare = crate::call::Spare::default();
        let mut per_cmd = std::collections::HashMap::new();
        for (i, r) in recs.iter().enumerate() {
            let Record::Ioctl(io) = r else { continue };
            let Some(e) = driver_core::schema::lookup_code(io.cmd) else {
                continue;
            };
            // The first two calls of each request (the rest add time, not cases).
            let seen = per_cmd.entry(io.cmd).or_insert(0);
            *seen += 1;
            if *seen > 2 {
                continue;
            }
            let vs = shape_variants(e, io);
            variants += vs.len();
            let mut order = vec![io];
            for v in &vs {
                order.extend([v, io, v, v, io]);
            }
            order.extend(vs.iter());
            order.extend(vs.iter().rev());
            for (k, c) in order.into_iter().enumerate() {
                // The key's lookup of buffers by path id finds what string compares do.
                let [fast, slow] = crate::call::shape_keys(e, c);
                assert_eq!(fast, slow, "{name}: record {i} ({}), compile {k}", e.name);
                let a = crate::call::compile_with(e, c, &mut cached, &mut spare);
                let b = crate::call::compile_fresh(e, c, &mut fresh);
                assert_eq!(
                    format!("{a:?}"),
                    format!("{b:?}"),
                    "{name}: record {i} ({}), compile {k}",
                    e.name
                );
                spare.recycle(a);
            }
        }
    }
    assert!(variants > 100, "{variants} variants");
}

#[test]
fn one_altered_byte_in_a_reused_shape_reports_exactly_one_divergence() {
    let mut recs = frame_loop_records(4);
    // The last successful call whose recorded out struct has a plain field: by then its
    // shape has been seen three times, so it is compiled from the cache.
    let (pos, field) = recs
        .iter()
        .enumerate()
        .rev()
        .find_map(|(pos, r)| {
            let Record::Ioctl(io) = r else { return None };
            let e = driver_core::schema::lookup_code(io.cmd)?;
            if io.ret != 0 {
                return None;
            }
            let out = io.buffer(BufferRole::StructOut, "")?;
            let sp = crate::plan::struct_plan(e);
            let l = sp.leaves.iter().find(|l| {
                l.class == crate::plan::Class::Plain && l.off + l.size <= out.data.len()
            })?;
            Some((pos, (l.off, l.path.clone(), e.name)))
        })
        .expect("a call with a plain out field");
    let call = recs[..pos]
        .iter()
        .filter(|r| matches!(r, Record::Ioctl(_)))
        .count() as u64;
    if let Record::Ioctl(io) = &mut recs[pos] {
        let b = io
            .buffers
            .iter_mut()
            .find(|b| b.role == BufferRole::StructOut && b.path.is_empty())
            .expect("out struct");
        b.data[field.0] ^= 0x01;
    }
    let check = |rep: crate::Report| {
        assert_eq!(rep.divergences.len(), 1, "{:#?}", rep.divergences);
        let d = &rep.divergences[0];
        assert_eq!(d.call, call);
        assert_eq!(d.ioctl, field.2);
        assert_eq!(d.field, format!("out.{}", field.1));
    };
    // Streaming (shapes cached as the calls come) and compiled ahead.
    let mut r = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
    r.run(recs.iter().map(Ok), &mut |_| {}).expect("replay");
    check(r.finish());
    let plan = crate::ReplayPlan::new(&recs);
    let mut r = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
    r.run_plan(&plan, &mut |_| {}).expect("replay");
    check(r.finish());
}

#[test]
fn calls_on_a_dup_of_a_device_fd_replay_after_the_original_is_closed() {
    // The probe announces a copy (dup, dup2, dup3, F_DUPFD) as a derived fd named
    // `dup:OLD`. Here the workload's device fd is copied right after its open and the
    // original closed at once; every later call and the final close use the copy.
    let recs = frame_loop_records(1);
    let open = recs
        .iter()
        .position(|r| matches!(r, Record::Fd(f) if f.op == FdOp::Open))
        .expect("an open");
    let Record::Fd(o) = &recs[open] else {
        unreachable!()
    };
    let (orig, copy) = (o.fd, o.fd + 100);
    let ev = |fd: i32, op: FdOp, path: &str| {
        Record::Fd(FdEvent {
            fd,
            op,
            path: path.into(),
            ts: o.ts,
            pid: o.pid,
            tid: o.tid,
            ret: fd as i64,
            ..FdEvent::default()
        })
    };
    let mut dup = recs[..=open].to_vec();
    dup.push(ev(copy, FdOp::Derived, &format!("dup:{orig}")));
    dup.push(ev(orig, FdOp::Close, ""));
    let mut moved = 0;
    for r in &recs[open + 1..] {
        let mut r = r.clone();
        match &mut r {
            Record::Ioctl(io) if io.fd == orig => {
                io.fd = copy;
                moved += 1;
            }
            Record::Fd(f) if f.fd == orig => f.fd = copy,
            _ => {}
        }
        dup.push(r);
    }
    assert!(moved > 40, "{moved} calls moved to the copy");
    let mut r = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
    r.run(dup.iter().map(Ok), &mut |_| {})
        .expect("calls on the copy find their fd");
    let rep = r.finish();
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences.first());
    let calls = dup.iter().filter(|r| matches!(r, Record::Ioctl(_))).count();
    assert_eq!(rep.calls as usize, calls);

    // A copy of an fd that is not mapped (the original was never opened in the trace)
    // gives nothing to map: calls on it are an error naming the fd.
    let mut orphan = dup.clone();
    orphan.remove(open);
    let mut r = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
    let err = r
        .run(orphan.iter().map(Ok), &mut |_| {})
        .expect_err("the copy's original was never opened");
    assert!(matches!(err, ReplayError::UnmappedFd { .. }), "{err}");
}

#[test]
fn read_ahead_replays_a_file_exactly_as_the_plain_reader() {
    // A trace with a divergence every 50 calls (an altered return value), replayed from
    // its file with the records decoded on a second thread (`run_reader`, what
    // `replay_file` and `dxtrace replay` use) and straight from `reader.records()`.
    let mut recs = frame_loop_records(30);
    let state = lookup_name("LX_DXGETDEVICESTATE").expect("known").code;
    let (mut n, mut altered, mut first) = (0, 0, None);
    for r in &mut recs {
        if let Record::Ioctl(io) = r {
            n += 1;
            if io.cmd == state && n % 3 == 0 {
                io.ret = -(libc::ENOSPC as i64);
                altered += 1;
                first.get_or_insert(n);
            }
        }
    }
    assert!(altered > 10);
    let (_dir, p) = trace_file(&recs);
    let reader = traces::Reader::open(&p).expect("open");
    let (a, b) = file_and_plain_reports(&reader);
    assert_eq!(a.calls, n);
    assert_eq!(a.calls, b.calls);
    assert_eq!(a.divergences_total, altered);
    assert_eq!(a.divergences, b.divergences);
    // Strict: the replay stops at the first divergence and the decoding thread ends.
    let opts = ReplayOptions {
        strict: true,
        ..ReplayOptions::new(Target::InProcess)
    };
    let mut s = Replayer::new(emulator_backend(), opts);
    crate::run_reader(&mut s, &reader, &mut |_| {}).expect("replay");
    let s = s.finish();
    assert!(s.stopped_early);
    assert_eq!(Some(s.calls), first);
}

/// The position of the last SUBMITCOMMAND of `recs` and its call index.
fn last_submit(recs: &[Record]) -> (usize, u64) {
    let pos = recs
        .iter()
        .rposition(|r| matches!(r, Record::Ioctl(io) if driver_core::schema::lookup_code(io.cmd).is_some_and(|e| e.name == "LX_DXSUBMITCOMMAND")))
        .expect("a submit");
    let call = recs[..pos]
        .iter()
        .filter(|r| matches!(r, Record::Ioctl(_)))
        .count() as u64;
    (pos, call)
}

/// Sets the `u32` at `off` of the recorded struct `role` of record `pos`.
fn set_struct_u32(recs: &mut [Record], pos: usize, role: BufferRole, off: usize, v: u32) {
    let Record::Ioctl(io) = &mut recs[pos] else {
        panic!("not an ioctl")
    };
    let b = io
        .buffers
        .iter_mut()
        .find(|b| b.role == role && b.path.is_empty())
        .expect("struct buffer");
    b.data[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn a_set_slot_after_empty_handle_slots_is_still_compared() {
    // SUBMITCOMMAND's 64 broadcast_context slots: slot 0 is the context, the rest 0.
    // The comparison skips empty slots a word at a time; a recorded out value in slot 5
    // that the replay does not produce must still be the one divergence.
    let mut recs = frame_loop_records(3);
    let (pos, call) = last_submit(&recs);
    let e = driver_core::schema::lookup_name("LX_DXSUBMITCOMMAND").expect("in table");
    let sp = crate::plan::struct_plan(e);
    let slot0 = sp
        .leaves
        .iter()
        .find(|l| l.path == "broadcast_context[0]")
        .expect("slot 0")
        .off;
    set_struct_u32(
        &mut recs,
        pos,
        BufferRole::StructOut,
        slot0 + 5 * 4,
        0x4000_1234,
    );
    for plan in [false, true] {
        let mut r = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
        if plan {
            r.run_plan(&crate::ReplayPlan::new(&recs), &mut |_| {})
                .expect("replay");
        } else {
            r.run(recs.iter().map(Ok), &mut |_| {}).expect("replay");
        }
        let rep = r.finish();
        assert_eq!(rep.divergences.len(), 1, "{:#?}", rep.divergences);
        assert_eq!(rep.divergences[0].call, call);
        assert_eq!(rep.divergences[0].field, "out.broadcast_context[5]");
    }
}

#[test]
fn a_set_input_slot_after_empty_handle_slots_is_still_remapped() {
    // The input side: binding a call skips runs of empty handle slots; an unknown handle
    // in slot 3 of a successful call must still be found (and refused, unmapped).
    let mut recs = frame_loop_records(2);
    let (pos, call) = last_submit(&recs);
    let e = driver_core::schema::lookup_name("LX_DXSUBMITCOMMAND").expect("in table");
    let off = crate::plan::struct_plan(e)
        .leaves
        .iter()
        .find(|l| l.path == "broadcast_context[3]")
        .expect("slot 3")
        .off;
    set_struct_u32(&mut recs, pos, BufferRole::StructIn, off, 0x4000_7777);
    for plan in [false, true] {
        let mut r = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
        let err = if plan {
            r.run_plan(&crate::ReplayPlan::new(&recs), &mut |_| {})
        } else {
            r.run(recs.iter().map(Ok), &mut |_| {})
        }
        .expect_err("slot 3 holds a handle the trace never created");
        match &err {
            ReplayError::UnmappedHandle {
                call: c,
                field,
                value: 0x4000_7777,
                ..
            } => {
                assert_eq!(*c, call);
                assert_eq!(field, "broadcast_context[3]");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The emulator backend, counting the fds the replay holds open.
struct CountingFds {
    inner: driver_core::emulator::EmulatorBackend,
    open: std::rc::Rc<std::cell::RefCell<std::collections::BTreeSet<i32>>>,
}

impl Backend for CountingFds {
    fn open(&mut self, p: &Path, f: i32) -> io::Result<i32> {
        let fd = self.inner.open(p, f)?;
        self.open.borrow_mut().insert(fd);
        Ok(fd)
    }
    unsafe fn ioctl(&mut self, fd: i32, cmd: u32, arg: u64) -> i64 {
        // SAFETY: forwarded as received.
        unsafe { self.inner.ioctl(fd, cmd, arg) }
    }
    unsafe fn ioctl_live(&mut self, fd: i32, cmd: u32, arg: u64, live: &[(u64, usize)]) -> i64 {
        // SAFETY: forwarded as received.
        unsafe { self.inner.ioctl_live(fd, cmd, arg, live) }
    }
    fn pid(&self) -> u32 {
        self.inner.pid()
    }
    fn close(&mut self, fd: i32) -> io::Result<()> {
        assert!(self.open.borrow_mut().remove(&fd), "fd {fd} closed twice");
        self.inner.close(fd)
    }
}

#[test]
fn a_reused_fd_number_without_a_recorded_close_closes_the_old_replay_fd() {
    // The workload's session twice on the same recorded fd number, the first close missed
    // by the capture: the second open drops the first mapping, and the replay fd behind
    // it must be closed then (before: it stayed open, unreachable, until the process
    // ended), so the emulator tears the first session down.
    let recs = frame_loop_records(1);
    let close = recs
        .iter()
        .rposition(|r| matches!(r, Record::Fd(f) if f.op == FdOp::Close))
        .expect("a close");
    let mut twice: Vec<Record> = recs[..close].to_vec();
    twice.extend(recs.iter().cloned());
    let open = std::rc::Rc::new(std::cell::RefCell::new(std::collections::BTreeSet::new()));
    let b = CountingFds {
        inner: emulator_backend(),
        open: open.clone(),
    };
    let mut r = Replayer::new(b, ReplayOptions::new(Target::InProcess));
    let mut most = 0;
    for rec in &twice {
        r.step(rec).expect("replays");
        most = most.max(open.borrow().len());
    }
    assert_eq!(
        most, 1,
        "the first session's fd is closed when its number is reused"
    );
    assert!(
        open.borrow().is_empty(),
        "the recorded close closed the second"
    );
    let rep = r.finish();
    assert_eq!(
        rep.calls as usize,
        twice
            .iter()
            .filter(|r| matches!(r, Record::Ioctl(_)))
            .count()
    );
}

/// [`FakeDxg`] plus LX_DXSHAREOBJECTS, which returns fd 200 for the shared object, and
/// the fds the replay holds open.
#[derive(Default)]
struct FakeShare {
    dxg: FakeDxg,
    open: std::collections::BTreeSet<i32>,
}

impl Backend for FakeShare {
    fn open(&mut self, p: &Path, f: i32) -> io::Result<i32> {
        let fd = self.dxg.open(p, f)?;
        self.open.insert(fd);
        Ok(fd)
    }
    unsafe fn ioctl(&mut self, fd: i32, cmd: u32, arg: u64) -> i64 {
        if cmd == lookup_name("LX_DXSHAREOBJECTS").expect("known").code {
            let mut m = InProcessMemory;
            let p = m.read_vec(arg + 8, 8).expect("arg");
            let objs = u64::from_le_bytes(p.try_into().expect("8 bytes"));
            let h = m.read_vec(objs, 4).expect("objects");
            if h != 0x8000_0001u32.to_le_bytes() {
                return -(libc::EINVAL as i64);
            }
            m.write(arg + 32, &200u64.to_le_bytes()).expect("arg");
            self.open.insert(200);
            return 0;
        }
        // SAFETY: forwarded as received.
        unsafe { self.dxg.ioctl(fd, cmd, arg) }
    }
    fn close(&mut self, fd: i32) -> io::Result<()> {
        assert!(
            self.open.remove(&fd),
            "fd {fd} closed twice or never opened"
        );
        Ok(())
    }
}

#[test]
fn an_fd_dropped_with_its_destroyed_parent_is_closed() {
    // SHAREOBJECTS on the device makes recorded fd 7 (replay fd 200), a child of the
    // device handle in the lineage. Destroying the device drops fd 7's mapping with it
    // (cascade); the replay fd behind it must be closed then, not left open unreachable.
    let mut t = dxg_trace(0x4000_0000);
    let objs = 0x7100_0000u64;
    let mut sin = vec![0u8; 40];
    sin[0..4].copy_from_slice(&1u32.to_le_bytes());
    sin[8..16].copy_from_slice(&objs.to_le_bytes());
    let mut sout = sin.clone();
    sout[32..40].copy_from_slice(&7u64.to_le_bytes());
    let Record::Ioctl(mut share) = dxg_call(3, "LX_DXSHAREOBJECTS", sin, sout) else {
        unreachable!()
    };
    share.buffers.insert(
        1,
        Buffer {
            addr: objs,
            role: BufferRole::PtrIn,
            path: "objects".into(),
            len: 4,
            data: 0x8000_0001u32.to_le_bytes().to_vec(),
            ..Default::default()
        },
    );
    t.push(Record::Ioctl(share));
    let mut r = Replayer::new(FakeShare::default(), ReplayOptions::new(Target::InProcess));
    for x in &t {
        r.step(x).expect("step");
    }
    assert_eq!(r.mapped_fd(7), Some(200));
    assert!(r.backend_mut().open.contains(&200));
    r.step(&dxg_call(
        4,
        "LX_DXDESTROYDEVICE",
        0x8000_0001u32.to_le_bytes().to_vec(),
        Vec::new(),
    ))
    .expect("destroy device");
    assert_eq!(r.mapped_fd(7), None, "the shared fd went with its device");
    assert!(
        !r.backend_mut().open.contains(&200),
        "its replay fd is closed with the mapping"
    );
    let rep = r.finish();
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);
}

/// Calls of `plan` whose out struct takes the fast whole-struct comparison.
fn fast_calls(plan: &crate::ReplayPlan<'_>) -> u64 {
    plan.fast_out_calls()
}

#[test]
fn every_fast_struct_comparison_of_a_clean_replay_matches() {
    // In a replay without divergences, every call whose out struct qualifies for the
    // fast comparison (expected image + one memcmp) must be settled by it: a fast path
    // that mishandled masked bytes (pointers the replay patched), empty handle slots or
    // remapped handles would fall back to the field walk and this count would drop.
    // The replaying emulator has run the workload once before, so it hands out other
    // handle values than the capture saw: the expected image must hold mapped values.
    let recs = frame_loop_records(3);
    let plan = crate::ReplayPlan::new(&recs);
    let want = fast_calls(&plan);
    assert!(want > 20, "{want} calls take the fast comparison");
    let used = || {
        let mut b = emulator_backend();
        let (calls, _) =
            driver_core::workload::run("frame-loop", &mut b, Path::new("/dev/dxg"), None)
                .expect("frame-loop runs");
        assert!(!calls.is_empty());
        b
    };
    for plan_mode in [true, false] {
        let mut r = Replayer::new(used(), ReplayOptions::new(Target::InProcess));
        let mut remapped = 0;
        for rec in &recs {
            if plan_mode {
                break;
            }
            r.step(rec).expect("replay");
            if let Record::Ioctl(io) = rec
                && let Some(out) = io.buffer(BufferRole::StructOut, "")
                && out.data.len() >= 8
            {
                let h = u32::from_le_bytes(out.data[..4].try_into().expect("4 bytes")) as u64;
                remapped += r.mapped_handle(h).is_some_and(|m| m != h) as u32;
            }
        }
        if plan_mode {
            r.run_plan(&plan, &mut |_| {}).expect("replay");
        } else {
            assert!(
                remapped > 0,
                "the replay's handles differ from the capture's"
            );
        }
        assert_eq!(r.fast_matches, want);
        let rep = r.finish();
        assert!(rep.divergences.is_empty(), "{:?}", rep.divergences.first());
    }
}

#[test]
fn one_altered_byte_is_found_through_the_fast_struct_comparison() {
    // SUBMITCOMMAND's out struct takes the fast comparison. One byte changed in a plain
    // field, in a set handle slot (the context, remapped) or in an empty handle slot
    // must each be the one divergence, named by its field, in both replay modes: a fast
    // path that accepted the struct without checking it would report none.
    let e = driver_core::schema::lookup_name("LX_DXSUBMITCOMMAND").expect("in table");
    let sp = crate::plan::struct_plan(e);
    assert!(sp.fast);
    let plain = sp
        .leaves
        .iter()
        .find(|l| l.class == crate::plan::Class::Plain && l.size == 8)
        .expect("a plain u64 field");
    let at = |path: &str| {
        sp.leaves
            .iter()
            .find(|l| l.path == path)
            .unwrap_or_else(|| panic!("{path}"))
            .off
    };
    let cases = [
        (plain.off, format!("out.{}", plain.path)),
        (
            at("broadcast_context[0]"),
            "out.broadcast_context[0]".into(),
        ),
        (
            at("broadcast_context[9]"),
            "out.broadcast_context[9]".into(),
        ),
    ];
    for (off, field) in cases {
        let mut recs = frame_loop_records(3);
        let (pos, call) = last_submit(&recs);
        let Record::Ioctl(io) = &mut recs[pos] else {
            unreachable!()
        };
        let b = io
            .buffers
            .iter_mut()
            .find(|b| b.role == BufferRole::StructOut && b.path.is_empty())
            .expect("out struct");
        b.data[off] ^= 0x10;
        for plan in [false, true] {
            let mut r = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
            if plan {
                r.run_plan(&crate::ReplayPlan::new(&recs), &mut |_| {})
                    .expect("replay");
            } else {
                r.run(recs.iter().map(Ok), &mut |_| {}).expect("replay");
            }
            assert!(r.fast_matches > 0);
            let rep = r.finish();
            assert_eq!(rep.divergences.len(), 1, "{field}: {:#?}", rep.divergences);
            assert_eq!(rep.divergences[0].call, call);
            assert_eq!(rep.divergences[0].ioctl, "LX_DXSUBMITCOMMAND");
            assert_eq!(rep.divergences[0].field, field);
        }
    }
}

/// What a replay of `recs` ends with: its outcome, its report (less the timings), and
/// what every handle value found in a recorded struct maps to.
fn replay_outcome(recs: &[Record], plan: bool, walk_only: bool) -> (String, u64) {
    let mut r = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
    r.walk_only = walk_only;
    let res = if plan {
        r.run_plan(&crate::ReplayPlan::new(recs), &mut |_| {})
    } else {
        r.run(recs.iter().map(Ok), &mut |_| {})
    };
    let mut out = format!("{res:?}\n");
    for rec in recs {
        let Record::Ioctl(io) = rec else { continue };
        for b in &io.buffers {
            for w in b.data.chunks_exact(4) {
                let v = u32::from_le_bytes(w.try_into().expect("4 bytes")) as u64;
                if v != 0 {
                    out += &format!("{v:#x}->{:?} ", r.mapped_handle(v));
                }
            }
        }
    }
    let fast = r.fast_creates;
    let rep = r.finish();
    out += &format!(
        "\n{:?}\n{:?}\n{} {} {} {}",
        rep.divergences,
        rep.notes,
        rep.calls,
        rep.compared,
        rep.divergences_total,
        rep.stopped_early
    );
    (out, fast)
}

#[test]
fn created_handles_map_the_same_through_the_fast_comparison_as_through_the_walk() {
    // Out structs with created handles (CREATEDEVICE, CREATEPAGINGQUEUE, …) take the
    // fast comparison, their created handles mapped apart (`fast_creates`) when the
    // field walk would map them with no other effect. Each created handle of the first
    // frame loop's creations, recorded as 0, as a live handle the call also uses, as a
    // fresh value, or as the value of the struct's other created handle: the replay
    // must end the same (result, divergences, notes, every mapping) whether the out
    // structs are walked or compared fast, in both replay modes.
    let base = frame_loop_records(2);
    for plan in [false, true] {
        let (walked, _) = replay_outcome(&base, plan, true);
        let (fast, n) = replay_outcome(&base, plan, false);
        assert_eq!(fast, walked);
        assert_eq!(
            n, 8,
            "the 4 creations of each frame loop take the fast path"
        );
    }
    let mut variants = 0;
    let mut fast_taken = 0;
    // Handles of the earlier creations (inputs and created): live when the call runs,
    // some with children (the adapter has the device).
    let mut earlier: Vec<u32> = Vec::new();
    for (pos, rec) in base.iter().enumerate().take(12) {
        let Record::Ioctl(io) = rec else { continue };
        let e = driver_core::schema::lookup_code(io.cmd).expect("known");
        let sp = crate::plan::struct_plan(e);
        if sp.creates.is_empty() {
            continue;
        }
        let sin = io
            .buffer(BufferRole::StructIn, "")
            .expect("in")
            .data
            .clone();
        let input = sp
            .leaves
            .iter()
            .find(|l| l.class == crate::plan::Class::Handle && l.size == 4)
            .map(|l| u32::from_le_bytes(sin[l.off..l.off + 4].try_into().expect("4")))
            .expect("an input handle");
        let out = io
            .buffer(BufferRole::StructOut, "")
            .expect("out")
            .data
            .clone();
        let created: Vec<(usize, u32)> = sp
            .creates
            .iter()
            .map(|&i| sp.leaves[i].off)
            .map(|off| {
                (
                    off,
                    u32::from_le_bytes(out[off..off + 4].try_into().expect("4")),
                )
            })
            .collect();
        let mut cases: Vec<Vec<(usize, u32)>> = Vec::new();
        for &(off, v) in &created {
            cases.push(vec![(off, 0)]);
            cases.push(vec![(off, input)]);
            cases.push(vec![(off, v ^ 0x8000)]);
            for &h in &earlier {
                cases.push(vec![(off, h)]);
            }
        }
        earlier.push(input);
        earlier.extend(created.iter().map(|c| c.1).filter(|&v| v != 0));
        if let [(a, va), (b, _), ..] = created[..] {
            cases.push(vec![(a, va), (b, va)]);
        }
        for case in cases {
            let mut recs = base.clone();
            for &(off, v) in &case {
                set_struct_u32(&mut recs, pos, BufferRole::StructOut, off, v);
            }
            for plan in [false, true] {
                let (walked, _) = replay_outcome(&recs, plan, true);
                let (fast, n) = replay_outcome(&recs, plan, false);
                assert_eq!(fast, walked, "{} {case:x?}", e.name);
                fast_taken += n;
            }
            variants += 1;
        }
    }
    assert!(variants >= 12, "{variants} variants");
    assert!(fast_taken > 0);
}

/// The emulator backend, panicking at its `n`-th ioctl.
struct PanicsAt {
    inner: driver_core::emulator::EmulatorBackend,
    n: u64,
}

impl Backend for PanicsAt {
    fn open(&mut self, p: &Path, f: i32) -> io::Result<i32> {
        self.inner.open(p, f)
    }
    unsafe fn ioctl(&mut self, fd: i32, cmd: u32, arg: u64) -> i64 {
        // SAFETY: forwarded as received.
        unsafe { self.ioctl_live(fd, cmd, arg, &[]) }
    }
    unsafe fn ioctl_live(&mut self, fd: i32, cmd: u32, arg: u64, live: &[(u64, usize)]) -> i64 {
        self.n -= 1;
        assert!(self.n > 0, "the backend fails");
        // SAFETY: forwarded as received.
        unsafe { self.inner.ioctl_live(fd, cmd, arg, live) }
    }
    fn pid(&self) -> u32 {
        self.inner.pid()
    }
    fn close(&mut self, fd: i32) -> io::Result<()> {
        self.inner.close(fd)
    }
}

#[test]
fn a_replay_that_panics_ends_its_decoding_thread() {
    // The decoding thread of `run_reader` frees the records the replay returns until the
    // replay says it is done; a replay that unwinds must say so too, or the thread (and
    // the scope waiting for it) would never end.
    let (_dir, p) = trace_file(&frame_loop_records(40));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let reader = traces::Reader::open(&p).expect("open");
        let b = PanicsAt {
            inner: emulator_backend(),
            n: 500,
        };
        let mut r = Replayer::new(b, ReplayOptions::new(Target::InProcess));
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::run_reader(&mut r, &reader, &mut |_| {})
        }));
        let _ = tx.send(res.is_err());
    });
    let panicked = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("run_reader returned (unwound) instead of hanging");
    assert!(panicked);
}

#[test]
fn a_file_longer_than_the_reordering_window_replays_as_the_plain_reader() {
    // More records than the window holds, the file's calls out of entry order in places
    // (two threads' calls swapped), so the window, the record recycling by request and
    // the prefetching of records ahead all run: the report must equal the plain reader's.
    let mut recs = frame_loop_records(1700);
    assert!(recs.len() > crate::REORDER_WINDOW + 5000, "{}", recs.len());
    let mut swapped = 0;
    for i in (100..recs.len() - 1).step_by(997) {
        if let (Record::Ioctl(a), Record::Ioctl(b)) = (&recs[i], &recs[i + 1])
            && a.tid == b.tid
        {
            let (ta, tb) = (a.ts_enter, b.ts_enter);
            recs.swap(i, i + 1);
            // The later-entered call now comes first in the file; give them distinct
            // threads so their order is the entry order, not a thread's program order.
            if let Record::Ioctl(x) = &mut recs[i] {
                x.tid += 1;
            }
            assert!(ta <= tb);
            swapped += 1;
        }
    }
    assert!(swapped > 10);
    let (_dir, p) = trace_file(&recs);
    let reader = traces::Reader::open(&p).expect("open");
    let (a, b) = file_and_plain_reports(&reader);
    assert_eq!(a.calls, b.calls);
    assert_eq!(a.divergences, b.divergences);
    assert_eq!(a.notes, b.notes);
    assert!(a.divergences.is_empty(), "{:#?}", a.divergences.first());
}

/// `recs` written to a trace file in a fresh temporary directory (kept while the first
/// value lives).
fn trace_file(recs: &[Record]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t.dxtrace");
    write_trace(
        &p,
        &RecordingBackend::<RealDevice>::header("/dev/dxg", "dxg"),
        recs,
    )
    .expect("write trace");
    (dir, p)
}

/// The reports of `reader`'s trace replayed against the emulator through `run_reader`
/// (records decoded on a second thread, what `dxtrace replay` runs) and straight from
/// `reader.records()`.
fn file_and_plain_reports(reader: &traces::Reader) -> (crate::Report, crate::Report) {
    let mut a = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
    crate::run_reader(&mut a, reader, &mut |_| {}).expect("replay");
    let mut b = Replayer::new(emulator_backend(), ReplayOptions::new(Target::InProcess));
    b.run(reader.records(), &mut |_| {}).expect("replay");
    (a.finish(), b.finish())
}
