//! driver-core integration tests: the tables against the reference transcription, kvm
//! against `<linux/kvm.h>`, round trips + golden decoded dumps, and a seeded fuzz of every
//! decoder.
//!
//! Golden files live in `tests/golden/`; regenerate with `DXTRACE_BLESS=1 cargo test -p
//! driver-core --test schema`.

#![expect(
    clippy::field_reassign_with_default,
    reason = "test fixtures read best as zeroed struct + the fields that matter"
)]

use driver_core::decode::{BufferRole, BufferView, VmbusDirection, decode_ioctl, decode_vmbus};
use driver_core::dxg::types::*;
use driver_core::dxg::vmbus;
use driver_core::layout::{Pod, read_uint};
use driver_core::render::{all_structs, schema_json, schema_text};
use driver_core::schema::{
    Device, Dir, VmbusChannel, VmbusCmd, lookup_code, lookup_name, walk_pointers,
};
use std::path::PathBuf;

fn data(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn parse_u(s: &str) -> u64 {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).expect("hex"),
        None => s.parse().expect("decimal"),
    }
}

#[test]
fn tables_match_reference_transcription() {
    let text = data("dxg_reference.txt");
    let dxg_structs = all_structs(Device::Dxg);
    let mut errors = Vec::new();
    let (mut n_ioctl, mut n_struct, mut n_field, mut n_vm) = (0, 0, 0, 0);
    let mut cur: Option<&driver_core::layout::StructDesc> = None;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[0] {
            "ioctl" => {
                n_ioctl += 1;
                let (nr, name, st, size, code) =
                    (parse_u(w[1]), w[2], w[3], parse_u(w[4]), parse_u(w[5]));
                match lookup_code(code as u32) {
                    None => errors.push(format!("{name}: code {code:#x} not in table")),
                    Some(e) => {
                        if e.name != name || e.nr as u64 != nr || e.size() as u64 != size {
                            errors.push(format!(
                                "{name}: table has {} nr {:#x} size {}",
                                e.name,
                                e.nr,
                                e.size()
                            ));
                        }
                        if st != "-" && e.layout.name != st {
                            errors.push(format!("{name}: struct {} != {st}", e.layout.name));
                        }
                    }
                }
                assert!(lookup_name(name).is_some(), "lookup by name {name}");
            }
            "struct" => {
                n_struct += 1;
                cur = dxg_structs.iter().copied().find(|d| d.name == w[1]);
                match cur {
                    None => errors.push(format!("struct {} missing", w[1])),
                    Some(d) if d.size as u64 != parse_u(w[2]) => {
                        errors.push(format!("struct {} size {} != {}", w[1], d.size, w[2]))
                    }
                    _ => {}
                }
            }
            "field" => {
                n_field += 1;
                let Some(d) = cur else { continue };
                let (off, size) = (parse_u(w[2]) as usize, parse_u(w[3]) as usize);
                if w[1] == "<union>" {
                    if !d.c_fields().any(|f| f.offset == off) {
                        errors.push(format!("{}: no field at union offset {off}", d.name));
                    }
                } else {
                    match d.field(w[1]) {
                        None => errors.push(format!("{}.{} missing", d.name, w[1])),
                        Some(f) if f.offset != off || f.size != size => errors.push(format!(
                            "{}.{}: table @{}+{} reference @{off}+{size}",
                            d.name, w[1], f.offset, f.size
                        )),
                        _ => {}
                    }
                }
            }
            "vmstruct" => {
                n_vm += 1;
                match vmbus::STRUCTS.iter().find(|d| d.name == w[1]) {
                    None => errors.push(format!("vmbus struct {} missing", w[1])),
                    Some(d) if d.size as u64 != parse_u(w[2]) => {
                        errors.push(format!("vmbus struct {} size {} != {}", w[1], d.size, w[2]))
                    }
                    _ => {}
                }
            }
            other => panic!("bad record {other}"),
        }
    }
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert_eq!(n_ioctl, 73, "65 final ioctls + 8 legacy");
    assert!(
        n_struct >= 55 && n_field > 300 && n_vm >= 90,
        "{n_struct} {n_field} {n_vm}"
    );
    assert_eq!(Device::Dxg.table().len(), 73);
}

