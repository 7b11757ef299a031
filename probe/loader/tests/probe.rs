//! Real load/attach tests of the probe (root only; never skipped in CI).
//!
//! Workloads run in a child process: this same test binary, started with a filter that
//! selects one `child_*` test and an extra `out=PATH` argument that tells it to do the
//! work (libtest treats the extra word as a second, non-matching filter). The probe
//! filters by the child's pid, so the parallel test threads of this process are not seen.

use std::collections::HashMap;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use probe::{CmdDescriptor, FdReturn, LenSpec, PointerSpec, RecordOptions, RecordSummary};
use traces::{BufferRole, FdOp, IoctlRecord, Reader, Record, VmbusDir};

/// One probe at a time: keeps the fd leak check and the flood's timing meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

const KVM_GET_API_VERSION: u32 = 0xae00;
const KVM_CREATE_VM: u32 = 0xae01;
const KVM_CHECK_EXTENSION: u32 = 0xae03;
const KVM_CREATE_VCPU: u32 = 0xae41;
const KVM_SET_USER_MEMORY_REGION: u32 = 0x4020_ae46;
const KVM_GET_DIRTY_LOG: u32 = 0x4010_ae42;
const KVM_GET_REGS: u32 = 0x8090_ae81;
const KVM_SET_REGS: u32 = 0x4090_ae82;
const KVM_GET_SREGS: u32 = 0x8138_ae83;
const KVM_SET_SREGS: u32 = 0x4138_ae84;
const KVM_RUN: u32 = 0xae80;
const KVM_CAP_USER_MEMORY: u64 = 3;
const KVM_GET_SUPPORTED_CPUID: u32 = 0xc008_ae05;
const SLOT_PAGES: usize = 64;
const CPUID_NENT: usize = 100;

// ---------------------------------------------------------------- helpers

fn need_root() {
    // SAFETY: no arguments.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "the probe tests need root, and CI runs as root"
        );
        eprintln!("skipped: not root (the probe needs CAP_BPF + CAP_PERFMON)");
    }
}

fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// `out=PATH` if this process is a workload child.
fn child_out() -> Option<PathBuf> {
    std::env::args().find_map(|a| a.strip_prefix("out=").map(PathBuf::from))
}

fn child_argv(test: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        std::env::current_exe().unwrap().display().to_string(),
        test.to_string(),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
        format!("out={}", out.display()),
    ];
    v.extend(extra.iter().map(|s| format!("arg={s}")));
    v
}

fn child_arg() -> Option<String> {
    std::env::args().find_map(|a| a.strip_prefix("arg=").map(String::from))
}

fn bpf_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| {
            let l = l.display().to_string();
            l.contains("bpf-prog") || l.contains("bpf-map") || l.contains("bpf_link")
        })
        .count()
}

fn run(opts: RecordOptions) -> RecordSummary {
    let stop = AtomicBool::new(false);
    probe::record_blocking(opts, &stop, |_| {}).expect("record")
}

fn read_trace(path: &Path) -> (traces::Header, Vec<Record>) {
    let r = Reader::open(path).expect("open trace");
    let h = r.header().clone();
    let recs = r.records().map(|r| r.expect("record")).collect();
    (h, recs)
}

fn ioctls(recs: &[Record]) -> Vec<&IoctlRecord> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Ioctl(i) => Some(i),
            _ => None,
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ioctl(fd: i32, cmd: u32, arg: u64) -> i64 {
    // SAFETY: every caller passes an argument valid for `cmd`.
    unsafe { libc::ioctl(fd, cmd as libc::c_ulong, arg) as i64 }
}

/// driver-core's kvm table, plus the dirty log's bitmap pointer, whose length the table
/// cannot state (it depends on the memory slot): it exercises a plain embedded pointer.
fn kvm_descriptors() -> Vec<CmdDescriptor> {
    let mut d = probe::desc::from_table(driver_core::schema::Device::Kvm);
    for want in [KVM_CREATE_VM, KVM_CREATE_VCPU] {
        let e = d
            .iter()
            .find(|e| e.cmd == want)
            .expect("fd-returning ioctl in the table");
        assert_eq!(e.fd, FdReturn::Return);
    }
    let bitmap = PointerSpec {
        path: "dirty_bitmap".into(),
        ptr_offset: 8,
        len: LenSpec::Fixed((SLOT_PAGES / 8) as u32),
        elem_size: 1,
        dir_in: false,
        dir_out: true,
        max_bytes: 0,
        trailing: false,
        parent: None,
        pinned: false,
    };
    let e = d
        .iter_mut()
        .find(|e| e.cmd == KVM_GET_DIRTY_LOG)
        .expect("KVM_GET_DIRTY_LOG is in driver-core's kvm table");
    assert!(
        e.pointers.is_empty(),
        "the table does not follow the bitmap"
    );
    e.pointers.push(bitmap);
    d
}

// ---------------------------------------------------------------- workloads (child side)

