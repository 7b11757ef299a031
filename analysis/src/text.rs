//! Terminal tables for [`Stats`].

use std::fmt::Write;

use crate::stats::{By, CallStats, Latency, Stats};

/// Human-readable duration (`850ns`, `12.3µs`, `4.56ms`, `1.23s`).
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

/// Human-readable byte count (`512B`, `1.5KiB`, `3.2MiB`).
pub fn fmt_bytes(b: u64) -> String {
    let f = b as f64;
    if b < 1024 {
        format!("{b}B")
    } else if f < 1024.0 * 1024.0 {
        format!("{:.1}KiB", f / 1024.0)
    } else if f < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1}MiB", f / (1024.0 * 1024.0))
    } else {
        format!("{:.2}GiB", f / (1024.0 * 1024.0 * 1024.0))
    }
}

/// A table with left-aligned first column(s) and right-aligned numbers.
struct Table {
    head: Vec<&'static str>,
    left: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: Vec<&'static str>, left: usize) -> Table {
        Table {
            head,
            left,
            rows: Vec::new(),
        }
    }
    fn render(&self, out: &mut String) {
        let mut w: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<String>, out: &mut String| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = w[i] - c.chars().count();
                if i > 0 {
                    s.push_str("  ");
                }
                if i < self.left {
                    s.push_str(c);
                    s.extend(std::iter::repeat_n(' ', pad));
                } else {
                    s.extend(std::iter::repeat_n(' ', pad));
                    s.push_str(c);
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(self.head.iter().map(|h| h.to_string()).collect(), out);
        for r in &self.rows {
            line(r.clone(), out);
        }
    }
}

const CALL_HEAD: [&str; 11] = [
    "calls", "errors", "mean", "p50", "p90", "p99", "max", "in", "out", "host", "host%",
];

fn call_cells(c: &CallStats) -> Vec<String> {
    let l = &c.latency;
    vec![
        c.count.to_string(),
        c.errors.to_string(),
        fmt_ns(l.mean_ns),
        fmt_ns(l.p50_ns as f64),
        fmt_ns(l.p90_ns as f64),
        fmt_ns(l.p99_ns as f64),
        fmt_ns(l.max_ns as f64),
        fmt_bytes(c.bytes_in),
        fmt_bytes(c.bytes_out),
        fmt_ns(c.host_ns as f64),
        format!("{:.1}", c.host_share * 100.0),
    ]
}

fn rtt_cells(l: &Option<Latency>) -> Vec<String> {
    match l {
        Some(l) => vec![
            fmt_ns(l.p50_ns as f64),
            fmt_ns(l.p90_ns as f64),
            fmt_ns(l.p99_ns as f64),
            fmt_ns(l.max_ns as f64),
        ],
        None => vec!["-".into(), "-".into(), "-".into(), "-".into()],
    }
}