#[test]
fn kvm_codes_match_c() {
    let expected = data("kvm_expected.txt");
    for line in expected.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[0] {
            "code" => {
                let e = lookup_name(w[1]).unwrap_or_else(|| panic!("{} missing", w[1]));
                assert_eq!(e.code as u64, parse_u(w[2]), "{}", w[1]);
                assert!(std::ptr::eq(lookup_code(e.code).expect("by code"), e));
            }
            "size" => {
                let d = all_structs(Device::Kvm)
                    .into_iter()
                    .find(|d| d.name == w[1])
                    .unwrap_or_else(|| panic!("{} missing", w[1]));
                assert_eq!(d.size as u64, parse_u(w[2]), "{}", w[1]);
            }
            "cap" => {
                let v = parse_u(w[2]) as i64;
                assert_eq!(
                    driver_core::kvm::CAPS.name_of(v),
                    Some(w[1]),
                    "cap {}",
                    w[1]
                );
            }
            _ => panic!("bad line {line}"),
        }
    }
    // The checked-in file must be what the C program prints on this machine.
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kvm_consts.c");
    let bin = std::env::temp_dir().join(format!("dxtrace_kvm_consts_{}", std::process::id()));
    match std::process::Command::new("gcc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
    {
        Ok(s) if s.success() => {
            let out = std::process::Command::new(&bin)
                .output()
                .expect("run kvm_consts");
            let _ = std::fs::remove_file(&bin);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expected,
                "kvm_expected.txt is stale"
            );
        }
        _ => eprintln!("skipping the C cross-check: gcc or <linux/kvm.h> not available"),
    }
}

