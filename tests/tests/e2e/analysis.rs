//! `dxtrace stats` and `dxtrace export` as a user runs them: the Parquet tables read by
//! DuckDB give the same counts and sums as `stats --json`; the Perfetto JSON is
//! structurally sound; JSON lines hold every record.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use dxtrace_tests::{dxtrace, run, stderr, stdout};
use serde_json::Value;

fn synth(dir: &Path, ioctls: u64) -> PathBuf {
    let p = dir.join("t.dxtrace");
    traces::synth::write_file(
        &p,
        &traces::synth::SynthOptions {
            ioctls,
            ..Default::default()
        },
        "e2e analysis test",
        traces::WriterOptions {
            frame_target_bytes: 32 << 10,
            ..traces::WriterOptions::default()
        },
    )
    .expect("write synthetic trace");
    p
}

fn stats_json(file: &Path) -> Value {
    let mut c = dxtrace();
    c.arg("stats").arg(file).arg("--json");
    let o = run(c);
    assert!(o.status.success(), "stats failed: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).expect("stats --json prints JSON")
}

fn export(file: &Path, format: &str, out: &Path) {
    let mut c = dxtrace();
    c.arg("export")
        .arg(file)
        .args(["--format", format, "-o"])
        .arg(out);
    let o = run(c);
    assert!(o.status.success(), "export {format} failed: {}", stderr(&o));
}

/// DuckDB for Python, installed on first use (idempotent; never skipped: the Parquet
/// check is the point of this test).
fn python_with_duckdb() -> &'static str {
    let have = Command::new("python3")
        .args(["-c", "import duckdb"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        let st = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "duckdb"])
            .status()
            .expect("python3 must be installed to check the Parquet export");
        assert!(st.success(), "pip install duckdb failed");
    }
    "python3"
}