/// The KVM workload: logs `cmd ret struct_in struct_out ptr_out` per call.
#[test]
fn child_kvm() {
    let Some(out) = child_out() else { return };
    let mut log = String::new();
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .expect("open /dev/kvm");
    let kfd = kvm.as_raw_fd();
    let mut line = |cmd: u32, ret: i64, sin: &[u8], sout: &[u8], pout: &[u8]| {
        log.push_str(&format!(
            "{cmd:x} {ret} {} {} {}\n",
            hex(sin),
            hex(sout),
            hex(pout)
        ));
    };
    let r = ioctl(kfd, KVM_GET_API_VERSION, 0);
    line(KVM_GET_API_VERSION, r, &[], &[], &[]);
    let r = ioctl(kfd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY);
    line(KVM_CHECK_EXTENSION, r, &[], &[], &[]);
    // struct kvm_cpuid2 { nent, padding, entries[nent] (40 bytes each) }: a trailing array.
    let mut cpuid = vec![0u8; 8 + CPUID_NENT * 40];
    cpuid[0..4].copy_from_slice(&(CPUID_NENT as u32).to_le_bytes());
    let before = cpuid[..8].to_vec();
    let r = ioctl(kfd, KVM_GET_SUPPORTED_CPUID, cpuid.as_mut_ptr() as u64);
    assert!(r >= 0, "KVM_GET_SUPPORTED_CPUID failed");
    let nent = u32::from_le_bytes(cpuid[0..4].try_into().unwrap()) as usize;
    line(
        KVM_GET_SUPPORTED_CPUID,
        r,
        &before,
        &cpuid[..8],
        &cpuid[8..8 + nent * 40],
    );
    let vm = ioctl(kfd, KVM_CREATE_VM, 0);
    line(KVM_CREATE_VM, vm, &[], &[], &[]);
    assert!(vm >= 0, "KVM_CREATE_VM failed");
    let vm = vm as i32;
    let r = ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY);
    line(KVM_CHECK_EXTENSION, r, &[], &[], &[]);

    // SAFETY: anonymous private mapping.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SLOT_PAGES * 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(mem, libc::MAP_FAILED);
    // struct kvm_userspace_memory_region { slot, flags (LOG_DIRTY_PAGES), gpa, size, uaddr }
    let mut region = [0u8; 32];
    region[4..8].copy_from_slice(&1u32.to_le_bytes());
    region[8..16].copy_from_slice(&0x10_0000u64.to_le_bytes());
    region[16..24].copy_from_slice(&((SLOT_PAGES * 4096) as u64).to_le_bytes());
    region[24..32].copy_from_slice(&(mem as u64).to_le_bytes());
    let r = ioctl(vm, KVM_SET_USER_MEMORY_REGION, region.as_ptr() as u64);
    line(KVM_SET_USER_MEMORY_REGION, r, &region, &region, &[]);

    let mut bitmap = [0xa5u8; SLOT_PAGES / 8];
    let mut dirty = [0u8; 16];
    dirty[8..16].copy_from_slice(&(bitmap.as_mut_ptr() as u64).to_le_bytes());
    let r = ioctl(vm, KVM_GET_DIRTY_LOG, dirty.as_ptr() as u64);
    line(KVM_GET_DIRTY_LOG, r, &dirty, &dirty, &bitmap);

    let vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    line(KVM_CREATE_VCPU, vcpu, &[], &[], &[]);
    assert!(vcpu >= 0, "KVM_CREATE_VCPU failed");
    let mut regs = [0x5au8; 144];
    let before = regs;
    let r = ioctl(vcpu as i32, KVM_GET_REGS, regs.as_mut_ptr() as u64);
    line(KVM_GET_REGS, r, &before, &regs, &[]);

    // SAFETY: closing descriptors this function owns.
    unsafe {
        libc::close(vcpu as i32);
        libc::close(vm);
    }
    drop(kvm);
    std::fs::write(out, log).unwrap();
}

/// A flood of KVM_CHECK_EXTENSION on /dev/kvm; writes the number of calls made.
#[test]
fn child_flood() {
    let Some(out) = child_out() else { return };
    let n: u64 = child_arg().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let kvm = std::fs::File::open("/dev/kvm").expect("open /dev/kvm");
    for _ in 0..n {
        black_box(ioctl(
            kvm.as_raw_fd(),
            KVM_CHECK_EXTENSION,
            KVM_CAP_USER_MEMORY,
        ));
    }
    std::fs::write(out, n.to_string()).unwrap();
}

