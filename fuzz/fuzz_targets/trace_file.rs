//! Whole `.dxtrace` files: open (footer or scan), iterate every record, summarise, and
//! salvage. Nothing may panic, hang or allocate without bound; errors are fine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    // The reader works on files (positional reads); /dev/shm keeps this in memory.
    let mut f = tempfile::NamedTempFile::new_in("/dev/shm").expect("tmp file");
    f.write_all(data).unwrap();
    for salvage in [false, true] {
        let opts = traces::ReadOptions { salvage, ignore_footer: false };
        if let Ok(r) = traces::Reader::open_with(f.path(), opts) {
            for rec in r.records() {
                let _ = rec;
            }
            let _ = traces::summarize(&r, 1);
            let _ = r.records_between(0, u64::MAX / 2).count();
            if salvage {
                let out = tempfile::NamedTempFile::new_in("/dev/shm").unwrap();
                if r.salvage_to(out.path()).is_ok() {
                    // a salvaged file must itself read cleanly
                    let s = traces::Reader::open(out.path()).expect("salvaged file opens");
                    for rec in s.records() {
                        rec.expect("salvaged records decode");
                    }
                }
            }
        }
    }
});
