//! `dxtrace replay`: re-execute a trace against the emulator or a real device.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use driver_core::RealDevice;
use replayer::{HostMode, Pace, ReplayOptions, Replayer, Report, Target};

/// Re-execute a trace against the emulator or a real device and report divergences.
///
/// Buffers are rebuilt at fresh addresses, pointer fields patched, handles and fds
/// remapped. Each call's full return value, out struct and out buffers are compared with
/// the recording; differences are listed decoded. Calls run one after another in the
/// order the trace stores them (threads are not re-created).
///
/// Process ids legitimately differ: the traced process's recorded pid is compared as the
/// replaying process's pid (ENUMPROCESSES lists, CREATEPROCESS messages); pids of other
/// programs on the capturing machine are not compared. Synthetic (generated) traces are
/// refused: their calls were never made on a driver.
///
/// Exit status: 0 with no divergence, 1 when results diverged, 2 when the replay could
/// not run (unreadable trace, a handle no earlier call created, a refused ioctl).
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The .dxtrace file.
    pub file: PathBuf,

    /// `emulator` (in-process dxg emulator) or the path of a device node (`/dev/dxg`,
    /// `/dev/kvm`, a FUSE-emulated device). A real device is only used when named here.
    #[arg(long, value_name = "emulator|PATH")]
    pub target: String,

    /// With `--target emulator`: `fake` runs the emulator's fake host, configured as the
    /// trace header says the capture's was (seed, fault plan, latency model); `recorded`
    /// answers the driver logic's VMBus requests with the trace's recorded replies and
    /// reports every request that differs from the recorded one (driver-in-the-loop).
    #[arg(long, value_name = "fake|recorded", default_value = "fake")]
    pub host: String,

    /// Stop at the first divergence (exit 1).
    #[arg(long)]
    pub strict: bool,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// `fast`: back to back; `original`: keep the recorded gaps between calls.
    #[arg(long, value_name = "fast|original", default_value = "fast")]
    pub pace: String,

    /// First call index (0-based ioctl count) to compare; earlier calls still run.
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,

    /// Last call index to run (inclusive).
    #[arg(long, value_name = "N")]
    pub to: Option<u64>,

    /// Send ioctls that no device table knows to a real device.
    #[arg(long)]
    pub allow_unknown: bool,

    /// Divergences listed in full; later ones are only counted (bounds the memory a
    /// badly diverging trace takes).
    #[arg(long, value_name = "N", default_value_t = replayer::DEFAULT_MAX_DIVERGENCES)]
    pub max_divergences: usize,
}

pub fn run(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let pace = match a.pace.as_str() {
        "fast" => Pace::Fast,
        "original" => Pace::Original,
        other => bail!("--pace must be `fast` or `original`, not `{other}`"),
    };
    let reader = traces::Reader::open(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let target = if a.target == "emulator" {
        Target::InProcess
    } else {
        Target::Device(PathBuf::from(&a.target))
    };
    let host = match (a.host.as_str(), &target) {
        ("fake", _) => HostMode::Fake,
        ("recorded", Target::InProcess) => HostMode::Recorded,
        ("recorded", _) => bail!("--host recorded only applies to --target emulator"),
        (other, _) => bail!("--host must be `fake` or `recorded`, not `{other}`"),
    };
    replayer::check_replayable(reader.header())
        .with_context(|| format!("cannot replay {}", a.file.display()))?;
    let opts = ReplayOptions {
        target: target.clone(),
        strict: a.strict,
        pace,
        from: a.from,
        to: a.to,
        allow_unknown: a.allow_unknown,
        host,
        max_divergences: a.max_divergences,
    };
    let calls = reader
        .frames()
        .iter()
        .map(|f| f.record_count as u64)
        .sum::<u64>();
    let bar = (calls > 100_000 && !a.json).then(|| {
        let b = indicatif::ProgressBar::new(calls);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} records {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    };
    let report = match target {
        Target::InProcess => {
            drop(reader);
            replayer::replay_file_on_emulator(&a.file, opts, &mut progress)
                .context("replay stopped")?
        }
        Target::Device(_) => {
            let mut r = Replayer::new(RealDevice::new(), opts);
            replayer::run_reader(&mut r, &reader, &mut progress).context("replay stopped")?;
            r.finish()
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    print(&report, a.json)?;
    Ok(if !report.diverged() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print(r: &Report, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    for d in &r.divergences {
        writeln!(out, "divergence: {d}")?;
    }
    for n in &r.notes {
        writeln!(out, "note: {n}")?;
    }
    if let Some((sent, recorded)) = r.vmbus_messages {
        writeln!(
            out,
            "driver-in-the-loop: {sent} VMBus requests sent by the driver logic, {recorded} recorded"
        )?;
    }
    if r.divergences_dropped() > 0 {
        writeln!(
            out,
            "note: only the first {} divergences are listed; {} more were counted but not kept",
            r.divergences.len(),
            r.divergences_dropped()
        )?;
    }
    writeln!(
        out,
        "{} calls ({} compared), {} divergences{}, {:.3} s, {:.0} calls/s",
        r.calls,
        r.compared,
        r.divergences_total,
        if r.stopped_early {
            " (stopped at the first: --strict)"
        } else {
            ""
        },
        r.elapsed.as_secs_f64(),
        r.rate()
    )?;
    Ok(())
}