impl Stats {
    /// Terminal rendering: a summary, then one table per computed grouping, then the
    /// throughput buckets when `buckets` is set (a peak/mean line otherwise).
    pub fn to_text(&self, buckets: bool) -> String {
        let mut o = String::new();
        let t = &self.totals;
        let span = self.ts_max_ns.saturating_sub(self.ts_min_ns);
        let _ = writeln!(
            o,
            "{}: {} records over {}, {} ioctls ({} failed), {} VMBus messages \
             ({} round trips), {} processes",
            self.file,
            self.records,
            fmt_ns(span as f64),
            t.ioctls,
            t.errors,
            t.vmbus_messages,
            t.round_trips,
            t.processes
        );
        let _ = writeln!(
            o,
            "ioctl time {}, of which waiting on the host {} ({:.1}%); captured {} in, {} out",
            fmt_ns(t.ioctl_ns as f64),
            fmt_ns(t.host_ns as f64),
            if t.ioctl_ns == 0 {
                0.0
            } else {
                t.host_ns as f64 * 100.0 / t.ioctl_ns as f64
            },
            fmt_bytes(t.bytes_in),
            fmt_bytes(t.bytes_out)
        );
        if self.dropped_events > 0 {
            let _ = writeln!(
                o,
                "WARNING: the capture lost {} events",
                self.dropped_events
            );
        }
        for e in &self.decode_errors {
            let _ = writeln!(o, "WARNING: unreadable frame, its records are missing: {e}");
        }
        if let Some(rows) = &self.by_ioctl {
            let _ = writeln!(o, "\nper ioctl");
            let mut head = vec!["ioctl"];
            head.extend(CALL_HEAD);
            head.push("failures");
            let mut tb = Table::new(head, 1);
            for r in rows {
                let mut cells = vec![r.name.clone()];
                cells.extend(call_cells(&r.calls));
                let f: Vec<String> = r
                    .errors_by_status
                    .iter()
                    .map(|s| format!("{}×{}", s.count, s.status))
                    .collect();
                cells.push(f.join(", "));
                tb.rows.push(cells);
            }
            tb.render(&mut o);
        }
        for (title, rows) in [
            ("per process", &self.by_process),
            ("per thread", &self.by_thread),
        ] {
            let Some(rows) = rows else { continue };
            let _ = writeln!(o, "\n{title}");
            let mut head = vec!["pid", "tid", "comm"];
            head.extend(CALL_HEAD);
            let mut tb = Table::new(head, 3);
            for r in rows {
                let mut cells = vec![
                    r.pid.to_string(),
                    r.tid.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                    r.comm.clone().unwrap_or_else(|| "?".into()),
                ];
                cells.extend(call_cells(&r.calls));
                tb.rows.push(cells);
            }
            tb.render(&mut o);
        }
        if let Some(rows) = &self.by_vmbus {
            let _ = writeln!(o, "\nper VMBus command");
            let mut tb = Table::new(
                vec![
                    "command",
                    "msgs",
                    "req",
                    "reply",
                    "h→g",
                    "unanswered",
                    "req bytes",
                    "reply bytes",
                    "rtt p50",
                    "p90",
                    "p99",
                    "max",
                ],
                1,
            );
            for r in rows {
                let mut cells = vec![
                    r.command.clone(),
                    r.messages.to_string(),
                    r.requests.to_string(),
                    r.replies.to_string(),
                    r.host_to_guest.to_string(),
                    r.unanswered.to_string(),
                    fmt_bytes(r.request_bytes),
                    fmt_bytes(r.reply_bytes),
                ];
                cells.extend(rtt_cells(&r.rtt));
                tb.rows.push(cells);
            }
            tb.render(&mut o);
        }
        let tp = &self.throughput;
        if buckets {
            let _ = writeln!(o, "\nthroughput per {}", fmt_ns(tp.bucket_ns as f64));
            let mut tb = Table::new(
                vec!["start", "ioctls", "ioctls/s", "bytes/s", "vmbus", "vmbus/s"],
                0,
            );
            for b in &tp.buckets {
                tb.rows.push(vec![
                    fmt_ns(b.start_ns as f64),
                    b.ioctls.to_string(),
                    format!("{:.0}", b.ioctls_per_s),
                    format!("{}/s", fmt_bytes(b.bytes_per_s as u64)),
                    b.vmbus_messages.to_string(),
                    format!("{:.0}", b.vmbus_messages_per_s),
                ]);
            }
            tb.render(&mut o);
        } else if let Some(peak) = tp.buckets.iter().max_by(|a, b| a.ioctls.cmp(&b.ioctls)) {
            let mean = t.ioctls as f64 * 1e9 / (tp.buckets.len() as f64 * tp.bucket_ns as f64);
            let _ = writeln!(
                o,
                "\nthroughput: mean {mean:.0} ioctls/s, peak {:.0} ioctls/s at +{} \
                 ({} buckets of {}; --bucket to list them)",
                peak.ioctls_per_s,
                fmt_ns(peak.start_ns as f64),
                tp.buckets.len(),
                fmt_ns(tp.bucket_ns as f64)
            );
        }
        o
    }
}

/// Which grouping a `--by` value names.
pub fn parse_by(s: &str) -> Option<By> {
    Some(match s {
        "ioctl" => By::Ioctl,
        "process" => By::Process,
        "thread" => By::Thread,
        "vmbus" => By::Vmbus,
        _ => return None,
    })
}

/// Parses a duration such as `10ms`, `500us`, `250µs`, `1s`, `2000ns` (a bare number is
/// nanoseconds) into nanoseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    let ns = (v * mult).round();
    (ns.is_finite() && ns >= 1.0).then_some(ns as u64)
}
