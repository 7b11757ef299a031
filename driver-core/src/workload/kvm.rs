//! The kvm workload: a real-mode guest that runs `mov $42,%eax; hlt`.

use super::{Runner, WorkloadError};
use crate::ioc::{io, ior, iow};
use crate::kvm::{Regs, UserspaceMemoryRegion};
use crate::layout::Pod;

const KVMIO: u32 = 0xAE;

fn mmap(len: usize, fd: i32, prot: i32, flags: i32) -> Result<*mut u8, WorkloadError> {
    // SAFETY: a fresh mapping; the kernel picks the address.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(WorkloadError::Check(format!(
            "mmap: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(p.cast())
}

/// `kvm-smoke`.
pub fn smoke(r: &mut Runner<'_, '_>) -> Result<(), WorkloadError> {
    let sys = r.fd;
    let v = r.raw("KVM_GET_API_VERSION", io(KVMIO, 0x00), 0)?;
    if v != 12 {
        return Err(WorkloadError::Check(format!("KVM API version {v}")));
    }
    let vm = r.raw("KVM_CREATE_VM", io(KVMIO, 0x01), 0)?;
    if vm < 0 {
        return Err(WorkloadError::Call {
            ioctl: "KVM_CREATE_VM".into(),
            ret: vm,
            what: "create VM".into(),
        });
    }
    r.fd = vm as i32;
    let umem = r.raw("KVM_CHECK_EXTENSION", io(KVMIO, 0x03), 3)?;
    r.raw("KVM_SET_TSS_ADDR", io(KVMIO, 0x47), 0xfffb_d000)?;
    // Guest code first, then the region: a capture of SET_USER_MEMORY_REGION holds it.
    let mem = mmap(
        0x4000,
        -1,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
    )?;
    let code = [0x66u8, 0xb8, 42, 0, 0, 0, 0xf4]; // mov $42,%eax; hlt
    // SAFETY: `mem` is a fresh 16 KiB RW mapping.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.add(0x1000), code.len()) };
    let mut region = UserspaceMemoryRegion::zeroed();
    region.guest_phys_addr = 0;
    region.memory_size = 0x4000;
    region.userspace_addr = mem as u64;
    let rr = r.raw(
        "KVM_SET_USER_MEMORY_REGION",
        iow(KVMIO, 0x46, size_of::<UserspaceMemoryRegion>()),
        &mut region as *mut _ as u64,
    )?;
    let vcpu = r.raw("KVM_CREATE_VCPU", io(KVMIO, 0x41), 0)?;
    r.fd = sys;
    let run_size = r.raw("KVM_GET_VCPU_MMAP_SIZE", io(KVMIO, 0x04), 0)?;
    if rr < 0 || vcpu < 0 || run_size <= 0 {
        return Err(WorkloadError::Check(format!(
            "region {rr}, vcpu {vcpu}, mmap size {run_size}"
        )));
    }
    let run = mmap(
        run_size as usize,
        vcpu as i32,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
    )?;
    r.fd = vcpu as i32;
    let mut sregs = vec![0u8; 312];
    r.raw(
        "KVM_GET_SREGS",
        ior(KVMIO, 0x83, 312),
        sregs.as_mut_ptr() as u64,
    )?;
    // cs.base = 0, cs.selector = 0 (kvm_sregs: cs is the first segment, base@0 selector@16).
    sregs[0..8].fill(0);
    sregs[16..18].fill(0);
    r.raw(
        "KVM_SET_SREGS",
        iow(KVMIO, 0x84, 312),
        sregs.as_mut_ptr() as u64,
    )?;
    let mut regs = Regs::zeroed();
    regs.rip = 0x1000;
    regs.rflags = 2;
    r.raw(
        "KVM_SET_REGS",
        iow(KVMIO, 0x82, size_of::<Regs>()),
        &mut regs as *mut _ as u64,
    )?;
    let mut exit = 0u32;
    for _ in 0..16 {
        let ret = r.raw("KVM_RUN", io(KVMIO, 0x80), 0)?;
        // SAFETY: kvm_run.exit_reason is the u32 at offset 8 of the mapped page.
        exit = unsafe { std::ptr::read_volatile(run.add(8) as *const u32) };
        if ret < 0 || exit == 5 {
            break;
        }
    }
    let mut out = Regs::zeroed();
    r.raw(
        "KVM_GET_REGS",
        ior(KVMIO, 0x81, size_of::<Regs>()),
        &mut out as *mut _ as u64,
    )?;
    r.fd = sys;
    // SAFETY: unmapping our own mappings.
    unsafe {
        libc::munmap(run.cast(), run_size as usize);
        libc::munmap(mem.cast(), 0x4000);
        libc::close(vcpu as i32);
        libc::close(vm as i32);
    }
    r.note(format!(
        "KVM API 12, user-memory extension {umem}, VM fd {vm}, vCPU fd {vcpu}, exit reason {exit} (5 = HLT), rax = {}",
        out.rax
    ));
    if exit != 5 || out.rax != 42 {
        return Err(WorkloadError::Check(format!(
            "guest did not halt with rax=42 (exit {exit}, rax {})",
            out.rax
        )));
    }
    Ok(())
}