/// Copies of a /dev/kvm fd and of a VM fd (dup, dup2, dup3, F_DUPFD, F_DUPFD_CLOEXEC),
/// originals closed, KVM_CHECK_EXTENSION on each copy with a distinct argument; then a VM
/// copy replaced by dup2 of /dev/null and another closed, called again (not on the device
/// any more). Logs `captured|ignored FD ARG RET` lines.
#[test]
fn child_dup() {
    let Some(out) = child_out() else { return };
    let mut log = String::new();
    let check = |fd: i32, arg: u64| -> i64 {
        let r = ioctl(fd, KVM_CHECK_EXTENSION, arg);
        if r < 0 {
            -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
        } else {
            r
        }
    };
    // SAFETY: plain descriptor syscalls on descriptors this function owns.
    unsafe {
        let kvm = libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        assert!(kvm >= 0);
        let vm = ioctl(kvm, KVM_CREATE_VM, 0) as i32;
        assert!(vm >= 0);
        let mut copies = Vec::new();
        for (base, orig) in [(100, kvm), (150, vm)] {
            copies.push(libc::dup(orig));
            copies.push(libc::dup2(orig, base));
            copies.push(libc::dup3(orig, base + 1, libc::O_CLOEXEC));
            copies.push(libc::fcntl(orig, libc::F_DUPFD, base + 10));
            copies.push(libc::fcntl(orig, libc::F_DUPFD_CLOEXEC, base + 20));
        }
        assert!(copies.iter().all(|&fd| fd >= 0), "{copies:?}");
        libc::close(vm);
        libc::close(kvm);
        for (i, &fd) in copies.iter().enumerate() {
            let arg = 1000 + i as u64;
            log.push_str(&format!("captured {fd} {arg} {}\n", check(fd, arg)));
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        let (reused, closed) = (copies[6], copies[7]);
        assert_eq!(libc::dup2(null, reused), reused);
        libc::close(closed);
        for (fd, arg) in [(reused, 2000u64), (closed, 2001)] {
            log.push_str(&format!("ignored {fd} {arg} {}\n", check(fd, arg)));
        }
        log.push_str(&format!(
            "captured {} 3000 {}\n",
            copies[0],
            check(copies[0], 3000)
        ));
    }
    std::fs::write(out, log).unwrap();
}

/// A vCPU whose guest spins forever (`jmp $` at address 0, real mode): writes "running"
/// to `out` and enters KVM_RUN, which only a signal ends. KVM_RUN carries no bytes, so
/// the probe keeps its entry in the thread's slot until it returns.
#[test]
fn child_kvm_spin() {
    let Some(out) = child_out() else { return };
    let kvm = std::fs::File::open("/dev/kvm").expect("open /dev/kvm");
    let vm = ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) as i32;
    assert!(vm >= 0, "KVM_CREATE_VM");
    // SAFETY: anonymous private mapping of one page.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(mem, libc::MAP_FAILED);
    // SAFETY: the page is ours; `jmp $` (EB FE) at guest address 0.
    unsafe { std::ptr::copy_nonoverlapping([0xebu8, 0xfe].as_ptr(), mem.cast(), 2) };
    let mut region = [0u8; 32];
    region[16..24].copy_from_slice(&4096u64.to_le_bytes());
    region[24..32].copy_from_slice(&(mem as u64).to_le_bytes());
    assert_eq!(
        ioctl(vm, KVM_SET_USER_MEMORY_REGION, region.as_ptr() as u64),
        0
    );
    let vcpu = ioctl(vm, KVM_CREATE_VCPU, 0) as i32;
    assert!(vcpu >= 0, "KVM_CREATE_VCPU");
    // struct kvm_sregs: cs first (base u64, limit u32, selector u16, ...): base 0, selector 0.
    let mut sregs = [0u8; 312];
    assert_eq!(ioctl(vcpu, KVM_GET_SREGS, sregs.as_mut_ptr() as u64), 0);
    sregs[0..8].fill(0);
    sregs[12..14].fill(0);
    assert_eq!(ioctl(vcpu, KVM_SET_SREGS, sregs.as_ptr() as u64), 0);
    // struct kvm_regs: rip at 128, rflags at 136.
    let mut regs = [0u8; 144];
    regs[136..144].copy_from_slice(&2u64.to_le_bytes());
    assert_eq!(ioctl(vcpu, KVM_SET_REGS, regs.as_ptr() as u64), 0);
    std::fs::write(&out, "running").unwrap();
    let r = ioctl(vcpu, KVM_RUN, 0);
    panic!("KVM_RUN returned {r}: the guest was meant to spin");
}

/// Records `child_kvm_spin` until it is inside KVM_RUN; then `end` ends it (sets the stop
/// flag, or kills the child). Returns the trace's ioctls.
fn record_spin(end: impl FnOnce(&AtomicBool, u32)) -> Vec<IoctlRecord> {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("running");
    let trace = dir.path().join("spin.dxtrace");
    let opts = RecordOptions {
        devices: vec!["/dev/kvm".into()],
        schemas: vec!["kvm".into()],
        command: child_argv("child_kvm_spin", &marker, &[]),
        output: trace.clone(),
        descriptors: kvm_descriptors(),
        ..Default::default()
    };
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let rec = std::thread::spawn(move || probe::record_blocking(opts, &st, |_| {}));
    let t0 = std::time::Instant::now();
    while !marker.exists() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "the child never reached KVM_RUN"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Inside KVM_RUN by now, and the recorder idle: everything before it is drained.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = find_child("child_kvm_spin");
    end(&stop, pid);
    let summary = rec.join().unwrap().expect("record");
    assert_eq!(summary.dropped, 0);
    let (_, recs) = read_trace(&trace);
    ioctls(&recs).into_iter().cloned().collect()
}

/// Pid of the running copy of this test binary started for `test`.
fn find_child(test: &str) -> u32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        // The gate shell execs the test binary in the same process: any stage will do.
        if args.contains(&test.as_bytes()) {
            return pid;
        }
    }
    panic!("no process running {test}");
}

/// A call that is still inside the driver when the capture stops is in the trace, with
/// `ts_exit` 0, after every call before it. KVM_RUN carries no bytes: its entry exists
/// only in the thread's in-flight slot, which the loader reads after detaching.
#[test]
fn call_in_flight_at_stop_is_recorded_open() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let calls = record_spin(|stop, _| stop.store(true, std::sync::atomic::Ordering::SeqCst));
    let cmds: Vec<u32> = calls.iter().map(|c| c.cmd).collect();
    assert_eq!(
        cmds,
        [
            KVM_CREATE_VM,
            KVM_SET_USER_MEMORY_REGION,
            KVM_CREATE_VCPU,
            KVM_GET_SREGS,
            KVM_SET_SREGS,
            KVM_SET_REGS,
            KVM_RUN
        ],
        "{calls:#?}"
    );
    let run = calls.last().unwrap();
    assert_eq!(run.ts_exit, 0, "still in flight at the stop: {run:?}");
    assert!(run.ts_enter > calls[calls.len() - 2].ts_exit);
    assert!(
        calls[..calls.len() - 1]
            .iter()
            .all(|c| c.ts_exit >= c.ts_enter && c.ret >= 0)
    );
}

/// A thread killed inside a call still yields the call: SIGKILL ends KVM_RUN, whose record
/// then comes with the kernel's return value.
#[test]
fn call_killed_inside_the_driver_is_recorded() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let calls = record_spin(|_, pid| {
        // SAFETY: signalling the workload child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    });
    let run = calls.last().expect("calls");
    assert_eq!(run.cmd, KVM_RUN, "{calls:#?}");
    assert_eq!(calls.iter().filter(|c| c.cmd == KVM_RUN).count(), 1);
    assert!(run.ts_enter > 0, "{run:?}");
    assert!(
        run.ts_exit == 0 || (run.ts_exit >= run.ts_enter && run.ret < 0),
        "a killed KVM_RUN returns an error, or is still open: {run:?}"
    );
}

/// KVM_CHECK_EXTENSION(`arg`) on `fd`: its return, or `-errno`.
fn check_ext(fd: i32, arg: u64) -> i64 {
    let r = ioctl(fd, KVM_CHECK_EXTENSION, arg);
    if r < 0 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
    } else {
        r
    }
}

