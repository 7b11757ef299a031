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
#[derive(Default)]
struct FakeDxg {
    devices: u32,
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
            m.write(arg + 12, &(0x8000_0000u32 + self.devices).to_le_bytes())
                .expect("arg");
            return 0;
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