#[test]
fn parquet_export_read_by_duckdb_matches_stats_json() {
    let dir = tempfile::tempdir().unwrap();
    let trace = synth(dir.path(), 4000);
    let t = trace.as_path();
    let s = stats_json(t);
    let out = dir.path().join("pq");
    export(t, "parquet", &out);
    let script = r#"
import duckdb, json, sys
d = sys.argv[1]
q = lambda sql: duckdb.sql(sql.replace("$", d)).fetchall()
io = q("select count(*), sum(is_error::int), sum(bytes_in), sum(bytes_out), sum(dur_ns), sum(host_ns), max(dur_ns) from '$/ioctls.parquet'")[0]
names = {n: [c, e, mx] for n, c, e, mx in q("select name, count(*), sum(is_error::int), max(dur_ns) from '$/ioctls.parquet' group by name")}
vm = q("select count(*), count(rtt_ns), sum(case when dir = 'guest_to_host' then len else 0 end), sum(case when dir = 'host_reply' then len else 0 end) from '$/vmbus.parquet'")[0]
cmds = {c: n for c, n in q("select command, count(*) from '$/vmbus.parquet' group by command")}
procs = q("select count(*) from '$/processes.parquet'")[0][0]
fds = q("select count(*), count(*) filter (where op = 'open'), count(distinct pid), min(path) from '$/fds.parquet'")[0]
drops = q("select count(*), coalesce(sum(count), 0), count(*) filter (where reason = 'ringbuf_full') from '$/dropped.parquet'")[0]
empty = {t: q(f"select count(*) from '$/{t}.parquet'")[0][0] for t in ["signals", "annotations", "capture_stats"]}
fd_types = {c: t for c, t in q("select column_name, column_type from (describe select * from '$/fds.parquet')")}
types = {c: t for c, t in q("select column_name, column_type from (describe select * from '$/ioctls.parquet')")}
print(json.dumps({"ioctls": [int(x) for x in io], "names": names, "vmbus": [int(x) for x in vm],
                  "commands": cmds, "processes": procs, "types": types,
                  "fds": [fds[0], fds[1], fds[2], fds[3]], "drops": [int(x) for x in drops],
                  "empty": empty, "fd_types": fd_types}))
"#;
    let o = run({
        let mut c = Command::new(python_with_duckdb());
        c.args(["-c", script]).arg(&out);
        c
    });
    assert!(o.status.success(), "duckdb script failed: {}", stderr(&o));
    let d: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let t = &s["totals"];
    let io = &d["ioctls"];
    assert_eq!(io[0], t["ioctls"]);
    assert_eq!(io[1], t["errors"]);
    assert_eq!(io[2], t["bytes_in"]);
    assert_eq!(io[3], t["bytes_out"]);
    assert_eq!(io[4], t["ioctl_ns"]);
    assert_eq!(io[5], t["host_ns"]);
    let vm = &d["vmbus"];
    assert_eq!(vm[0], t["vmbus_messages"]);
    assert_eq!(vm[1], t["round_trips"]);
    assert_eq!(vm[2], t["vmbus_request_bytes"]);
    assert_eq!(vm[3], t["vmbus_reply_bytes"]);
    assert_eq!(d["processes"], t["processes"]);
    for row in s["by_ioctl"].as_array().unwrap() {
        let n = row["name"].as_str().unwrap();
        let got = &d["names"][n];
        assert_eq!(got[0], row["count"], "{n}");
        assert_eq!(got[1], row["errors"], "{n}");
        assert_eq!(got[2], row["latency"]["max_ns"], "{n}");
    }
    for row in s["by_vmbus"].as_array().unwrap() {
        let c = row["command"].as_str().unwrap();
        assert_eq!(d["commands"][c], row["messages"], "{c}");
    }
    // The fd and dropped-event tables against `dxtrace info --json`'s record counts (an
    // independent reader) and the stats' drop total.
    let info = {
        let mut c = dxtrace();
        c.arg("info").arg(&trace).arg("--json");
        let o = run(c);
        assert!(o.status.success(), "info failed: {}", stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()
    };
    let fds = &d["fds"];
    assert_eq!(fds[0], info["records"]["fd"], "fd rows");
    assert_eq!(fds[1], info["records"]["fd"], "synthetic fds are all opens");
    assert_eq!(fds[2], t["processes"], "one open per process");
    assert_eq!(fds[3], "/dev/dxg");
    let drops = &d["drops"];
    assert_eq!(drops[0], info["records"]["dropped"], "dropped rows");
    assert!(
        drops[0].as_u64().unwrap() > 0,
        "the synthetic trace has drops"
    );
    assert_eq!(drops[1], s["dropped_events"]);
    assert_eq!(drops[2], drops[0]);
    for (table, rows) in d["empty"].as_object().unwrap() {
        assert_eq!(rows, 0, "{table}: the synthetic trace has none");
    }
    assert_eq!(d["fd_types"]["fd"], "INTEGER");
    assert_eq!(d["fd_types"]["dev"], "UBIGINT");
    assert_eq!(d["fd_types"]["op"], "VARCHAR");
    // Typed columns, not strings.
    let ty = &d["types"];
    assert_eq!(ty["id"], "UBIGINT");
    assert_eq!(ty["ret"], "BIGINT");
    assert_eq!(ty["is_error"], "BOOLEAN");
    assert_eq!(ty["pid"], "UINTEGER");
    assert_eq!(ty["name"], "VARCHAR");
}

/// `ts`/`dur` in µs with at most three decimals, as integer ns.
fn ns(v: &Value) -> u64 {
    let s = v.to_string();
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    assert!(frac.len() <= 3, "µs value {s} has sub-ns digits");
    int.parse::<u64>().unwrap() * 1000 + format!("{frac:0<3}").parse::<u64>().unwrap()
}

#[test]
fn perfetto_export_is_structurally_valid() {
    let dir = tempfile::tempdir().unwrap();
    let t = synth(dir.path(), 3000);
    let s = stats_json(&t);
    let out = dir.path().join("t.json");
    export(&t, "perfetto", &out);
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).expect("valid JSON");
    let evs = v["traceEvents"].as_array().expect("traceEvents array");
    let mut x_by_track: HashMap<(u64, u64), Vec<(u64, u64)>> = HashMap::new();
    let mut named_pids = std::collections::HashSet::new();
    let mut named_threads = std::collections::HashSet::new();
    let mut open_async: HashMap<u64, u64> = HashMap::new();
    let (mut begins, mut ends, mut flows_s, mut flows_f, mut counters) = (0, 0, 0, 0, 0);
    for e in evs {
        let ph = e["ph"].as_str().expect("every event has ph");
        let pid = e["pid"].as_u64().expect("every event has an integer pid");
        match ph {
            "M" => {
                assert!(e["args"]["name"].is_string());
                match e["name"].as_str().unwrap() {
                    "process_name" => named_pids.insert(pid),
                    "thread_name" => named_threads.insert((pid, e["tid"].as_u64().unwrap())),
                    other => panic!("unexpected metadata {other}"),
                };
            }
            "X" => {
                let tid = e["tid"].as_u64().unwrap();
                let (ts, dur) = (ns(&e["ts"]), ns(&e["dur"]));
                assert!(e["name"].is_string());
                x_by_track
                    .entry((pid, tid))
                    .or_default()
                    .push((ts, ts + dur));
            }
            "b" => {
                begins += 1;
                open_async.insert(e["id"].as_u64().unwrap(), ns(&e["ts"]));
            }
            "e" => {
                ends += 1;
                let b = open_async
                    .remove(&e["id"].as_u64().unwrap())
                    .expect("async end after its begin, same id");
                assert!(ns(&e["ts"]) >= b);
            }
            "s" => flows_s += 1,
            "f" => flows_f += 1,
            "C" => {
                counters += 1;
                assert!(e["args"]["value"].is_number());
            }
            "i" => {}
            other => panic!("unexpected phase {other}"),
        }
    }
    let xs: usize = x_by_track.values().map(Vec::len).sum();
    assert_eq!(xs as u64, s["totals"]["ioctls"].as_u64().unwrap());
    assert_eq!(begins, ends);
    assert_eq!(begins, s["totals"]["round_trips"].as_u64().unwrap());
    assert!(open_async.is_empty());
    assert_eq!(flows_s, flows_f);
    assert!(flows_s > 0 && counters > 0);
    // Each track's complete events nest: sorted by start (longest first), every event
    // either starts after the enclosing one ends or ends within it.
    for ((pid, tid), mut v) in x_by_track {
        assert!(named_pids.contains(&pid), "process {pid} has a name");
        assert!(
            named_threads.contains(&(pid, tid)),
            "thread {tid} has a name"
        );
        v.sort_by_key(|(a, b)| (*a, std::cmp::Reverse(*b)));
        let mut stack: Vec<u64> = Vec::new();
        for (a, b) in v {
            while stack.last().is_some_and(|&end| end <= a) {
                stack.pop();
            }
            if let Some(&end) = stack.last() {
                assert!(
                    b <= end,
                    "track {pid}/{tid}: [{a}, {b}] overlaps a slice ending at {end}"
                );
            }
            stack.push(b);
        }
    }
}