/// Calls [`check_ext`] and logs `WHAT FD ARG RET`.
fn call(log: &mut String, what: &str, fd: i32, arg: u64) {
    let r = check_ext(fd, arg);
    log.push_str(&format!("{what} {fd} {arg} {r}\n"));
}

/// A non-device descriptor numbered `want`: eventfds are created (and kept) until one
/// gets that number, or a higher one (then `want` was taken by something else, which is
/// not a device either). Eventfds, not opens: an open's return is written into the
/// descriptor cache afresh, which would hide a stale entry instead of testing its removal.
fn non_device_at(want: i32) {
    for _ in 0..8192 {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::eventfd(0, 0) };
        assert!(fd >= 0);
        if fd >= want {
            return;
        }
    }
    panic!("no descriptor reached {want}");
}

/// The descriptor cache and the derived set follow a descriptor's life: a /dev/kvm fd
/// closed and its number reused by an eventfd; an eventfd (cached as not watched) made a
/// copy of /dev/kvm by dup2; a dup; a VM fd closed by close_range and its number reused;
/// then an exec (`child_fdcache_exec`) with a /dev/kvm fd and a VM fd that survive it and
/// a close-on-exec one of each that do not. Logs `captured|ignored FD ARG RET` lines and
/// `closed FD` for the derived descriptors closed by close_range and by exec.
#[test]
fn child_fdcache() {
    let Some(out) = child_out() else { return };
    let mut log = String::new();
    // SAFETY: plain descriptor syscalls on descriptors this function owns.
    unsafe {
        let kvm = libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR);
        assert!(kvm >= 0);
        call(&mut log, "captured", kvm, 1);
        let kvm2 = libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        call(&mut log, "captured", kvm2, 2);
        libc::close(kvm2);
        non_device_at(kvm2);
        call(&mut log, "ignored", kvm2, 3);
        let ev = libc::eventfd(0, 0);
        call(&mut log, "ignored", ev, 4);
        assert_eq!(libc::dup2(kvm, ev), ev);
        call(&mut log, "captured", ev, 5);
        let d = libc::dup(kvm);
        call(&mut log, "captured", d, 6);
        let vm = ioctl(kvm, KVM_CREATE_VM, 0) as i32;
        assert!(vm >= 0);
        call(&mut log, "captured", vm, 7);
        assert_eq!(
            libc::syscall(libc::SYS_close_range, vm as u32, vm as u32, 0u32),
            0
        );
        log.push_str(&format!("closed {vm}\n"));
        non_device_at(vm);
        call(&mut log, "ignored", vm, 8);
        let vm_keep = ioctl(kvm, KVM_CREATE_VM, 0) as i32;
        let vm = ioctl(kvm, KVM_CREATE_VM, 0) as i32;
        assert!(vm_keep >= 0 && vm >= 0);
        // KVM hands out close-on-exec VM fds: keep one across the exec.
        assert_eq!(libc::fcntl(vm_keep, libc::F_SETFD, 0), 0);
        // The close-on-exec ones at high numbers, which the new image's own start-up
        // (which opens and closes files) leaves alone.
        let vm_gone = libc::dup3(vm, 300, libc::O_CLOEXEC);
        libc::close(vm);
        let k = libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        let kvm3 = libc::dup3(k, 301, libc::O_CLOEXEC);
        libc::close(k);
        assert_eq!((vm_gone, kvm3), (300, 301));
        // And one far above the rest (the exec then clears by iterating over the maps,
        // not number by number).
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max.min(8192);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        let vm_far = libc::dup3(vm_gone, 6000, libc::O_CLOEXEC);
        assert_eq!(vm_far, 6000);
        call(&mut log, "captured", vm_keep, 9);
        call(&mut log, "captured", vm_gone, 10);
        call(&mut log, "captured", kvm3, 11);
        call(&mut log, "captured", vm_far, 16);
        log.push_str(&format!("closed {vm_far}\n"));
        log.push_str(&format!("closed {vm_gone}\n"));
        std::fs::write(&out, &log).unwrap();
        let argv = child_argv(
            "child_fdcache_exec",
            &out,
            &[&format!("{kvm},{vm_keep},{vm_gone},{kvm3},{vm_far}")],
        );
        let cargs: Vec<std::ffi::CString> = argv
            .iter()
            .map(|a| std::ffi::CString::new(a.as_str()).unwrap())
            .collect();
        let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        libc::execv(ptrs[0], ptrs.as_ptr());
        panic!("exec failed: {}", std::io::Error::last_os_error());
    }
}

/// The image `child_fdcache` execs into: the descriptors it was given by number.
#[test]
fn child_fdcache_exec() {
    let Some(out) = child_out() else { return };
    let fds: Vec<i32> = child_arg()
        .expect("fds")
        .split(',')
        .map(|f| f.parse().unwrap())
        .collect();
    let [kvm, vm_keep, vm_gone, kvm3, vm_far] = fds[..] else {
        panic!("{fds:?}")
    };
    let mut log = std::fs::read_to_string(&out).unwrap();
    call(&mut log, "captured", kvm, 12);
    call(&mut log, "captured", vm_keep, 13);
    non_device_at(vm_gone.max(kvm3));
    call(&mut log, "ignored", vm_gone, 14);
    call(&mut log, "ignored", kvm3, 15);
    non_device_at(vm_far);
    call(&mut log, "ignored", vm_far, 17);
    std::fs::write(&out, log).unwrap();
}

// ---------------------------------------------------------------- tests (parent side)

