//! A minimal reader of kernel BTF (`/sys/kernel/btf/vmlinux`): struct member offsets and
//! function names.
//!
//! Rust eBPF code cannot carry CO-RE relocations, so the loader resolves the offsets the
//! kernel side needs (task → files → fdtable → file → inode) here and passes them as
//! globals. Only what that needs is parsed: type kinds, names, struct/union members
//! (anonymous members are searched through), and FUNC names.

use std::collections::HashMap;
use std::path::Path;

use probe_common::KernelOffsets;

use crate::ProbeError;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_FUNC: u32 = 12;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: String,
    /// `size_or_type` of `btf_type`.
    #[allow(dead_code)]
    size_or_type: u32,
    members: Vec<Member>,
}

/// Parsed kernel BTF.
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<(u32, String), u32>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn str_at(strs: &[u8], off: u32) -> String {
    let s = strs.get(off as usize..).unwrap_or(&[]);
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

impl Btf {
    /// Reads `/sys/kernel/btf/vmlinux`.
    pub fn from_sys_fs() -> Result<Btf, ProbeError> {
        Btf::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    /// Reads a raw BTF file.
    pub fn from_file(path: &Path) -> Result<Btf, ProbeError> {
        let data = std::fs::read(path).map_err(|e| ProbeError::Btf {
            what: format!("cannot read {}: {e}", path.display()),
        })?;
        Btf::parse(&data)
    }

    /// Parses raw (little-endian) BTF bytes.
    pub fn parse(data: &[u8]) -> Result<Btf, ProbeError> {
        let bad = |what: &str| ProbeError::Btf { what: what.into() };
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(bad("not little-endian BTF (bad magic)"));
        }
        let hdr_len = u32_at(data, 4).ok_or_else(|| bad("short header"))? as usize;
        let type_off = u32_at(data, 8).ok_or_else(|| bad("short header"))? as usize;
        let type_len = u32_at(data, 12).ok_or_else(|| bad("short header"))? as usize;
        let str_off = u32_at(data, 16).ok_or_else(|| bad("short header"))? as usize;
        let str_len = u32_at(data, 20).ok_or_else(|| bad("short header"))? as usize;
        let types_b = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(|| bad("type section out of bounds"))?;
        let strs = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| bad("string section out of bounds"))?;

        // Type id 0 is `void`.
        let mut types = vec![Type {
            kind: 0,
            name: String::new(),
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut off = 0usize;
        while off + 12 <= types_b.len() {
            let name_off = u32_at(types_b, off).unwrap_or(0);
            let info = u32_at(types_b, off + 4).unwrap_or(0);
            let size_or_type = u32_at(types_b, off + 8).unwrap_or(0);
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            let mut members = Vec::new();
            let extra = match kind {
                1 => 4,  // INT
                3 => 12, // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let mname = u32_at(types_b, m).unwrap_or(0);
                        let mtype = u32_at(types_b, m + 4).unwrap_or(0);
                        let moff = u32_at(types_b, m + 8).unwrap_or(0);
                        members.push(Member {
                            name: str_at(strs, mname),
                            type_id: mtype,
                            bit_offset: if kind_flag { moff & 0xff_ffff } else { moff },
                        });
                    }
                    vlen * 12
                }
                6 => vlen * 8,   // ENUM
                13 => vlen * 8,  // FUNC_PROTO
                14 => 4,         // VAR
                15 => vlen * 12, // DATASEC
                17 => 4,         // DECL_TAG
                19 => vlen * 12, // ENUM64
                2 | 7..=12 | 16 | 18 => 0,
                other => return Err(bad(&format!("unknown BTF kind {other}"))),
            };
            off += extra;
            types.push(Type {
                kind,
                name: str_at(strs, name_off),
                size_or_type,
                members,
            });
        }
        let mut by_name = HashMap::new();
        for (id, t) in types.iter().enumerate() {
            if !t.name.is_empty() {
                by_name.entry((t.kind, t.name.clone())).or_insert(id as u32);
            }
        }
        Ok(Btf { types, by_name })
    }

    /// Whether a FUNC of this name exists (e.g. `dxgvmb_send_sync_msg`).
    pub fn has_func(&self, name: &str) -> bool {
        self.by_name.contains_key(&(KIND_FUNC, name.to_string()))
    }

    /// Byte offset of `member` in `struct name`, searching anonymous struct/union members.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Option<u32> {
        let id = *self.by_name.get(&(KIND_STRUCT, strukt.to_string()))?;
        self.find_member(id, member, 0).map(|bits| bits / 8)
    }

    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.name == member {
                return Some(m.bit_offset);
            }
        }
        for m in &t.members {
            if m.name.is_empty() {
                let inner = self.skip_modifiers(m.type_id);
                let it = self.types.get(inner as usize)?;
                if (it.kind == KIND_STRUCT || it.kind == KIND_UNION)
                    && let Some(o) = self.find_member(inner, member, depth + 1)
                {
                    return Some(m.bit_offset + o);
                }
            }
        }
        None
    }

    fn skip_modifiers(&self, mut id: u32) -> u32 {
        // TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG point at another type.
        for _ in 0..16 {
            match self.types.get(id as usize) {
                Some(t) if matches!(t.kind, 8..=11 | 18) => id = t.size_or_type,
                _ => break,
            }
        }
        id
    }

    /// Where the raw `sys_enter` / `sys_exit` programs find a syscall's first three
    /// arguments and its number in `struct pt_regs`: `(offset of dx, offset of orig_ax)`,
    /// when `dx`, `si`, `di` (arguments 2, 1, 0 on x86_64) are three contiguous words, so
    /// that one read fetches them. `None` elsewhere (the classic tracepoints are used).
    pub fn syscall_regs(&self) -> Option<(u32, u32)> {
        let dx = self.member_offset("pt_regs", "dx")?;
        let si = self.member_offset("pt_regs", "si")?;
        let di = self.member_offset("pt_regs", "di")?;
        let orig_ax = self.member_offset("pt_regs", "orig_ax")?;
        (si == dx + 8 && di == dx + 16).then_some((dx, orig_ax))
    }

    /// The offsets the kernel side needs.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, ProbeError> {
        let get = |s: &str, m: &str| {
            self.member_offset(s, m).ok_or_else(|| ProbeError::Btf {
                what: format!("struct {s} has no member {m}"),
            })
        };
        Ok(KernelOffsets {
            task_files: get("task_struct", "files")?,
            files_fdt: get("files_struct", "fdt")?,
            fdt_fd: get("fdtable", "fd")?,
            fdt_max_fds: get("fdtable", "max_fds")?,
            file_inode: get("file", "f_inode")?,
            inode_rdev: get("inode", "i_rdev")?,
            inode_sb: get("inode", "i_sb")?,
            inode_ino: get("inode", "i_ino")?,
            sb_dev: get("super_block", "s_dev")?,
            inode_mode: get("inode", "i_mode")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmlinux_offsets_resolve() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux on this machine");
            return;
        };
        let o = btf.kernel_offsets().expect("offsets");
        // i_mode is the first member of struct inode on every kernel since 2.6.
        assert_eq!(o.inode_mode, 0);
        assert!(o.task_files > 0 && o.file_inode > 0);
        assert!(btf.has_func("do_sys_open") || btf.has_func("do_sys_openat2"));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            btf.syscall_regs(),
            Some((96, 120)),
            "x86_64 pt_regs: dx, si, di at 96..120, orig_ax at 120"
        );
    }
}
