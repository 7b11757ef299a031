//! The CLI as a user runs it: `dxtrace info` on intact, unfinished and damaged traces.

use dxtrace_tests::{dxtrace, repo_root, run, stderr, stdout};

const SAMPLE: &str = "traces/samples/synthetic-dxg.dxtrace";

#[test]
fn info_json_has_the_documented_keys() {
    let mut c = dxtrace();
    c.args(["info", SAMPLE, "--json"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for k in [
        "format_version",
        "records",
        "dropped_events",
        "start_ns",
        "end_ns",
        "footer",
        "frames",
        "corrupt_frames",
    ] {
        assert!(v.get(k).is_some(), "missing key {k} in {v}");
    }
    assert_eq!(v["format_version"], "1.0");
    assert_eq!(v["footer"], true);
    assert_eq!(v["corrupt_frames"], 0);
    // Counts agree with an independent pass over the records.
    let r = traces::Reader::open(repo_root().join(SAMPLE)).unwrap();
    let mut ioctls = 0u64;
    let mut vmbus = 0u64;
    let mut dropped = 0u64;
    for rec in r.records() {
        match rec.unwrap() {
            traces::Record::Ioctl(_) => ioctls += 1,
            traces::Record::Vmbus(_) => vmbus += 1,
            traces::Record::Dropped(d) => dropped += d.count,
            _ => {}
        }
    }
    assert_eq!(v["records"]["ioctl"], ioctls);
    assert_eq!(v["records"]["vmbus"], vmbus);
    assert_eq!(v["dropped_events"], dropped);
    assert_eq!(v["header"]["source"], "generated");
}

#[test]
fn info_text_reports_header_and_integrity() {
    let mut c = dxtrace();
    c.args(["info", SAMPLE]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    for want in [
        "format     .dxtrace 1.0",
        "source     generated",
        "SYNTHETIC",
        "footer index present",
        "all intact",
        "/dev/dxg",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
}

#[test]
fn info_on_a_truncated_trace_names_the_offset_and_salvage_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(repo_root().join(SAMPLE)).unwrap();
    let r = traces::Reader::open(repo_root().join(SAMPLE)).unwrap();
    let frames = r.frames().to_vec();
    assert!(frames.len() >= 2, "sample needs several frames");
    let last = frames.last().unwrap();
    let cut = last.offset as usize + 100;
    let damaged = dir.path().join("cut.dxtrace");
    std::fs::write(&damaged, &bytes[..cut]).unwrap();

    let mut c = dxtrace();
    c.arg("info").arg(&damaged);
    let o = run(c);
    assert_eq!(
        o.status.code(),
        Some(1),
        "damaged trace exits 1: {}",
        stderr(&o)
    );
    let s = stdout(&o);
    assert!(s.contains("NO footer index"), "{s}");
    assert!(
        s.contains(&format!("truncated frame at byte {}", last.offset)),
        "{s}"
    );

    let out = dir.path().join("salvaged.dxtrace");
    let mut c = dxtrace();
    c.arg("info")
        .arg(&damaged)
        .arg("--salvage")
        .arg(&out)
        .arg("--json");
    let o = run(c);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let want: u64 = frames[..frames.len() - 1]
        .iter()
        .map(|f| f.record_count as u64)
        .sum();
    assert_eq!(v["salvage"]["records_recovered"], want);
    assert_eq!(v["salvage"]["frames_recovered"], frames.len() as u64 - 1);
    // The salvaged file is intact.
    let mut c = dxtrace();
    c.arg("info").arg(&out);
    let o = run(c);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn errors_exit_2_with_the_cause_chain() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.dxtrace");
    std::fs::write(&p, b"definitely not a trace").unwrap();
    let mut c = dxtrace();
    c.arg("info").arg(&p);
    let o = run(c);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("cannot read") && e.contains("not a .dxtrace file"),
        "{e}"
    );
}

#[test]
fn schema_json_lists_every_ioctl_with_codes_and_structs() {
    for (dev, min_ioctls) in [("dxg", 73usize), ("kvm", 10)] {
        let mut c = dxtrace();
        c.args(["schema", dev, "--json"]);
        let o = run(c);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["device"], dev);
        let ioctls = v["ioctls"].as_array().unwrap();
        assert!(ioctls.len() >= min_ioctls, "{dev}: {}", ioctls.len());
        for i in ioctls {
            for k in [
                "name", "nr", "code", "struct", "size", "class", "fields", "pointers", "handles",
            ] {
                assert!(i.get(k).is_some(), "{dev}: ioctl without {k}: {i}");
            }
            assert!(i["code"].as_str().unwrap().starts_with("0x"), "{i}");
        }
        assert!(v["structs"].as_array().unwrap().len() > 5);
        for k in ["global", "adapter", "host_to_guest"] {
            assert!(v["vmbus"][k].is_array(), "{dev}: vmbus.{k}");
        }
    }
    // Spot-check one entry against the reference (§1.2): CREATEALLOCATION.
    let mut c = dxtrace();
    c.args(["schema", "dxg", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&run(c))).unwrap();
    let ca = v["ioctls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "LX_DXCREATEALLOCATION")
        .expect("CREATEALLOCATION listed");
    assert_eq!(ca["code"], "0xc0484706");
    assert_eq!(ca["size"], 72);
    assert_eq!(ca["nr"], 6);
}

/// `dxtrace … | head` closes the pipe early: the command must stop quietly (exit 0), not
/// panic. The read end is closed before the child starts, so its first write gets EPIPE.
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    use std::os::fd::{FromRawFd, OwnedFd};
    for args in [
        &["workload", "--list"][..],
        &["info", SAMPLE],
        &["info", SAMPLE, "--json"],
        &["schema", "dxg"],
        &["stats", SAMPLE],
        &["doctor"],
    ] {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills both fds; each is owned exactly once below.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(r);
        let mut c = dxtrace();
        c.args(args).stdout(w);
        c.stderr(std::process::Stdio::piped());
        let o = c.output().unwrap();
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "dxtrace {args:?} panicked: {e}");
        assert_eq!(o.status.code(), Some(0), "dxtrace {args:?}: {e}");
    }
}
