//! A whole capture into a `.dxtrace` file: what `dxtrace record` runs.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use traces::{CaptureSource, DeviceInfo, Header, Record, VmbusCapture, Writer, WriterOptions};

use crate::desc::CmdDescriptor;
use crate::load::{Probe, WatchedDevice};
use crate::{Assembler, ProbeError};

/// What to record.
#[derive(Debug, Clone, Default)]
pub struct RecordOptions {
    /// Devices or FUSE files to watch (`/dev/dxg` when empty).
    pub devices: Vec<PathBuf>,
    /// Schema name per device (`dxg`, `kvm`, or empty), same order as `devices`.
    pub schemas: Vec<String>,
    /// Trace only this process and its descendants.
    pub pid: Option<u32>,
    /// Start this command (argv) under the probe and stop when it exits.
    pub command: Vec<String>,
    /// Output file.
    pub output: PathBuf,
    /// Ring buffer size in bytes (default 4 MiB).
    pub ringbuf_size: Option<u32>,
    /// Binary exporting `dxgvmb_send_sync_msg` / `dxgvmb_send_async_msg` (emulator).
    pub uprobe_binary: Option<PathBuf>,
    /// Attach the uprobes in this process only (the FUSE emulator daemon), whose messages
    /// are then captured although it is not the recorded command.
    pub uprobe_pid: Option<u32>,
    /// Pointer descriptors for the watched devices.
    pub descriptors: Vec<CmdDescriptor>,
}

/// Live numbers for a status line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Seconds since the start.
    pub elapsed: f64,
    /// Ioctl records written.
    pub ioctls: u64,
    /// VMBus records written.
    pub vmbus: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Events lost so far.
    pub dropped: u64,
}

/// What a capture produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordSummary {
    /// Ioctl records written.
    pub ioctls: u64,
    /// VMBus records written.
    pub vmbus: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Lost events (sum of the drop records).
    pub dropped: u64,
    /// Records written in total.
    pub records: u64,
    /// How VMBus capture went (header `vmbus.detail`).
    pub vmbus_detail: String,
    /// Exit code of the recorded command, if one was started (`-signal` if killed).
    pub exit_code: Option<i32>,
}