/// Records the kvm child `child` under the probe; returns what it logged, the trace's
/// header and records, and the recording's summary.
fn record_kvm_child(child: &str) -> (String, traces::Header, Vec<Record>, RecordSummary) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join(format!("{child}.log"));
    let trace = dir.path().join(format!("{child}.dxtrace"));
    let summary = run(RecordOptions {
        devices: vec!["/dev/kvm".into()],
        schemas: vec!["kvm".into()],
        command: child_argv(child, &log, &[]),
        output: trace.clone(),
        descriptors: kvm_descriptors(),
        ..Default::default()
    });
    assert_eq!(summary.exit_code, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let (header, recs) = read_trace(&trace);
    (text, header, recs, summary)
}

/// The `captured FD ARG RET` lines of a child's log.
fn captured_lines(text: &str) -> Vec<(i32, u64, i64)> {
    text.lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|l| l[0] == "captured")
        .map(|l| {
            (
                l[1].parse().unwrap(),
                l[2].parse().unwrap(),
                l[3].parse().unwrap(),
            )
        })
        .collect()
}

/// Pins the calling thread to `cpu`; false if it cannot run there (one CPU).
fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Calls that carry no bytes on a VM fd on CPU 0 (where they wait in the CPU's batch),
/// then on CPU 1 the VM fd closed, a new VM (most likely the same number) and a call on
/// it: the close and the new VM reach the ring before CPU 0's batch. Logs
/// `captured FD ARG RET` per call and `closed FD`.
#[test]
fn child_migrate() {
    let Some(out) = child_out() else { return };
    let mut log = String::new();
    let kvm = std::fs::File::open("/dev/kvm").expect("open /dev/kvm");
    pin(0);
    let vm = ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) as i32;
    assert!(vm >= 0);
    for arg in [1u64, 2, 3] {
        log.push_str(&format!("captured {vm} {arg} {}\n", check_ext(vm, arg)));
    }
    let moved = pin(1);
    // SAFETY: closing a descriptor this function owns.
    unsafe { libc::close(vm) };
    log.push_str(&format!("closed {vm}\n"));
    let vm2 = ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) as i32;
    assert!(vm2 >= 0);
    log.push_str(&format!("captured {vm2} 4 {}\n", check_ext(vm2, 4)));
    log.push_str(&format!("moved {moved}\n"));
    std::fs::write(out, log).unwrap();
}

/// A thread's calls batched on one CPU come before what it did next on another CPU, with
/// the device their descriptor had then (the batch reaches the ring after the close).
#[test]
fn batched_calls_keep_their_place_when_the_thread_moves_to_another_cpu() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (text, header, recs, summary) = record_kvm_child("child_migrate");
    assert_eq!(summary.dropped, 0);
    assert_eq!(
        header
            .extra
            .iter()
            .find(|(k, _)| k == "call_batch")
            .map(|(_, v)| v.as_str()),
        Some(probe_common_batch().as_str()),
        "calls are batched"
    );
    let want = captured_lines(&text);
    let closed: i32 = text
        .lines()
        .find_map(|l| l.strip_prefix("closed "))
        .unwrap()
        .parse()
        .unwrap();
    // The child's records in trace order: its checks and the close of the first VM fd.
    let mut seen = Vec::new();
    for r in &recs {
        match r {
            Record::Ioctl(i) if i.cmd == KVM_CHECK_EXTENSION => {
                seen.push(format!("captured {} {} {}", i.fd, i.arg, i.ret));
                assert_eq!(i.dev, header.devices[0].dev, "device of {i:?} in {recs:#?}");
            }
            Record::Fd(f) if f.op == FdOp::Close && f.fd == closed => {
                seen.push(format!("closed {}", f.fd));
            }
            _ => {}
        }
    }
    let mut expect: Vec<String> = want[..3]
        .iter()
        .map(|(fd, arg, ret)| format!("captured {fd} {arg} {ret}"))
        .collect();
    expect.push(format!("closed {closed}"));
    let (fd, arg, ret) = want[3];
    expect.push(format!("captured {fd} {arg} {ret}"));
    // (the second VM fd is closed when the child exits)
    seen.truncate(expect.len());
    assert_eq!(seen, expect, "trace order against the child's:\n{text}");
}

/// Calls per batch as the trace header states it when batching is on.
fn probe_common_batch() -> String {
    probe_common::BATCH_LEN.to_string()
}

#[test]
fn dup_copies_of_watched_fds_are_captured() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (text, header, recs, summary) = record_kvm_child("child_dup");
    let want = captured_lines(&text);
    assert_eq!(want.len(), 11, "{text}");
    let calls: Vec<&IoctlRecord> = ioctls(&recs)
        .into_iter()
        .filter(|c| c.cmd == KVM_CHECK_EXTENSION)
        .collect();
    let got: Vec<(i32, u64, i64)> = calls.iter().map(|c| (c.fd, c.arg, c.ret)).collect();
    assert_eq!(
        got, want,
        "calls on copies, and none on replaced or closed ones:\n{text}"
    );
    let kvm_dev = header.devices[0].dev;
    assert!(calls.iter().all(|c| c.dev == kvm_dev), "{calls:#?}");
    let dups = recs
        .iter()
        .filter(
            |r| matches!(r, Record::Fd(f) if f.op == FdOp::Derived && f.path.starts_with("dup:")),
        )
        .count();
    assert_eq!(dups, 10, "ten copies announced");
    assert_eq!(summary.dropped, 0);
}