#[test]
fn schema_json_shape() {
    for dev in [Device::Dxg, Device::Kvm] {
        let v = schema_json(dev);
        assert_eq!(v["device"], dev.name());
        let ioctls = v["ioctls"].as_array().expect("ioctls");
        assert_eq!(ioctls.len(), dev.table().len());
        for i in ioctls {
            assert!(i["code"].as_str().expect("code").starts_with("0x"));
            for k in [
                "name", "nr", "struct", "size", "class", "fields", "pointers", "handles",
            ] {
                assert!(!i[k].is_null(), "{k} in {}", i["name"]);
            }
        }
        assert!(v["structs"].as_array().expect("structs").len() > 5);
        assert!(!schema_text(dev).is_empty());
    }
    let v = schema_json(Device::Dxg);
    assert_eq!(v["vmbus"]["global"].as_array().expect("global").len(), 15);
    assert_eq!(v["vmbus"]["adapter"].as_array().expect("adapter").len(), 69);
    assert_eq!(
        v["vmbus"]["host_to_guest"].as_array().expect("h2g").len(),
        6
    );
    let ca = v["ioctls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "LX_DXCREATEALLOCATION")
        .unwrap();
    assert_eq!(ca["code"], "0xc0484706");
    assert_eq!(
        ca["pointers"][0]["nested"][0]["path"],
        "allocation_info[].priv_drv_data"
    );
}

/// Every ioctl struct round-trips: patterned bytes → decode → each scalar field's raw
/// value equals the bytes at its offset, and re-encoding via Pod gives the same bytes.
#[test]
fn every_ioctl_round_trips() {
    for dev in [Device::Dxg, Device::Kvm] {
        for e in dev.table() {
            let n = e.size();
            let bytes: Vec<u8> = (0..n)
                .map(|i| (i as u8).wrapping_mul(7).wrapping_add(1))
                .collect();
            let d = decode_ioctl(
                e.code,
                0x7000,
                &[BufferView {
                    role: BufferRole::StructIn,
                    path: "",
                    addr: 0x7000,
                    data: &bytes,
                    truncated: false,
                    unreadable: false,
                }],
            );
            assert!(d.known && d.name == e.name);
            if e.layout.fields.is_empty() {
                continue;
            }
            let root = &d.buffers[0];
            for f in &root.children {
                if let Some(raw) = f.raw {
                    assert_eq!(
                        Some(raw),
                        read_uint(&bytes, f.offset, f.size),
                        "{}.{}",
                        e.name,
                        f.name
                    );
                }
            }
        }
    }
    // Struct → bytes → struct with the Rust mirrors.
    let mut ca = CreateAllocation::default();
    ca.device = 0x4000_0100;
    ca.alloc_count = 2;
    ca.flags = 1 << 16;
    let b = ca.as_bytes().to_vec();
    assert_eq!(b.len(), 72);
    assert_eq!(CreateAllocation::from_bytes(&b), ca);
    let mut qc = QueryClockCalibration::default();
    qc.clock_data.gpu_frequency = 19_200_000;
    assert_eq!(
        read_uint(qc.as_bytes(), 12, 8),
        Some(19_200_000),
        "packed clock_data at 12"
    );
}

struct Call {
    name: &'static str,
    code: u32,
    arg: u64,
    bufs: Vec<(BufferRole, String, u64, Vec<u8>)>,
}

fn sv(
    role: BufferRole,
    path: &str,
    addr: u64,
    data: Vec<u8>,
) -> (BufferRole, String, u64, Vec<u8>) {
    (role, path.to_string(), addr, data)
}

fn golden_calls() -> Vec<Call> {
    let code = |n: &str| lookup_name(n).expect(n).code;
    let mut v = Vec::new();

    let mut o = OpenAdapterFromLuid::default();
    o.adapter_luid = [0x1234, 0x1];
    let mut o2 = o;
    o2.adapter_handle = 0x4000_0000;
    v.push(Call {
        name: "openadapterfromluid",
        code: code("LX_DXOPENADAPTERFROMLUID"),
        arg: 0x1000,
        bufs: vec![
            sv(BufferRole::StructIn, "", 0x1000, o.as_bytes().to_vec()),
            sv(BufferRole::StructOut, "", 0x1000, o2.as_bytes().to_vec()),
        ],
    });

    let mut ai = [AllocationInfo2::default(); 2];
    ai[0].priv_drv_data = 0x3000;
    ai[0].priv_drv_data_size = 8;
    ai[1].sysmem = 0x10_0000;
    let ai_bytes: Vec<u8> = ai.iter().flat_map(|a| a.as_bytes().to_vec()).collect();
    let mut ca = CreateAllocation::default();
    ca.device = 0x4000_0140;
    ca.alloc_count = 2;
    ca.allocation_info = 0x2000;
    ca.flags = 1;
    v.push(Call {
        name: "createallocation",
        code: code("LX_DXCREATEALLOCATION"),
        arg: 0x1000,
        bufs: vec![
            sv(BufferRole::StructIn, "", 0x1000, ca.as_bytes().to_vec()),
            sv(BufferRole::PtrIn, "allocation_info", 0x2000, ai_bytes),
            sv(
                BufferRole::PtrIn,
                "allocation_info[0].priv_drv_data",
                0x3000,
                vec![1, 2, 3, 4, 5, 6, 7, 8],
            ),
        ],
    });

    let mut es = Escape::default();
    es.type_ = 0;
    es.flags = 1 << 6;
    es.priv_drv_data = 0x5000;
    es.priv_drv_data_size = 112;
    let mut bt = BuildTestCommandBuffer::default();
    bt.escape_type = 3;
    bt.dma_buffer = 0x6000;
    bt.dma_buffer_size = 16;
    v.push(Call {
        name: "escape_buildtest",
        code: code("LX_DXESCAPE"),
        arg: 0x1000,
        bufs: vec![
            sv(BufferRole::StructIn, "", 0x1000, es.as_bytes().to_vec()),
            sv(
                BufferRole::PtrIn,
                "priv_drv_data",
                0x5000,
                bt.as_bytes().to_vec(),
            ),
        ],
    });

    let mut so = CreateSyncObject2::default();
    so.device = 0x4000_0140;
    so.info.type_ = 5;
    so.info.params = [7, 0x7f00_0000_1000, 0xff_0000_0000, 1, 0, 0, 0, 0];
    so.sync_object = 0x4000_0200;
    v.push(Call {
        name: "createsyncobject",
        code: code("LX_DXCREATESYNCHRONIZATIONOBJECT"),
        arg: 0x1000,
        bufs: vec![sv(
            BufferRole::StructOut,
            "",
            0x1000,
            so.as_bytes().to_vec(),
        )],
    });

    let mut ea = EnumAdapters3::default();
    ea.filter = 1;
    ea.adapter_count = 1;
    ea.adapters = 0x8000;
    let mut info = AdapterInfo::default();
    info.adapter_handle = 0x4000_0000;
    info.adapter_luid = [0xdead, 0];
    v.push(Call {
        name: "enumadapters3",
        code: code("LX_DXENUMADAPTERS3"),
        arg: 0x1000,
        bufs: vec![
            sv(BufferRole::StructOut, "", 0x1000, ea.as_bytes().to_vec()),
            sv(
                BufferRole::PtrOut,
                "adapters",
                0x8000,
                info.as_bytes().to_vec(),
            ),
        ],
    });

    let mut sc = SignalSyncObjectFromCpu::default();
    sc.object_count = 2;
    sc.objects = 0x9000;
    sc.fence_values = 0x9100;
    v.push(Call {
        name: "signalfromcpu",
        code: code("LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU"),
        arg: 0x1000,
        bufs: vec![
            sv(BufferRole::StructIn, "", 0x1000, sc.as_bytes().to_vec()),
            sv(
                BufferRole::PtrIn,
                "objects",
                0x9000,
                [0x4000_0200u32, 0x4000_0240]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            sv(
                BufferRole::PtrIn,
                "fence_values",
                0x9100,
                [5u64, 6].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        ],
    });

    let mut fe = IsFeatureEnabled::default();
    fe.adapter = 0x4000_0000;
    fe.feature_id = 0;
    fe.result.value = 0b11;
    v.push(Call {
        name: "isfeatureenabled",
        code: code("LX_ISFEATUREENABLED"),
        arg: 0x1000,
        bufs: vec![sv(
            BufferRole::StructOut,
            "",
            0x1000,
            fe.as_bytes().to_vec(),
        )],
    });

    v.push(Call {
        name: "short_garbage",
        code: code("LX_DXMAPGPUVIRTUALADDRESS"),
        arg: 0x1000,
        bufs: vec![sv(BufferRole::StructIn, "", 0x1000, vec![0xff; 13])],
    });
    v.push(Call {
        name: "unknown_code",
        code: 0xC0104799,
        arg: 0x1000,
        bufs: vec![sv(BufferRole::StructIn, "", 0x1000, vec![1, 2, 3, 4])],
    });
    v.push(Call {
        name: "legacy_render",
        code: code("LX_DXRENDER"),
        arg: 0x1000,
        bufs: vec![],
    });

    let mut mr = driver_core::kvm::UserspaceMemoryRegion::default();
    mr.memory_size = 0x20_0000;
    mr.userspace_addr = 0x7f00_0000_0000;
    v.push(Call {
        name: "kvm_set_user_memory_region",
        code: code("KVM_SET_USER_MEMORY_REGION"),
        arg: 0x1000,
        bufs: vec![sv(BufferRole::StructIn, "", 0x1000, mr.as_bytes().to_vec())],
    });
    v.push(Call {
        name: "kvm_check_extension",
        code: code("KVM_CHECK_EXTENSION"),
        arg: 3,
        bufs: vec![],
    });
    v
}

fn vmbus_goldens() -> Vec<(&'static str, VmbusDirection, Vec<u8>)> {
    let mut v = Vec::new();
    // ext header + CREATEALLOCATION request
    let mut ext = vmbus::ExtHeader::default();
    ext.command_offset = 16;
    ext.vgpu_luid = [0xabc, 0];
    let mut c = vmbus::CreateAllocationCmd::default();
    c.hdr.process = 0x4000_0c00;
    c.hdr.command_type = 4;
    c.alloc_count = 1;
    let mut b = ext.as_bytes().to_vec();
    b.extend_from_slice(c.as_bytes());
    b.extend_from_slice(&[0; 12]);
    v.push(("vmbus_createallocation", VmbusDirection::GuestToHost, b));
    let mut p = vmbus::CreateProcessCmd::default();
    p.hdr.channel_type = 1;
    p.hdr.command_type = 1000;
    p.process_id = 42;
    for (i, ch) in "app".encode_utf16().enumerate() {
        p.process_name[i] = ch;
    }
    p.flags = 8;
    v.push((
        "vmbus_createprocess",
        VmbusDirection::GuestToHost,
        p.as_bytes().to_vec(),
    ));
    let mut r = vmbus::MapGpuVaReturn::default();
    r.virtual_address = 0x1_0000_0000;
    r.status = 0x103;
    v.push((
        "vmbus_reply_map",
        VmbusDirection::Reply {
            request: Some(VmbusCmd {
                channel: VmbusChannel::Adapter,
                value: 17,
            }),
        },
        r.as_bytes().to_vec(),
    ));
    let mut s = vmbus::SignalGuestEvent::default();
    s.hdr.channel_bits = 2;
    s.event = 2;
    v.push((
        "vmbus_signalguestevent",
        VmbusDirection::HostToGuest,
        s.as_bytes().to_vec(),
    ));
    v
}

#[test]
fn golden_decoded_dumps() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("DXTRACE_BLESS").is_some();
    let mut outputs = Vec::new();
    for c in golden_calls() {
        let views: Vec<BufferView<'_>> = c
            .bufs
            .iter()
            .map(|(role, path, addr, data)| BufferView {
                role: *role,
                path,
                addr: *addr,
                data,
                truncated: false,
                unreadable: false,
            })
            .collect();
        let d = decode_ioctl(c.code, c.arg, &views);
        serde_json::to_string(&d).expect("serialisable");
        outputs.push((c.name, d.to_text()));
    }
    for (name, dir_, bytes) in vmbus_goldens() {
        outputs.push((name, decode_vmbus(dir_, &bytes).to_text()));
    }
    let mut failures = Vec::new();
    for (name, text) in outputs {
        let path = dir.join(format!("{name}.txt"));
        if bless {
            std::fs::write(&path, &text).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == text => {}
            Ok(want) => failures.push(format!("{name}: differs\n--- want\n{want}--- got\n{text}")),
            Err(_) => failures.push(format!(
                "{name}: missing {}, run with DXTRACE_BLESS=1",
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn walk_createallocation_and_escape() {
    let code = lookup_name("LX_DXCREATEALLOCATION").unwrap();
    let mut ai = [AllocationInfo2::default(); 2];
    ai[0].priv_drv_data = 0x3000;
    ai[0].priv_drv_data_size = 8;
    ai[1].sysmem = 0x10_0000;
    let ai_bytes: Vec<u8> = ai.iter().flat_map(|a| a.as_bytes().to_vec()).collect();
    let mut ca = CreateAllocation::default();
    ca.alloc_count = 2;
    ca.allocation_info = 0x2000;
    ca.priv_drv_data = 0x4000;
    ca.priv_drv_data_size = 5;
    let mut reads = Vec::new();
    let bufs = walk_pointers(code, 0x1000, ca.as_bytes(), &mut |a, l| {
        reads.push((a, l));
        (a == 0x2000).then(|| ai_bytes.clone())
    });
    let paths: Vec<(&str, u64, u64, Dir)> = bufs
        .iter()
        .map(|b| (b.path.as_str(), b.addr, b.len, b.dir))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("allocation_info", 0x2000, 192, Dir::InOut),
            ("allocation_info[0].priv_drv_data", 0x3000, 8, Dir::InOut),
            ("allocation_info[1].sysmem", 0x10_0000, 0, Dir::Pinned),
            ("priv_drv_data", 0x4000, 5, Dir::In),
        ]
    );
    assert!(bufs[2].unknown_len);
    // standard_allocation flag switches the union to a 24-byte struct.
    ca.flags = 1 << 16;
    let bufs = walk_pointers(code, 0x1000, ca.as_bytes(), &mut |_, _| None);
    assert!(
        bufs.iter()
            .any(|b| b.path == "standard_allocation" && b.len == 24)
    );
    assert!(!bufs.iter().any(|b| b.path == "priv_drv_data"));

    let esc = lookup_name("LX_DXESCAPE").unwrap();
    let mut es = Escape::default();
    es.flags = 1 << 6;
    es.priv_drv_data = 0x5000;
    es.priv_drv_data_size = 112;
    let mut bt = BuildTestCommandBuffer::default();
    bt.escape_type = 3;
    bt.dma_buffer = 0x6000;
    bt.dma_buffer_size = 64;
    bt.dma_buffer_priv_data = 0x7000;
    bt.dma_buffer_priv_data_size = 4;
    let btb = bt.as_bytes().to_vec();
    let bufs = walk_pointers(esc, 0x1000, es.as_bytes(), &mut |_, _| Some(btb.clone()));
    let paths: Vec<&str> = bufs.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "priv_drv_data",
            "priv_drv_data.dma_buffer",
            "priv_drv_data.dma_buffer_priv_data"
        ]
    );
    // Not a known escape: no nested buffers.
    es.flags = 0;
    assert_eq!(
        walk_pointers(esc, 0x1000, es.as_bytes(), &mut |_, _| Some(btb.clone())).len(),
        1
    );
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn fuzz_decoders_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let codes: Vec<u32> = Device::Dxg
        .table()
        .iter()
        .chain(Device::Kvm.table())
        .map(|e| e.code)
        .collect();
    let roles = [
        BufferRole::StructIn,
        BufferRole::StructOut,
        BufferRole::PtrIn,
        BufferRole::PtrOut,
    ];
    let paths = [
        "",
        "allocation_info",
        "allocation_info[3].priv_drv_data",
        "priv_drv_data",
        "adapters",
        "objects",
        "x[1].y.z",
        "entries",
    ];
    for _ in 0..20_000 {
        let code = if rng.below(4) == 0 {
            rng.next() as u32
        } else {
            codes[rng.below(codes.len() as u64) as usize]
        };
        let nbufs = rng.below(4) as usize;
        let store: Vec<(BufferRole, &str, Vec<u8>)> = (0..nbufs)
            .map(|_| {
                let n = rng.below(700) as usize;
                (
                    roles[rng.below(4) as usize],
                    paths[rng.below(paths.len() as u64) as usize],
                    rng.bytes(n),
                )
            })
            .collect();
        let views: Vec<BufferView<'_>> = store
            .iter()
            .map(|(r, p, d)| BufferView {
                role: *r,
                path: p,
                addr: 0x1000,
                data: d,
                truncated: false,
                unreadable: d.is_empty(),
            })
            .collect();
        let d = decode_ioctl(code, rng.next(), &views);
        let _ = d.to_text();
        let _ = serde_json::to_string(&d).expect("serialise");
        if let Some(e) = lookup_code(code) {
            let s = rng.bytes(e.size());
            let bl = rng.below(2048) as usize;
            let blob = rng.bytes(bl);
            let _ = walk_pointers(e, 0x1000, &s, &mut |_, l| {
                Some(blob.iter().copied().cycle().take(l.min(1 << 20)).collect())
            });
        }
        let _ = driver_core::render_return(rng.next() as i64, rng.below(2) == 0);
    }
    let cmds: Vec<VmbusCmd> = vmbus::COMMANDS.iter().map(|c| c.cmd).collect();
    for _ in 0..20_000 {
        let n = rng.below(1200) as usize;
        let mut b = rng.bytes(n);
        if n >= 40 && rng.below(2) == 0 {
            b[0..4].copy_from_slice(&16u32.to_le_bytes());
        }
        let cmd = cmds[rng.below(cmds.len() as u64) as usize];
        let off = if b.first() == Some(&16) { 16 } else { 0 };
        if b.len() >= off + 20 && rng.below(2) == 0 {
            b[off + 12] = if cmd.channel == VmbusChannel::Global {
                1
            } else {
                0
            };
            b[off + 16..off + 20].copy_from_slice(&cmd.value.to_le_bytes());
        }
        let dir = match rng.below(4) {
            0 => VmbusDirection::GuestToHost,
            1 => VmbusDirection::HostToGuest,
            2 => VmbusDirection::Reply { request: Some(cmd) },
            _ => VmbusDirection::Reply { request: None },
        };
        let m = decode_vmbus(dir, &b);
        let _ = m.to_text();
        let _ = serde_json::to_string(&m).expect("serialise");
    }
}
