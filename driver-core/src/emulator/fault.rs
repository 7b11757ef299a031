//! Fault injection, parsed from command-line strings.
//!
//! Grammar (one fault per string):
//!
//! * `CMD:status=0xC0000017@N` — the N-th (1-based) VMBus command named `CMD` (a
//!   `dxgkvmb_commandtype` or `dxgkvmb_commandtype_global` name, e.g. `CREATEALLOCATION`,
//!   `DESTROYSYNCOBJECT`) is failed by the host with that NTSTATUS. `@*` or no `@` = every
//!   time. Replies that have no status field (CREATEDEVICE, CREATEALLOCATION, …) come
//!   back with zero handles, which the driver turns into an error as the real one does.
//! * `device-removed@after=N` — after N ioctls the host reports the device removed (TDR):
//!   every adapter command fails with STATUS_DEVICE_REMOVED and a SETGUESTDATA bumps the
//!   guest's device-state counter.
//! * `hang:CMD@N` — the host never completes the N-th sync `CMD` (the driver's
//!   wait-forever). The emulator bounds the wait, adds a `hang` annotation and fails the
//!   ioctl with -ETIMEDOUT (a real kernel would block until SIGKILL).
//! * `lose-signal@N` — the N-th SIGNALGUESTEVENT the host would send is never sent.
//! * `dup-signal@N` — the N-th SIGNALGUESTEVENT is sent twice.

use crate::dxg::vmbus::{ADAPTER_COMMANDS, GLOBAL_COMMANDS};
use crate::schema::{VmbusChannel, VmbusCmd};

/// Which occurrences a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrence {
    /// Only the N-th (1-based).
    Nth(u64),
    /// Every one.
    Every,
}

impl Occurrence {
    /// Whether the `count`-th occurrence (1-based) is hit.
    pub fn hits(self, count: u64) -> bool {
        match self {
            Occurrence::Nth(n) => n == count,
            Occurrence::Every => true,
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The host fails a command with `status`.
    Status {
        /// Command.
        cmd: VmbusCmd,
        /// NTSTATUS.
        status: u32,
        /// Which occurrences.
        at: Occurrence,
    },
    /// The device is removed after `after` ioctls.
    DeviceRemoved {
        /// Ioctl count.
        after: u64,
    },
    /// The host never replies to a sync command.
    Hang {
        /// Command.
        cmd: VmbusCmd,
        /// Which occurrences.
        at: Occurrence,
    },
    /// A SIGNALGUESTEVENT is lost.
    LoseSignal {
        /// Which occurrences.
        at: Occurrence,
    },
    /// A SIGNALGUESTEVENT is duplicated.
    DupSignal {
        /// Which occurrences.
        at: Occurrence,
    },
}

/// Errors of [`Fault::parse`].
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// Malformed string.
    #[error("bad fault spec {spec:?}: {why}")]
    Bad {
        /// The input.
        spec: String,
        /// What is wrong.
        why: String,
    },
}

fn bad(spec: &str, why: impl Into<String>) -> FaultError {
    FaultError::Bad {
        spec: spec.into(),
        why: why.into(),
    }
}

/// VMBus command by name (adapter enum first, then global), case-insensitive.
pub fn command_by_name(name: &str) -> Option<VmbusCmd> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("G:").unwrap_or(&n);
    if let Some((v, _)) = ADAPTER_COMMANDS
        .values
        .iter()
        .find(|(_, s)| s.eq_ignore_ascii_case(n))
    {
        return Some(VmbusCmd {
            channel: VmbusChannel::Adapter,
            value: *v as u32,
        });
    }
    GLOBAL_COMMANDS
        .values
        .iter()
        .find(|(_, s)| s.eq_ignore_ascii_case(n))
        .map(|(v, _)| VmbusCmd {
            channel: VmbusChannel::Global,
            value: *v as u32,
        })
}

fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_at(spec: &str, s: Option<&str>) -> Result<Occurrence, FaultError> {
    match s {
        None | Some("*") => Ok(Occurrence::Every),
        Some(n) => match parse_num(n) {
            Some(0) | None => Err(bad(spec, "occurrence must be a number ≥ 1 or *")),
            Some(n) => Ok(Occurrence::Nth(n)),
        },
    }
}