#[test]
fn jsonl_export_has_one_decoded_record_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let t = synth(dir.path(), 300);
    let s = stats_json(&t);
    let out = dir.path().join("t.jsonl");
    export(&t, "jsonl", &out);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count() as u64, s["records"].as_u64().unwrap());
    let mut kinds: HashMap<String, u64> = HashMap::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).expect("each line is JSON");
        let k = v["kind"].as_str().unwrap().to_string();
        if k == "ioctl" {
            assert!(v["name"].as_str().unwrap().starts_with("LX_DX"), "{v}");
            assert!(v["status"].is_string());
        }
        if k == "vmbus" {
            assert!(v["command"].is_string());
        }
        *kinds.entry(k).or_default() += 1;
    }
    assert_eq!(kinds["ioctl"], s["totals"]["ioctls"].as_u64().unwrap());
    assert_eq!(
        kinds["vmbus"],
        s["totals"]["vmbus_messages"].as_u64().unwrap()
    );
}

#[test]
fn stats_tables_on_the_committed_sample() {
    let mut c = dxtrace();
    c.args([
        "stats",
        "traces/samples/synthetic-dxg.dxtrace",
        "--bucket",
        "5ms",
    ]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "per ioctl",
        "per process",
        "per thread",
        "per VMBus command",
        "throughput per",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}