#[test]
fn fd_cache_and_derived_set_follow_close_dup2_close_range_and_exec() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (text, _, recs, summary) = record_kvm_child("child_fdcache");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let want = captured_lines(&text);
    assert_eq!(want.len(), 11, "{text}");
    assert_eq!(
        lines.iter().filter(|l| l[0] == "ignored").count(),
        6,
        "{text}"
    );
    let got: Vec<(i32, u64, i64)> = ioctls(&recs)
        .into_iter()
        .filter(|c| c.cmd == KVM_CHECK_EXTENSION)
        .map(|c| (c.fd, c.arg, c.ret))
        .collect();
    assert_eq!(
        got, want,
        "calls on device and VM fds only; none on reused, closed or exec-closed numbers:\n{text}"
    );
    // The VM fds closed by close_range and by the exec are reported closed.
    for l in lines.iter().filter(|l| l[0] == "closed") {
        let fd: i32 = l[1].parse().unwrap();
        assert!(
            recs.iter()
                .any(|r| matches!(r, Record::Fd(f) if f.op == FdOp::Close && f.fd == fd)),
            "no close of {fd}:\n{text}"
        );
    }
    assert_eq!(summary.dropped, 0);
}

/// A thread keeps its in-flight slot from call to call and frees it when it exits: with
/// 16 hash slots (every thread id above the array's single entry), 100 threads one after
/// the other each make a captured call, and none is refused for want of a slot; the same
/// with the default array indexed by thread id.
#[test]
fn exited_threads_free_their_inflight_slots() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kvm = std::fs::File::open("/dev/kvm").expect("open /dev/kvm");
    let fd = kvm.as_raw_fd();
    for thread_slots in [Some(1), None] {
        let mut b = probe::Probe::builder()
            .device("/dev/kvm")
            .pid(std::process::id())
            .inflight_slots(16)
            .descriptors(kvm_descriptors());
        if let Some(n) = thread_slots {
            b = b.thread_slots(n);
        }
        let mut p = b.build().expect("probe");
        const THREADS: u64 = 100;
        const ARG0: u64 = 0x5107_0000;
        for i in 0..THREADS {
            std::thread::spawn(move || {
                ioctl(fd, KVM_CHECK_EXTENSION, ARG0 + i);
            })
            .join()
            .unwrap();
        }
        // A call without bytes comes as one record (entry and exit), in its CPU's batch
        // until flushed; others as two.
        p.flush_batches().expect("every CPU's batch submitted");
        let (mut enters, mut exits) = (HashMap::new(), 0);
        p.drain(&mut |ev| match ev {
            probe::RawEvent::Enter(e, _) if e.cmd == KVM_CHECK_EXTENSION && e.arg >= ARG0 => {
                enters.insert(e.call_id, e.arg);
            }
            probe::RawEvent::Exit(x, _) if enters.contains_key(&x.call_id) => exits += 1,
            probe::RawEvent::Call(c) if c.cmd == KVM_CHECK_EXTENSION && c.arg >= ARG0 => {
                assert!(c.ts_exit >= c.ts_enter && c.ts_enter > 0, "{c:?}");
                enters.insert(c.call_id, c.arg);
                exits += 1;
            }
            _ => {}
        });
        let drops: Vec<u64> = p
            .drop_counts()
            .iter()
            .map(|per_cpu| per_cpu.iter().sum())
            .collect();
        assert!(
            drops.iter().all(|&d| d == 0),
            "thread slots {thread_slots:?}: drops by cause: {drops:?}"
        );
        assert_eq!(
            enters.len() as u64,
            THREADS,
            "thread slots {thread_slots:?}"
        );
        assert_eq!(exits, THREADS, "thread slots {thread_slots:?}");
    }
}

#[test]
fn kvm_workload_is_captured_exactly() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kvm.log");
    let trace = dir.path().join("kvm.dxtrace");
    let bpf_before = bpf_fds();
    let summary = run(RecordOptions {
        devices: vec!["/dev/kvm".into()],
        schemas: vec!["kvm".into()],
        command: child_argv("child_kvm", &log, &[]),
        output: trace.clone(),
        descriptors: kvm_descriptors(),
        ..Default::default()
    });
    assert_eq!(summary.exit_code, Some(0), "workload failed");
    assert_eq!(
        bpf_fds(),
        bpf_before,
        "programs, links or maps left open after stop"
    );

    let expected: Vec<Vec<String>> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(String::from).collect())
        .collect();
    let (header, recs) = read_trace(&trace);
    assert_eq!(header.devices.len(), 1);
    assert_eq!(header.devices[0].kind, "char");
    assert!(!header.vmbus.active);
    assert!(
        header.vmbus.detail.contains("kallsyms"),
        "header must say why VMBus is not captured: {:?}",
        header.vmbus.detail
    );
    let calls = ioctls(&recs);
    let got: Vec<String> = calls.iter().map(|c| format!("{:x}", c.cmd)).collect();
    let want: Vec<String> = expected.iter().map(|e| e[0].clone()).collect();
    assert_eq!(got, want, "captured ioctls differ from the workload's log");
    assert_eq!(summary.dropped, 0);
    let kvm_dev = header.devices[0].dev;
    for (c, e) in calls.iter().zip(&expected) {
        let ret: i64 = e[1].parse().unwrap();
        assert_eq!(c.ret, ret, "return value of {:x}", c.cmd);
        assert!(c.ts_exit >= c.ts_enter && c.ts_enter > 0);
        assert_eq!(
            c.dev, kvm_dev,
            "derived fds inherit the device of their creator"
        );
        let size = ((c.cmd >> 16) & 0x3fff) as usize;
        if size > 0 {
            let sin = c.buffer(BufferRole::StructIn, "").expect("struct in");
            assert_eq!(sin.data, unhex(&e[2]), "struct in of {:x}", c.cmd);
            assert_eq!(sin.len as usize, size);
            let sout = c.buffer(BufferRole::StructOut, "").expect("struct out");
            assert_eq!(sout.data, unhex(&e[3]), "struct out of {:x}", c.cmd);
        } else {
            assert!(c.buffers.is_empty(), "no buffers for _IO ioctls");
        }
        if c.cmd == KVM_GET_SUPPORTED_CPUID {
            let b = c
                .buffer(BufferRole::PtrOut, "entries")
                .expect("trailing cpuid entries");
            assert_eq!(b.data, unhex(&e[4]), "cpuid entries");
            let b = c.buffer(BufferRole::PtrIn, "entries").expect("entries in");
            assert_eq!(b.data.len(), CPUID_NENT * 40);
        }
        if c.cmd == KVM_GET_DIRTY_LOG {
            let b = c
                .buffer(BufferRole::PtrOut, "dirty_bitmap")
                .expect("dirty bitmap followed through its pointer");
            assert_eq!(b.data, unhex(&e[4]));
            assert_eq!(b.flags, 0);
        }
    }
    // Fd events: open of /dev/kvm, two derived fds, three closes.
    let fds: Vec<&traces::FdEvent> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Fd(f) => Some(f),
            _ => None,
        })
        .collect();
    let ops: Vec<FdOp> = fds.iter().map(|f| f.op).collect();
    assert_eq!(
        ops,
        vec![
            FdOp::Open,
            FdOp::Derived,
            FdOp::Derived,
            FdOp::Close,
            FdOp::Close,
            FdOp::Close
        ],
        "{fds:#?}"
    );
    assert_eq!(fds[0].path, "/dev/kvm");
    assert_eq!(fds[0].dev, kvm_dev);
    assert!(
        recs.iter()
            .any(|r| matches!(r, Record::Process(p) if p.pid == calls[0].pid))
    );
    assert!(recs.iter().any(|r| matches!(r, Record::Stats(_))));
}

