//! Perfetto / Chrome trace-event JSON (the "JSON Object Format"; opens in
//! ui.perfetto.dev and chrome://tracing).
//!
//! * `ts` and `dur` are microseconds of `CLOCK_MONOTONIC`, written with exactly three
//!   decimals so nanoseconds survive.
//! * Each ioctl is a complete event (`ph: "X"`, `cat: "ioctl"`) on its process and
//!   thread; `args` hold `id`, `ret`, `status`, `bytes_in`, `bytes_out`, `host_us`.
//!   A thread's calls never overlap in a real capture; where a trace has overlapping calls
//!   on one thread (synthetic traces do), the ones that would break the nesting go to an
//!   extra track named `… (overlap N)` (tid = `N << 32 | tid`), so every track nests.
//! * Each VMBus channel is a pseudo-process (`pid` ≥ [`VMBUS_PID_BASE`], named
//!   `VMBus global channel` or `VMBus adapter 0x…`); a request and its reply are an async
//!   slice (`ph: "b"` / `"e"`, `cat: "vmbus"`, `id` = the request's row); async sends,
//!   host-initiated messages and replies without request are instant events (`ph: "i"`).
//! * A flow (`ph: "s"` on the ioctl's track → `"f"` on the channel) links an ioctl to
//!   each request it caused.
//! * Counter tracks (`ph: "C"`) `ioctls/s`, `bytes/s`, `vmbus msgs/s` on the pseudo
//!   process `throughput` ([`COUNTER_PID`]).
//! * `ph: "M"` metadata names processes (`comm`) and threads.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::columns::{self, Columns, Progress, vmbus_key_label};
use crate::error::{Result, io_err};
use crate::export::{ExportOptions, ExportSummary};
use crate::names;
use crate::stats::throughput;

/// First pid of the VMBus channel pseudo-processes (above Linux's `pid_max` limit of
/// 2^22, so they never collide with a real process).
pub const VMBUS_PID_BASE: u64 = 1 << 30;
/// Pid of the throughput counters' pseudo-process.
pub const COUNTER_PID: u64 = VMBUS_PID_BASE - 1;

/// Microseconds with three decimals, from integer nanoseconds (exact).
struct Us(u64);

impl fmt::Display for Us {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".into())
}

/// Writes the trace-event JSON of `input` to `out`.
pub fn export_perfetto(
    input: &Path,
    out: &Path,
    opts: &ExportOptions,
    progress: Option<Progress<'_>>,
) -> Result<ExportSummary> {
    let reader = super::open(input)?;
    let phases = super::Phases::new(&reader, progress);
    let c = columns::load_reader(&reader, opts.threads, Some(&|d, t| phases.decoded(d, t)));
    let f = File::create(out).map_err(io_err(out))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let tick = |done, all| phases.written(done, all);
    let n = write_events(
        &c,
        &input.display().to_string(),
        opts.bucket_ns,
        &tick,
        &mut w,
    )
    .and_then(|n| w.flush().map(|_| n))
    .map_err(io_err(out))
    .and_then(|r| r)?;
    Ok(ExportSummary {
        files: vec![out.to_path_buf()],
        rows: n,
        decode_errors: c.decode_errors.clone(),
    })
}

/// Assigns each ioctl a track on its thread so that every track's slices nest: row →
/// lane (0 = the thread itself).
fn lanes(c: &Columns) -> Vec<u32> {
    let io = &c.ioctls;
    let mut per_thread: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
    for i in 0..io.len() {
        per_thread
            .entry((io.pid[i], io.tid[i]))
            .or_default()
            .push(i);
    }
    let mut lane = vec![0u32; io.len()];
    for rows in per_thread.values_mut() {
        // Enclosing slices first: by start, then longest first.
        rows.sort_by_key(|&i| (io.ts_enter[i], std::cmp::Reverse(io.ts_exit[i])));
        let mut stacks: Vec<Vec<u64>> = Vec::new();
        for &i in rows.iter() {
            let (s, e) = (io.ts_enter[i], io.ts_exit[i].max(io.ts_enter[i]));
            let mut placed = false;
            for (l, st) in stacks.iter_mut().enumerate() {
                while st.last().is_some_and(|&end| end <= s) {
                    st.pop();
                }
                if st.last().is_none_or(|&end| end >= e) {
                    st.push(e);
                    lane[i] = l as u32;
                    placed = true;
                    break;
                }
            }
            if !placed {
                lane[i] = stacks.len() as u32;
                stacks.push(vec![e]);
            }
        }
    }
    lane
}