impl Fault {
    /// Parses one fault string (see the module docs).
    pub fn parse(spec: &str) -> Result<Fault, FaultError> {
        let (body, at) = match spec.rsplit_once('@') {
            Some((b, a)) => (b.trim(), Some(a.trim())),
            None => (spec.trim(), None),
        };
        let lower = body.to_ascii_lowercase();
        if lower == "device-removed" || lower == "tdr" {
            let after = at
                .and_then(|a| a.strip_prefix("after="))
                .and_then(parse_num)
                .ok_or_else(|| bad(spec, "expected device-removed@after=N"))?;
            return Ok(Fault::DeviceRemoved { after });
        }
        if lower == "lose-signal" {
            return Ok(Fault::LoseSignal {
                at: parse_at(spec, at)?,
            });
        }
        if lower == "dup-signal" {
            return Ok(Fault::DupSignal {
                at: parse_at(spec, at)?,
            });
        }
        if let Some(cmd) = lower.strip_prefix("hang:") {
            let cmd = command_by_name(cmd)
                .ok_or_else(|| bad(spec, format!("unknown VMBus command {cmd:?}")))?;
            return Ok(Fault::Hang {
                cmd,
                at: parse_at(spec, at)?,
            });
        }
        if let Some((cmd, rest)) = body.split_once(':') {
            let cmd_v = command_by_name(cmd)
                .ok_or_else(|| bad(spec, format!("unknown VMBus command {cmd:?}")))?;
            let status = rest
                .trim()
                .strip_prefix("status=")
                .and_then(parse_num)
                .filter(|v| *v <= u32::MAX as u64)
                .ok_or_else(|| bad(spec, "expected CMD:status=0x…"))?;
            return Ok(Fault::Status {
                cmd: cmd_v,
                status: status as u32,
                at: parse_at(spec, at)?,
            });
        }
        Err(bad(
            spec,
            "expected CMD:status=0x…@N, device-removed@after=N, hang:CMD@N, lose-signal@N or dup-signal@N",
        ))
    }
}

impl std::fmt::Display for Occurrence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Occurrence::Nth(n) => write!(f, "{n}"),
            Occurrence::Every => f.write_str("*"),
        }
    }
}

fn cmd_spec(cmd: VmbusCmd) -> String {
    let name = crate::dxg::vmbus::command_name(cmd)
        .map(str::to_string)
        .unwrap_or_else(|| format!("#{}", cmd.value));
    // The parser looks names up in the adapter enum first: a global command whose name
    // also exists there keeps its `G:` prefix.
    if cmd.channel == VmbusChannel::Global && command_by_name(&name) != Some(cmd) {
        format!("G:{name}")
    } else {
        name
    }
}

/// The spec string [`Fault::parse`] reads back as the same fault (it is what trace headers
/// store, so a replay can configure the emulator the way the capture did).
impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Status { cmd, status, at } => {
                write!(f, "{}:status={status:#010x}@{at}", cmd_spec(*cmd))
            }
            Fault::DeviceRemoved { after } => write!(f, "device-removed@after={after}"),
            Fault::Hang { cmd, at } => write!(f, "hang:{}@{at}", cmd_spec(*cmd)),
            Fault::LoseSignal { at } => write!(f, "lose-signal@{at}"),
            Fault::DupSignal { at } => write!(f, "dup-signal@{at}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Fault::parse("CREATEALLOCATION:status=0xC0000017@3").expect("valid"),
            Fault::Status {
                cmd: VmbusCmd {
                    channel: VmbusChannel::Adapter,
                    value: 4
                },
                status: 0xC000_0017,
                at: Occurrence::Nth(3)
            }
        );
        assert_eq!(
            Fault::parse("device-removed@after=50").expect("valid"),
            Fault::DeviceRemoved { after: 50 }
        );
        assert_eq!(
            Fault::parse("hang:SUBMITCOMMAND@2").expect("valid"),
            Fault::Hang {
                cmd: VmbusCmd {
                    channel: VmbusChannel::Adapter,
                    value: 20
                },
                at: Occurrence::Nth(2)
            }
        );
        assert_eq!(
            Fault::parse("lose-signal@1").expect("valid"),
            Fault::LoseSignal {
                at: Occurrence::Nth(1)
            }
        );
        assert_eq!(
            Fault::parse("dup-signal").expect("valid"),
            Fault::DupSignal {
                at: Occurrence::Every
            }
        );
        assert!(matches!(
            Fault::parse("DESTROYSYNCOBJECT:status=0xC0000008").expect("valid"),
            Fault::Status {
                cmd: VmbusCmd {
                    channel: VmbusChannel::Global,
                    value: 1003
                },
                ..
            }
        ));
        assert!(Fault::parse("NOPE:status=1").is_err());
        for spec in [
            "CREATEALLOCATION:status=0xC0000017@3",
            "DESTROYSYNCOBJECT:status=0xc0000008@*",
            "device-removed@after=50",
            "hang:SUBMITCOMMAND@2",
            "lose-signal@1",
            "dup-signal@*",
        ] {
            let f = Fault::parse(spec).expect("valid");
            assert_eq!(
                Fault::parse(&f.to_string()).expect("round trip"),
                f,
                "{spec}"
            );
        }
        assert!(Fault::parse("hang:SUBMITCOMMAND@0").is_err());
    }
}