#[test]
fn small_ringbuf_flood_drop_counts_add_up() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flood.log");
    let trace = dir.path().join("flood.dxtrace");
    let summary = run(RecordOptions {
        devices: vec!["/dev/kvm".into()],
        command: child_argv("child_flood", &log, &["200000"]),
        output: trace.clone(),
        ringbuf_size: Some(4096),
        ..Default::default()
    });
    assert_eq!(summary.exit_code, Some(0));
    let made: u64 = std::fs::read_to_string(&log).unwrap().parse().unwrap();
    let (_, recs) = read_trace(&trace);
    let seen = ioctls(&recs).len() as u64;
    let mut by_reason: HashMap<String, u64> = HashMap::new();
    for r in &recs {
        if let Record::Dropped(d) = r {
            assert!(d.cpu.is_some(), "drops are per CPU");
            *by_reason.entry(d.reason.clone()).or_default() += d.count;
        }
    }
    let lost_calls = by_reason.get("ringbuf_full").copied().unwrap_or(0)
        + by_reason.get("inflight_full").copied().unwrap_or(0);
    assert!(
        lost_calls > 0,
        "a 4 KiB ring under a flood must drop: {by_reason:?}"
    );
    assert_eq!(
        seen + lost_calls,
        made,
        "events seen ({seen}) + dropped calls ({lost_calls}) != calls made ({made}); {by_reason:?}"
    );
}

/// The uprobe target is the vmbus_target example (cargo test builds examples): this test
/// binary cannot export the driver's symbols itself, because it links driver-core, whose
/// emulator exports them for real.
fn vmbus_target() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/vmbus_target");
    assert!(
        target.exists(),
        "{} missing: run the tests with `cargo test` (it builds the examples)",
        target.display()
    );
    target
}

/// Four threads send on one channel at once, each send taking its request id from the
/// shared counter some time after it was called (as the driver's does): the id read at
/// the call would often be another send's. The probe takes it from `vmbus_sendpacket`, so
/// every request and reply must carry exactly the id the send took (the target writes it
/// into the reply).
#[test]
fn vmbus_request_ids_are_exact_under_concurrent_sends() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("race.dxtrace");
    let target = vmbus_target();
    let (threads, n) = (4usize, 300usize);
    let summary = run(RecordOptions {
        devices: vec!["/dev/kvm".into()],
        command: vec![
            target.display().to_string(),
            "--race".into(),
            threads.to_string(),
            n.to_string(),
        ],
        output: trace.clone(),
        uprobe_binary: Some(target.clone()),
        ..Default::default()
    });
    assert_eq!(summary.exit_code, Some(0));
    assert_eq!(summary.dropped, 0);
    let (header, recs) = read_trace(&trace);
    assert!(
        header
            .vmbus
            .detail
            .contains("request ids from vmbus_sendpacket"),
        "{:?}",
        header.vmbus.detail
    );
    let msgs: Vec<&traces::VmbusMessage> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Vmbus(v) => Some(v),
            _ => None,
        })
        .collect();
    let reqs: Vec<u64> = msgs
        .iter()
        .filter(|m| m.dir == VmbusDir::GuestToHost)
        .map(|m| m.request_id)
        .collect();
    let mut sorted = reqs.clone();
    sorted.sort_unstable();
    let want: Vec<u64> = (1..=(threads * n) as u64).collect();
    assert_eq!(sorted, want, "each send's request id exactly once");
    let mut wrong = 0;
    let mut replies = 0;
    for m in msgs.iter().filter(|m| m.dir == VmbusDir::HostReply) {
        replies += 1;
        assert_eq!(m.channel, Some(0x1234), "the channel's LUID");
        let took = u64::from_le_bytes(m.bytes[..8].try_into().unwrap());
        if m.request_id != took {
            wrong += 1;
        }
    }
    assert_eq!(replies, threads * n);
    assert_eq!(
        wrong, 0,
        "replies whose request id is not the one their send took"
    );
}