#[expect(
    clippy::needless_range_loop,
    reason = "rows span a dozen parallel columns; one index reads clearer than a zip"
)]
fn write_events(
    c: &Columns,
    file: &str,
    bucket_ns: u64,
    tick: &dyn Fn(u64, u64),
    w: &mut impl Write,
) -> std::io::Result<Result<u64>> {
    let io = &c.ioctls;
    let v = &c.vmbus;
    // Rows written of the ioctl and VMBus ones (the bulk of the file), for the progress.
    let rows = (io.len() + v.len()) as u64;
    let tick_at = |done: usize| {
        if done.is_multiple_of(65536) {
            tick(done as u64, rows);
        }
    };
    let mut n = 0u64;
    write!(
        w,
        "{{\"displayTimeUnit\":\"ns\",\"otherData\":{{\"generator\":\"dxtrace export\",\"file\":{}}},\"traceEvents\":[",
        js(file)
    )?;
    let mut first = true;
    let mut ev = |w: &mut dyn Write, s: fmt::Arguments<'_>| -> std::io::Result<()> {
        if !first {
            w.write_all(b",\n")?;
        } else {
            w.write_all(b"\n")?;
        }
        first = false;
        n += 1;
        w.write_fmt(s)
    };

    // Processes and threads.
    let mut comm: HashMap<u32, &str> = HashMap::new();
    for p in &c.processes {
        comm.insert(p.pid, p.comm.as_str());
    }
    let lane = lanes(c);
    let mut threads: Vec<(u32, u32, u32)> = (0..io.len())
        .map(|i| (io.pid[i], io.tid[i], lane[i]))
        .collect();
    threads.sort_unstable();
    threads.dedup();
    let mut pids: Vec<u32> = threads.iter().map(|t| t.0).collect();
    pids.extend(comm.keys());
    pids.sort_unstable();
    pids.dedup();
    for pid in &pids {
        let name = comm
            .get(pid)
            .map(|c| c.to_string())
            .unwrap_or_else(|| format!("pid {pid}"));
        ev(
            w,
            format_args!(
                "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{pid},\"tid\":0,\"args\":{{\"name\":{}}}}}",
                js(&name)
            ),
        )?;
    }
    let tid_of = |tid: u32, lane: u32| ((lane as u64) << 32) | tid as u64;
    for (pid, tid, l) in &threads {
        let base = comm.get(pid).copied().unwrap_or("thread");
        let name = if *l == 0 {
            format!("{base} {tid}")
        } else {
            format!("{base} {tid} (overlap {l})")
        };
        ev(
            w,
            format_args!(
                "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{pid},\"tid\":{},\"args\":{{\"name\":{}}}}}",
                tid_of(*tid, *l),
                js(&name)
            ),
        )?;
    }

    // Ioctls.
    let names = columns::ioctl_name_cache(&io.cmd);
    let mut status: HashMap<(u32, i64), String> = HashMap::new();
    for i in 0..io.len() {
        tick_at(i);
        let (cmd, ret) = (io.cmd[i], io.ret[i]);
        let st = status
            .entry((cmd, ret))
            .or_insert_with(|| js(&names::status_label(cmd, ret)));
        ev(
            w,
            format_args!(
                "{{\"ph\":\"X\",\"cat\":\"ioctl\",\"name\":{},\"pid\":{},\"tid\":{},\"ts\":{},\"dur\":{},\"args\":{{\"id\":{},\"ret\":{},\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"host_us\":{}}}}}",
                js(&names[&cmd]),
                io.pid[i],
                tid_of(io.tid[i], lane[i]),
                Us(io.ts_enter[i]),
                Us(io.ts_exit[i].saturating_sub(io.ts_enter[i])),
                io.id[i],
                ret,
                st,
                io.bytes_in[i],
                io.bytes_out[i],
                Us(io.host_ns[i]),
            ),
        )?;
    }

    // VMBus channels as pseudo-processes.
    let mut chan_pid: HashMap<Option<u64>, u64> = HashMap::new();
    for ch in &v.channel {
        let k = chan_pid.len() as u64;
        chan_pid.entry(*ch).or_insert(VMBUS_PID_BASE + k);
    }
    let mut chans: Vec<(&Option<u64>, &u64)> = chan_pid.iter().collect();
    chans.sort_by_key(|(_, p)| **p);
    for (ch, pid) in chans {
        let name = match ch {
            None => "VMBus global channel".to_string(),
            Some(luid) => format!("VMBus adapter {luid:#x}"),
        };
        ev(
            w,
            format_args!(
                "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{pid},\"tid\":0,\"args\":{{\"name\":{}}}}}",
                js(&name)
            ),
        )?;
        ev(
            w,
            format_args!(
                "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{pid},\"tid\":{pid},\"args\":{{\"name\":\"messages\"}}}}"
            ),
        )?;
    }
    let mut labels: HashMap<u64, String> = HashMap::new();
    for k in &v.cmd {
        labels.entry(*k).or_insert_with(|| js(&vmbus_key_label(*k)));
    }
    // Request row of each paired reply (the pairing already ran; redo the lookup here
    // rather than widen the columns for one exporter).
    let mut open: HashMap<(Option<u64>, u64), usize> = HashMap::new();
    let mut paired_req = vec![false; v.len()];
    let mut reply_of: Vec<Option<usize>> = vec![None; v.len()];
    for i in 0..v.len() {
        match v.dir[i] {
            0 if !v.is_async[i] => {
                open.insert((v.channel[i], v.request_id[i]), i);
            }
            1 if v.rtt_ns[i].is_some() => {
                if let Some(j) = open.remove(&(v.channel[i], v.request_id[i])) {
                    paired_req[j] = true;
                    reply_of[i] = Some(j);
                }
            }
            _ => {}
        }
    }
    let ioctl_row: HashMap<u64, usize> = (0..io.len()).map(|i| (io.id[i], i)).collect();
    let mut flow = 0u64;
    for i in 0..v.len() {
        tick_at(io.len() + i);
        let pid = chan_pid[&v.channel[i]];
        let name = &labels[&v.cmd[i]];
        match v.dir[i] {
            0 if paired_req[i] => {
                ev(
                    w,
                    format_args!(
                        "{{\"ph\":\"b\",\"cat\":\"vmbus\",\"name\":{name},\"id\":{i},\"pid\":{pid},\"tid\":{pid},\"ts\":{},\"args\":{{\"request_id\":{},\"len\":{}}}}}",
                        Us(v.ts[i]),
                        v.request_id[i],
                        v.len[i]
                    ),
                )?;
            }
            1 if reply_of[i].is_some() => {
                let j = reply_of[i].unwrap_or(i);
                ev(
                    w,
                    format_args!(
                        "{{\"ph\":\"e\",\"cat\":\"vmbus\",\"name\":{name},\"id\":{j},\"pid\":{pid},\"tid\":{pid},\"ts\":{},\"args\":{{\"len\":{},\"status\":{}}}}}",
                        Us(v.ts[i]),
                        v.len[i],
                        v.status[i].map_or("null".to_string(), |s| s.to_string())
                    ),
                )?;
            }
            d => {
                let dir = ["guest_to_host", "host_reply", "host_to_guest"][(d as usize).min(2)];
                ev(
                    w,
                    format_args!(
                        "{{\"ph\":\"i\",\"s\":\"t\",\"cat\":\"vmbus\",\"name\":{name},\"pid\":{pid},\"tid\":{pid},\"ts\":{},\"args\":{{\"dir\":\"{dir}\",\"len\":{}}}}}",
                        Us(v.ts[i]),
                        v.len[i]
                    ),
                )?;
            }
        }
        // Flow from the ioctl that caused a request to the request.
        if v.dir[i] == 0
            && let Some(row) = v.ioctl_id[i].and_then(|id| ioctl_row.get(&id).copied())
        {
            let at = v.ts[i].clamp(io.ts_enter[row], io.ts_exit[row].max(io.ts_enter[row]));
            flow += 1;
            ev(
                w,
                format_args!(
                    "{{\"ph\":\"s\",\"cat\":\"flow\",\"name\":\"ioctl→vmbus\",\"id\":{flow},\"pid\":{},\"tid\":{},\"ts\":{}}}",
                    io.pid[row],
                    tid_of(io.tid[row], lane[row]),
                    Us(at)
                ),
            )?;
            ev(
                w,
                format_args!(
                    "{{\"ph\":\"f\",\"bp\":\"e\",\"cat\":\"flow\",\"name\":\"ioctl→vmbus\",\"id\":{flow},\"pid\":{pid},\"tid\":{pid},\"ts\":{}}}",
                    Us(v.ts[i])
                ),
            )?;
        }
    }

    // Throughput counters.
    let tp = match throughput(c, bucket_ns) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    if !tp.buckets.is_empty() {
        ev(
            w,
            format_args!(
                "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{COUNTER_PID},\"tid\":0,\"args\":{{\"name\":\"throughput\"}}}}"
            ),
        )?;
    }
    for b in &tp.buckets {
        let ts = Us(c.ts_min + b.start_ns);
        for (name, val) in [
            ("ioctls/s", b.ioctls_per_s),
            ("bytes/s", b.bytes_per_s),
            ("vmbus msgs/s", b.vmbus_messages_per_s),
        ] {
            ev(
                w,
                format_args!(
                    "{{\"ph\":\"C\",\"name\":\"{name}\",\"pid\":{COUNTER_PID},\"tid\":0,\"ts\":{ts},\"args\":{{\"value\":{val}}}}}"
                ),
            )?;
        }
    }
    w.write_all(b"\n]}\n")?;
    Ok(Ok(n))
}
