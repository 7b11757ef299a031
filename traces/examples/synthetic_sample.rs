//! Regenerates `traces/samples/synthetic-dxg.dxtrace`, the generated sample trace
//! (deterministic; a test checks the committed file matches):
//!
//! ```text
//! cargo run -p traces --example synthetic_sample
//! ```

use traces::synth::{SynthOptions, sample_writer_options, write_file};

const REGENERATE: &str = "cargo run -p traces --example synthetic_sample";

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    std::fs::create_dir_all(&dir).expect("create samples dir");
    let path = dir.join("synthetic-dxg.dxtrace");
    let s = write_file(
        &path,
        &SynthOptions::default(),
        REGENERATE,
        sample_writer_options(),
    )
    .expect("write sample");
    println!(
        "wrote {} ({} records, {} bytes)",
        path.display(),
        s.records,
        s.file_bytes
    );
}