#[test]
fn vmbus_uprobes_capture_requests_and_replies() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("vmbus.log");
    let trace = dir.path().join("vmbus.dxtrace");
    let target = vmbus_target();
    let summary = run(RecordOptions {
        devices: vec!["/dev/kvm".into()],
        command: vec![
            target.display().to_string(),
            "--log".into(),
            log.display().to_string(),
        ],
        output: trace.clone(),
        uprobe_binary: Some(target.clone()),
        ..Default::default()
    });
    assert_eq!(summary.exit_code, Some(0));
    let (header, recs) = read_trace(&trace);
    assert!(header.vmbus.active, "{:?}", header.vmbus.detail);
    assert!(header.vmbus.detail.starts_with("uprobe:"));
    let msgs: Vec<&traces::VmbusMessage> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Vmbus(v) => Some(v),
            _ => None,
        })
        .collect();
    let lines: Vec<Vec<String>> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(String::from).collect())
        .collect();
    // Each sync line is a request + a reply; each async line one message.
    let mut it = msgs.iter();
    for l in &lines {
        let req = it.next().expect("request");
        assert_eq!(req.dir, VmbusDir::GuestToHost);
        if l[0] == "sync" {
            assert!(!req.is_async);
            assert_eq!(req.bytes, unhex(&l[2]), "request bytes");
            assert_eq!(req.len as usize, req.bytes.len());
            assert_eq!(req.flags, 0);
            let rep = it.next().expect("reply");
            assert_eq!(rep.dir, VmbusDir::HostReply);
            assert_eq!(rep.status, Some(l[1].parse().unwrap()));
            assert_eq!(rep.bytes, unhex(&l[3]), "reply bytes");
        } else {
            assert!(req.is_async);
            assert_eq!(req.bytes, unhex(&l[2]));
        }
    }
    assert!(it.next().is_none(), "extra VMBus records");
    assert_eq!(summary.dropped, 0);
}

/// Ids listed by `bpftool KIND show --json` (`prog`, `map`, `link`), with each link's
/// program id.
fn bpftool_ids(kind: &str) -> Vec<(u32, Option<u32>)> {
    let out = std::process::Command::new("bpftool")
        .args([kind, "show", "--json"])
        .output()
        .expect("bpftool (the CI image has it)");
    assert!(
        out.status.success(),
        "bpftool {kind} show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Flat scan of the JSON array: each object has "id" first, links a "prog_id".
    let mut v = Vec::new();
    for obj in text.split('{').skip(1) {
        let num = |key: &str| {
            obj.split(&format!("\"{key}\":"))
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .and_then(|n| n.trim().parse::<u32>().ok())
        };
        if let Some(id) = num("id") {
            v.push((id, num("prog_id")));
        }
    }
    v
}

#[test]
fn repeated_start_stop_leaves_no_programs_maps_or_links() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fds_before = bpf_fds();
    let mut progs = Vec::new();
    let mut maps = Vec::new();
    for _ in 0..5 {
        let p = probe::Probe::builder()
            .device("/dev/kvm")
            .descriptors(kvm_descriptors())
            .build()
            .expect("probe starts");
        let (pr, ma) = p.kernel_ids();
        assert!(
            pr.len() >= 3,
            "the syscall hooks and the fork tracepoint are loaded: {pr:?}"
        );
        assert!(!ma.is_empty(), "the programs use maps");
        // The check below can see them while the probe lives.
        let live: Vec<u32> = bpftool_ids("prog").iter().map(|x| x.0).collect();
        assert!(
            pr.iter().all(|id| live.contains(id)),
            "bpftool lists {pr:?}"
        );
        // Tracepoints and uprobes are perf-event links where the kernel has them (≥ 5.15);
        // older kernels attach them without a link object, so their absence is not
        // checked here, only that none outlives the probe.
        progs.extend(pr);
        maps.extend(ma);
        drop(p);
    }
    // The kernel frees a program after an RCU grace period once its last fd and link are
    // closed (raw tracepoint links release it from a deferred work item), and its maps
    // after that: give both a bounded moment before calling them leaked.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let left = loop {
        let left: Vec<u32> = bpftool_ids("prog")
            .into_iter()
            .map(|x| x.0)
            .filter(|id| progs.contains(id))
            .collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(left.is_empty(), "programs left loaded: {left:?}");
    let left = loop {
        let left: Vec<u32> = bpftool_ids("map")
            .into_iter()
            .map(|x| x.0)
            .filter(|id| maps.contains(id))
            .collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(left.is_empty(), "maps left behind: {left:?}");
    let left: Vec<(u32, Option<u32>)> = bpftool_ids("link")
        .into_iter()
        .filter(|l| l.1.is_some_and(|p| progs.contains(&p)))
        .collect();
    assert!(left.is_empty(), "links left behind: {left:?}");
    assert_eq!(bpf_fds(), fds_before, "bpf descriptors left open");
}

#[test]
fn doctor_reports_this_machine() {
    need_root();
    if !is_root() || child_out().is_some() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let checks = probe::doctor::run();
    let get = |n: &str| {
        checks
            .iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("no {n} check in {checks:#?}"))
    };
    use probe::doctor::Status;
    assert_eq!(get("tracepoint programs").status, Status::Ok, "{checks:#?}");
    assert_eq!(
        get("raw tracepoint programs").status,
        Status::Ok,
        "{checks:#?}"
    );
    assert_eq!(get("uprobe programs").status, Status::Ok, "{checks:#?}");
    assert_eq!(get("kernel BTF").status, Status::Ok);
    assert_eq!(get("privileges").status, Status::Ok);
    // Facts measured on the CI machine kind: no dxgkrnl, no kprobes, fentry refused.
    if !Path::new("/dev/dxg").exists() {
        assert_eq!(get("/dev/dxg").status, Status::Warn);
        assert_eq!(get("dxgkrnl symbols").status, Status::Warn);
    }
    for c in &checks {
        if matches!(c.status, Status::Warn | Status::Fail) {
            assert!(!c.fix.is_empty(), "{} has no fix text", c.name);
        }
    }
}
