//! Trim: cut a trace down to what one call needs — the calls on its handle / fd lineage
//! (the creations of everything it uses, transitively, and the device opens), in order.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use driver_core::schema::lookup_code;
use traces::{FdOp, Record};

use crate::call;
use crate::error::ReplayError;
use crate::plan::PlanCache;

/// Trim settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrimOptions {
    /// Also keep earlier calls that only use objects already on the lineage and create or
    /// destroy nothing (setters such as KVM_SET_REGS / KVM_SET_USER_MEMORY_REGION): the
    /// state call N sees then matches the capture more closely.
    pub with_state: bool,
}

/// What [`trim`] kept.
#[derive(Debug, Clone)]
pub struct TrimResult {
    /// Kept records, in trace order.
    pub records: Vec<Record>,
    /// Kept call indices (0-based, counting ioctl records).
    pub kept_calls: Vec<u64>,
    /// Index of the kept call N in the trimmed trace.
    pub new_index: u64,
    /// Ioctl calls in the input.
    pub total_calls: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Obj {
    H(u64),
    F(i64),
}

/// Keeps call `keep` (0-based ioctl index) and its lineage.
pub fn trim(records: &[Record], keep: u64, opts: TrimOptions) -> Result<TrimResult, ReplayError> {
    let mut plans = PlanCache::default();
    // Creator of each live object: record position (open / ioctl) that made it.
    let mut creator: HashMap<Obj, usize> = HashMap::new();
    // Per record: the records it depends on, and the objects it uses / creates.
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); records.len()];
    let mut uses: Vec<Vec<Obj>> = vec![Vec::new(); records.len()];
    let mut makes: Vec<Vec<Obj>> = vec![Vec::new(); records.len()];
    let mut kills: Vec<bool> = vec![false; records.len()];
    let mut call_pos = Vec::new();
    for (pos, r) in records.iter().enumerate() {
        match r {
            Record::Fd(ev) => match ev.op {
                FdOp::Open if ev.ret >= 0 => {
                    creator.insert(Obj::F(ev.fd as i64), pos);
                    makes[pos].push(Obj::F(ev.fd as i64));
                }
                FdOp::Close => {
                    if let Some(c) = creator.remove(&Obj::F(ev.fd as i64)) {
                        deps[pos].push(c);
                    }
                    uses[pos].push(Obj::F(ev.fd as i64));
                    kills[pos] = true;
                }
                _ => {}
            },
            Record::Ioctl(io) => {
                call_pos.push(pos);
                let mut used = vec![Obj::F(io.fd as i64)];
                let mut made = Vec::new();
                let mut destroyed = Vec::new();
                if let Some(e) = lookup_code(io.cmd) {
                    let rf = call::refs(e, io, &mut plans);
                    used.extend(rf.handles_in.iter().map(|h| Obj::H(*h)));
                    used.extend(rf.fds_in.iter().map(|f| Obj::F(*f)));
                    made.extend(rf.creates.iter().map(|(h, _)| Obj::H(*h)));
                    made.extend(rf.returns_fds.iter().map(|(f, _)| Obj::F(*f)));
                    destroyed.extend(rf.destroys.iter().map(|h| Obj::H(*h)));
                }
                for o in &used {
                    if let Some(c) = creator.get(o) {
                        deps[pos].push(*c);
                    }
                }
                for o in &destroyed {
                    creator.remove(o);
                }
                for o in &made {
                    creator.insert(*o, pos);
                }
                kills[pos] = !destroyed.is_empty();
                uses[pos] = used;
                makes[pos] = made;
            }
            _ => {}
        }
    }
    let total = call_pos.len() as u64;
    let Some(&target) = call_pos.get(keep as usize) else {
        return Err(ReplayError::NoSuchCall { keep, calls: total });
    };
    let mut kept: BTreeSet<usize> = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(p) = stack.pop() {
        if kept.insert(p) {
            stack.extend(deps[p].iter().copied());
        }
    }
    if opts.with_state {
        let objs: HashSet<Obj> = kept
            .iter()
            .flat_map(|p| uses[*p].iter().chain(makes[*p].iter()).copied())
            .collect();
        for (p, r) in records.iter().enumerate().take(target) {
            if matches!(r, Record::Ioctl(_))
                && makes[p].is_empty()
                && !kills[p]
                && !uses[p].is_empty()
                && uses[p].iter().all(|o| objs.contains(o))
            {
                // Only if everything it uses was created before it (on the kept lineage).
                if deps[p].iter().all(|d| kept.contains(d)) {
                    kept.insert(p);
                }
            }
        }
    }
    // Process metadata is kept so the trimmed trace still says who made the calls.
    let mut out = Vec::new();
    let mut kept_calls = Vec::new();
    let mut new_index = 0;
    let mut ci = 0u64;
    for (p, r) in records.iter().enumerate() {
        let is_call = matches!(r, Record::Ioctl(_));
        if kept.contains(&p) || matches!(r, Record::Process(_)) {
            if is_call {
                if p == target {
                    new_index = kept_calls.len() as u64;
                }
                kept_calls.push(ci);
            }
            out.push(r.clone());
        }
        if is_call {
            ci += 1;
        }
    }
    Ok(TrimResult {
        records: out,
        kept_calls,
        new_index,
        total_calls: total,
    })
}

/// Trims a trace file into a new one (same header, plus `extra.trimmed_from`).
pub fn trim_file(
    input: impl AsRef<Path>,
    keep: u64,
    opts: TrimOptions,
    output: impl AsRef<Path>,
) -> Result<TrimResult, ReplayError> {
    let reader = traces::Reader::open(input.as_ref())?;
    let records: Vec<Record> = reader.records().collect::<Result<_, _>>()?;
    let res = trim(&records, keep, opts)?;
    let mut h = reader.header().clone();
    h.extra.push((
        "trimmed_from".into(),
        format!("{} call {keep}", input.as_ref().display()),
    ));
    crate::capture::write_trace(output, &h, &res.records)?;
    Ok(res)
}
