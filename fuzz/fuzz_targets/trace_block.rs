//! A frame's decompressed block: records back to back (the MessagePack decoders,
//! including the hand-written fast paths and the forward-compatibility trimming).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut pos = 0usize;
    while pos < data.len() {
        let before = pos;
        match traces::decode_record(data, &mut pos) {
            Ok(rec) => {
                assert!(pos > before, "decoder made no progress");
                // whatever decodes must re-encode and decode to the same record
                if rec.kind().is_some() {
                    let mut buf = Vec::new();
                    traces::encode_record(&mut buf, &rec).unwrap();
                    let mut p = 0;
                    assert_eq!(traces::decode_record(&buf, &mut p).unwrap(), rec);
                }
            }
            Err(_) => break,
        }
    }
});
