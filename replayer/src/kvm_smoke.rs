//! A tiny real-mode VMM run through any [`Backend`]: one VM, 64 KiB of guest memory
//! holding `mov al, 0x2a; add al, 1; hlt`, one vCPU, run to HLT, read the registers back.
//!
//! Wrapped in [`crate::capture::RecordingBackend`] over `RealDevice` it produces a kvm
//! capture that replay tests and the benchmark use while the eBPF probe cannot record one
//! on the machine. It mirrors `dxtrace workload kvm-smoke` (driver-core) without depending
//! on it, so replay tests do not break when that workload changes.

use std::io;
use std::path::Path;

use driver_core::Backend;
use driver_core::kvm::{Regs, Sregs, UserspaceMemoryRegion};
use driver_core::layout::Pod;
use driver_core::schema::lookup_name;

/// Guest code: `mov al, 0x2a; add al, 1; hlt` at guest physical 0x1000.
pub const GUEST_CODE: &[u8] = &[0xb0, 0x2a, 0x04, 0x01, 0xf4];
/// Guest memory size.
pub const MEM_SIZE: usize = 0x10000;

/// What the run observed.
#[derive(Debug, Clone, Copy)]
pub struct SmokeOutcome {
    /// `rax` after HLT (0x2b when the guest ran).
    pub rax: u64,
    /// `rip` after HLT.
    pub rip: u64,
    /// Ioctls issued.
    pub ioctls: u32,
}

fn code(name: &str) -> u32 {
    lookup_name(name)
        .unwrap_or_else(|| panic!("{name} is in the kvm table"))
        .code
}

fn check(what: &str, r: i64) -> io::Result<i64> {
    if r < 0 {
        Err(io::Error::other(format!(
            "{what} failed: {}",
            io::Error::from_raw_os_error(-r as i32)
        )))
    } else {
        Ok(r)
    }
}

/// Runs the smoke VM on `device` (normally `/dev/kvm`) through `b`. Closes every fd.
pub fn run<B: Backend>(b: &mut B, device: &Path) -> io::Result<SmokeOutcome> {
    let mut n = 0u32;
    let mut io = |b: &mut B, fd: i32, name: &str, arg: u64| -> io::Result<i64> {
        n += 1;
        // SAFETY: each call passes either a plain value (`_IO` requests) or the address of
        // a live, correctly sized mirror struct owned by this function.
        check(name, unsafe { b.ioctl(fd, code(name), arg) })
    };
    let sys = b.open(device, libc::O_RDWR)?;
    io(b, sys, "KVM_GET_API_VERSION", 0)?;
    io(b, sys, "KVM_CHECK_EXTENSION", 3)?; // KVM_CAP_USER_MEMORY
    let vm = io(b, sys, "KVM_CREATE_VM", 0)? as i32;
    let mem = crate::mem::Region::anonymous(MEM_SIZE, &[], "guest_memory")?;
    // SAFETY: the region is MEM_SIZE writable bytes owned by `mem`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            GUEST_CODE.as_ptr(),
            (mem.addr() as *mut u8).add(0x1000),
            GUEST_CODE.len(),
        )
    };
    let region = UserspaceMemoryRegion {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: mem.addr(),
    };
    io(
        b,
        vm,
        "KVM_SET_USER_MEMORY_REGION",
        &region as *const _ as u64,
    )?;
    let mmap_size = io(b, sys, "KVM_GET_VCPU_MMAP_SIZE", 0)?;
    let vcpu = io(b, vm, "KVM_CREATE_VCPU", 0)? as i32;
    let run = crate::mem::Region::of_fd(vcpu, mmap_size as usize, "kvm_run")?;
    let mut sregs = Sregs::zeroed();
    io(
        b,
        vcpu,
        "KVM_GET_SREGS",
        sregs.as_bytes_mut().as_mut_ptr() as u64,
    )?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    io(b, vcpu, "KVM_SET_SREGS", &sregs as *const _ as u64)?;
    let regs = Regs {
        rip: 0x1000,
        rflags: 2,
        ..Regs::zeroed()
    };
    io(b, vcpu, "KVM_SET_REGS", &regs as *const _ as u64)?;
    io(b, vcpu, "KVM_RUN", 0)?;
    // kvm_run.exit_reason (u32 at offset 8): KVM_EXIT_HLT = 5.
    let exit = u32::from_le_bytes(run.bytes()[8..12].try_into().expect("4 bytes"));
    let mut out = Regs::zeroed();
    io(
        b,
        vcpu,
        "KVM_GET_REGS",
        out.as_bytes_mut().as_mut_ptr() as u64,
    )?;
    drop(run);
    b.close(vcpu)?;
    b.close(vm)?;
    b.close(sys)?;
    if exit != 5 {
        return Err(io::Error::other(format!(
            "guest exited with reason {exit}, expected KVM_EXIT_HLT (5)"
        )));
    }
    Ok(SmokeOutcome {
        rax: out.rax,
        rip: out.rip,
        ioctls: n,
    })
}