/// How often the recorder has every CPU submit its batch of calls (see
/// [`Probe::flush_batches`]): records wait about this long to be written in time order.
const BATCH_FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Runs a capture until `stop` resolves (or the started command exits).
pub async fn record(
    opts: RecordOptions,
    stop: impl Future<Output = ()>,
    progress: impl FnMut(&Progress) + Send + 'static,
) -> Result<RecordSummary, ProbeError> {
    let flag = Arc::new(AtomicBool::new(false));
    let f2 = flag.clone();
    let task = tokio::task::spawn_blocking(move || record_blocking(opts, &f2, progress));
    tokio::pin!(task);
    tokio::select! {
        r = &mut task => return r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
        () = stop => flag.store(true, Ordering::SeqCst),
    }
    task.await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn header(opts: &RecordOptions, probe: &Probe) -> Header {
    let mut h = Header::for_this_machine(CaptureSource::Ebpf);
    h.devices = probe
        .devices()
        .iter()
        .enumerate()
        .map(|(i, d): (usize, &WatchedDevice)| DeviceInfo {
            path: d.path.display().to_string(),
            schema: opts.schemas.get(i).cloned().unwrap_or_default(),
            dev: d.dev,
            major: (((d.dev >> 8) & 0xfff) | ((d.dev >> 32) & !0xfff)) as u32,
            minor: ((d.dev & 0xff) | ((d.dev >> 12) & !0xff)) as u32,
            ino: d.ino,
            kind: if d.is_char { "char" } else { "file" }.into(),
        })
        .collect();
    let (active, detail) = probe.vmbus();
    h.vmbus = VmbusCapture {
        active,
        detail: detail.to_string(),
    };
    h.command = opts.command.clone();
    h.extra
        .push(("syscall_hooks".into(), probe.hooks().name().into()));
    // Calls per ring record for calls that carry no bytes (1: no batching); a crash of
    // the recorder can lose up to this many such calls per CPU besides its last second.
    let batch = if probe.batching() {
        probe_common::BATCH_LEN
    } else {
        1
    };
    h.extra.push(("call_batch".into(), batch.to_string()));
    if let Some(p) = opts.pid {
        h.extra.push(("pid".into(), p.to_string()));
    }
    h
}

/// The capture loop, on the calling thread, until `stop` is set or the command exits.
pub fn record_blocking(
    mut opts: RecordOptions,
    stop: &AtomicBool,
    mut progress: impl FnMut(&Progress),
) -> Result<RecordSummary, ProbeError> {
    if opts.devices.is_empty() {
        opts.devices.push("/dev/dxg".into());
    }
    let mut b = Probe::builder().descriptors(opts.descriptors.iter().cloned());
    for d in &opts.devices {
        b = b.device(d);
    }
    if let Some(p) = opts.pid {
        b = b.pid(p);
    }
    if !opts.command.is_empty() {
        b = b.filter_pids();
    }
    if let Some(s) = opts.ringbuf_size {
        b = b.ringbuf_size(s);
    }
    if let Some(u) = &opts.uprobe_binary {
        b = b.uprobe_binary(u);
    }
    if let Some(p) = opts.uprobe_pid {
        b = b.uprobe_pid(p);
    }
    let mut probe = b.build()?;
    let mut child = if opts.command.is_empty() {
        None
    } else {
        Some(spawn_gated(&opts.command, &mut probe)?)
    };
    let mut writer = Writer::create(
        &opts.output,
        &header(&opts, &probe),
        WriterOptions::default(),
    )?;
    let mut asm = Assembler::new(opts.descriptors.iter().cloned());
    let start = Instant::now();
    let mut last_tick = Instant::now();
    let mut err: Option<ProbeError> = None;
    let mut exit_code = None;
    let mut pending: Vec<Record> = Vec::new();
    let mut last_flush = Instant::now();
    loop {
        let finished = stop.load(Ordering::SeqCst) || exit_code.is_some();
        // Every CPU's batch of calls into the ring, then the ring drained: the records
        // made before the flush can be written in time order (see Assembler::release).
        let mark = if last_flush.elapsed() >= BATCH_FLUSH_EVERY {
            last_flush = Instant::now();
            probe.flush_batches()
        } else {
            None
        };
        // The kernel side wakes us only when the ring is an eighth full (see
        // wake_flags in probe/ebpf), so this timeout bounds the latency of quiet periods.
        probe.poll(Duration::from_millis(if finished { 0 } else { 50 }), |ev| {
            asm.push(ev, &mut |r| pending.push(r))
        })?;
        if let Some(mark) = mark {
            asm.release(mark, &mut |r| pending.push(r));
        }
        for r in pending.drain(..) {
            if let Err(e) = writer.push(&r) {
                err.get_or_insert(e.into());
            }
        }
        if last_tick.elapsed() >= Duration::from_millis(250) || finished {
            last_tick = Instant::now();
            // seal a frame that has aged even when no event arrives, so a crash loses at
            // most about `max_frame_age` of events
            if let Err(e) = writer.tick() {
                err.get_or_insert(e.into());
            }
            asm.drops(
                &probe.drop_counts(),
                traces::header::monotonic_ns(),
                &mut |r| pending.push(r),
            );
            progress(&Progress {
                elapsed: start.elapsed().as_secs_f64(),
                ioctls: asm.ioctls,
                vmbus: asm.vmbus_msgs,
                bytes: asm.bytes,
                dropped: asm.dropped,
            });
        }
        if finished {
            // Detach, then one last drain: everything submitted before the programs went
            // is in the ring by now; then the calls still in flight (see Probe::stop).
            probe.stop(&mut |ev| asm.push(ev, &mut |r| pending.push(r)));
            break;
        }
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            use std::os::unix::process::ExitStatusExt;
            exit_code = Some(
                status
                    .code()
                    .unwrap_or_else(|| -status.signal().unwrap_or(0)),
            );
        }
    }
    let now = traces::header::monotonic_ns();
    asm.drops(&probe.drop_counts(), now, &mut |r| pending.push(r));
    asm.finish(&probe.counters(), now, &mut |r| pending.push(r));
    for r in pending.drain(..) {
        writer.push(&r)?;
    }
    let (_, vmbus_detail) = probe.vmbus();
    let vmbus_detail = vmbus_detail.to_string();
    // Detach before finishing the file: nothing more can arrive.
    drop(probe);
    let ws = writer.finish()?;
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(mut c) = child
        && exit_code.is_none()
    {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(RecordSummary {
        ioctls: asm.ioctls,
        vmbus: asm.vmbus_msgs,
        bytes: asm.bytes,
        dropped: asm.dropped,
        records: ws.records,
        vmbus_detail,
        exit_code,
    })
}

/// Starts `argv` held back until its pid is in the probe's filter, so that none of its
/// calls are missed. `std::process::Command::spawn` waits for `exec`, so the hold cannot
/// be in `pre_exec`; a `sh` trampoline waits on a pipe instead and then `exec`s the
/// command in the same process (same pid).
fn spawn_gated(argv: &[String], probe: &mut Probe) -> Result<std::process::Child, ProbeError> {
    let mut fds = [0i32; 2];
    // SAFETY: valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ProbeError::Syscall {
            call: "pipe2",
            source: std::io::Error::last_os_error(),
        });
    }
    let (rd, wr) = (fds[0], fds[1]);
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("read _ <&3; exec 3<&-; exec \"$@\"")
        .arg("dxtrace-gate")
        .args(argv);
    // SAFETY: dup2 is async-signal-safe; it gives the child the read end as fd 3
    // (without O_CLOEXEC, so `sh` keeps it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(rd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // SAFETY: closing our copy of the read end.
    unsafe { libc::close(rd) };
    let child = match spawned {
        Ok(c) => c,
        Err(source) => {
            // SAFETY: closing our write end.
            unsafe { libc::close(wr) };
            return Err(ProbeError::Spawn {
                command: argv[0].clone(),
                source,
            });
        }
    };
    let added = probe.add_pid(child.id());
    // SAFETY: one line from a valid buffer; then close, which also releases the child if
    // the write failed.
    unsafe {
        libc::write(wr, b"g\n".as_ptr().cast(), 2);
        libc::close(wr);
    }
    added?;
    Ok(child)
}
