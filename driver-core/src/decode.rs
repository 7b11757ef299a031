//! Decoding: ioctl argument structs, captured pointer buffers and VMBus messages become
//! trees of [`Field`]s (serde-serialisable). Decoding never fails: unknown request codes
//! decode as raw hex with their `_IOC` fields, short or garbage buffers decode as far as
//! they go and say so.

use crate::dxg::types::BuildTestCommandBuffer;
use crate::dxg::vmbus::{self, HostToVmHdr, ReplyLayout, StatusReturn};
use crate::ioc::IocFields;
use crate::layout::{Kind, StructDesc, read_uint, sign_extend};
use crate::ntstatus::render_ntstatus;
use crate::schema::{
    ArgKind, Device, IoctlDesc, PointerDesc, VmbusChannel, VmbusCmd, desc_path_of, find_pointer,
    lookup_code,
};
use serde::Serialize;

/// Bytes shown in a hex dump before it is cut.
pub const HEX_DUMP_LIMIT: usize = 256;
/// Elements of a pointed-to array decoded one by one before the rest is summarised.
pub const ELEM_LIMIT: usize = 256;

/// What a captured buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferRole {
    /// The ioctl argument struct at syscall entry.
    StructIn,
    /// The ioctl argument struct at syscall exit.
    StructOut,
    /// A pointed-to buffer read at entry.
    PtrIn,
    /// A pointed-to buffer read at exit.
    PtrOut,
}

/// One captured buffer, as handed to [`decode_ioctl`].
#[derive(Debug, Clone, Copy)]
pub struct BufferView<'a> {
    /// Role.
    pub role: BufferRole,
    /// Pointer path (`allocation_info[1].priv_drv_data`); empty for the struct.
    pub path: &'a str,
    /// User address it was read from.
    pub addr: u64,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Fewer bytes were captured than the call used.
    pub truncated: bool,
    /// The memory could not be read.
    pub unreadable: bool,
}

/// One decoded field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    /// Name (`adapter`, `[3]`, `out`, `allocation_info`).
    pub name: String,
    /// Byte offset within its parent buffer.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// Type name (`u32`, `handle`, `enum …`, `struct …`, `bytes`).
    pub ty: String,
    /// Raw integer value, for fields of ≤ 8 bytes that were present.
    pub raw: Option<u64>,
    /// Human rendering.
    pub rendered: String,
    /// Sub-fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Field>,
}

impl Field {
    fn leaf(
        name: impl Into<String>,
        offset: usize,
        size: usize,
        ty: impl Into<String>,
        raw: Option<u64>,
        rendered: String,
    ) -> Field {
        Field {
            name: name.into(),
            offset,
            size,
            ty: ty.into(),
            raw,
            rendered,
            children: Vec::new(),
        }
    }

    /// Child by name.
    pub fn child(&self, name: &str) -> Option<&Field> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Indented text form (`name @off+size: type = rendered`), one line per field; the
    /// format of the golden files.
    pub fn to_text(&self, indent: usize, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "{:indent$}{} @{}+{}: {} = {}",
            "",
            self.name,
            self.offset,
            self.size,
            self.ty,
            self.rendered,
            indent = indent
        );
        for c in &self.children {
            c.to_text(indent + 2, out);
        }
    }
}

/// Hex dump `aa bb cc …`, cut after [`HEX_DUMP_LIMIT`] bytes.
pub fn hex_dump(b: &[u8]) -> String {
    if b.is_empty() {
        return "(empty)".into();
    }
    let mut s = String::with_capacity(b.len().min(HEX_DUMP_LIMIT) * 3);
    for (i, x) in b.iter().take(HEX_DUMP_LIMIT).enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{x:02x}"));
    }
    if b.len() > HEX_DUMP_LIMIT {
        s.push_str(&format!(" … ({} bytes)", b.len()));
    }
    s
}

fn render_scalar(kind: &Kind, v: u64, size: usize) -> String {
    match kind {
        Kind::U => v.to_string(),
        Kind::I => sign_extend(v, size).to_string(),
        Kind::Hex => format!("{v:#x}"),
        Kind::Bool => (v != 0).to_string(),
        Kind::Handle => format!("{v:#010x}"),
        Kind::NtStatus => render_ntstatus(v as u32),
        Kind::Pointer => {
            if v == 0 {
                "NULL".into()
            } else {
                format!("{v:#x}")
            }
        }
        Kind::Fd => sign_extend(v, size).to_string(),
        Kind::Enum(e) => {
            let sv = sign_extend(v, size);
            let named = e.name_of(sv).or_else(|| e.name_of(v as i64));
            match named {
                Some(n) => format!("{n} ({sv})"),
                None => sv.to_string(),
            }
        }
        Kind::Flags(f) => {
            let r = f.render(v);
            if v == 0 {
                "0".into()
            } else {
                format!("{v:#x} {r}")
            }
        }
        Kind::Luid => format!("{:08x}:{:08x}", v as u32, v >> 32),
        _ => format!("{v:#x}"),
    }
}

/// Decodes one field of `kind` from `b` (the field's own bytes; may be short).
pub fn decode_value(name: &str, offset: usize, size: usize, kind: &Kind, b: &[u8]) -> Field {
    let ty = kind.type_name(size);
    if b.len() < size {
        return Field::leaf(
            name,
            offset,
            size,
            ty,
            None,
            format!("<missing: {} of {size} bytes>", b.len()),
        );
    }
    let b = &b[..size];
    match kind {
        Kind::Bytes | Kind::Pad => Field::leaf(name, offset, size, ty, None, hex_dump(b)),
        Kind::Utf16 => {
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|u| *u != 0)
                .collect();
            Field::leaf(
                name,
                offset,
                size,
                ty,
                None,
                format!("{:?}", String::from_utf16_lossy(&units)),
            )
        }
        Kind::Struct(d) => {
            let children = decode_struct_fields(d, b);
            Field {
                name: name.into(),
                offset,
                size,
                ty,
                raw: None,
                rendered: String::new(),
                children,
            }
        }
        Kind::Array(ek, n) => {
            let n = *n;
            let es = size.checked_div(n).unwrap_or(0);
            let mut children = Vec::new();
            if es > 0 {
                // Trailing all-zero elements are left out of both children and summary.
                let mut last = 0;
                for i in 0..n {
                    if b[i * es..(i + 1) * es].iter().any(|x| *x != 0) {
                        last = i + 1;
                    }
                }
                for i in 0..last.min(ELEM_LIMIT) {
                    children.push(decode_value(
                        &format!("[{i}]"),
                        i * es,
                        es,
                        ek,
                        &b[i * es..(i + 1) * es],
                    ));
                }
            }
            let summary = if children.is_empty() {
                format!("[0 × {n}]")
            } else if children.iter().all(|c| c.children.is_empty()) {
                format!(
                    "[{}]",
                    children
                        .iter()
                        .map(|c| c.rendered.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                format!("[{} of {n} non-zero]", children.len())
            };
            Field {
                name: name.into(),
                offset,
                size,
                ty,
                raw: None,
                rendered: summary,
                children,
            }
        }
        _ => match read_uint(b, 0, size) {
            Some(v) => Field::leaf(
                name,
                offset,
                size,
                ty,
                Some(v),
                render_scalar(kind, v, size),
            ),
            None => Field::leaf(name, offset, size, ty, None, hex_dump(b)),
        },
    }
}

/// Decodes the top-level fields of `desc` from `b` (short buffers decode partially).
pub fn decode_struct_fields(desc: &StructDesc, b: &[u8]) -> Vec<Field> {
    desc.c_fields()
        .map(|f| {
            let end = (f.offset + f.size).min(b.len());
            let slice = if f.offset < b.len() {
                &b[f.offset..end]
            } else {
                &[][..]
            };
            decode_value(f.name, f.offset, f.size, &f.kind, slice)
        })
        .collect()
}

/// Decodes a whole struct as one [`Field`] named `name`.
pub fn decode_struct(name: &str, desc: &StructDesc, b: &[u8]) -> Field {
    let mut rendered = String::new();
    if b.len() < desc.size {
        rendered = format!("short: {} of {} bytes", b.len(), desc.size);
    } else if b.len() > desc.size {
        rendered = format!("{} extra bytes", b.len() - desc.size);
    }
    let mut children = decode_struct_fields(desc, b);
    if b.len() > desc.size {
        children.push(Field::leaf(
            "tail",
            desc.size,
            b.len() - desc.size,
            "bytes",
            None,
            hex_dump(&b[desc.size..]),
        ));
    }
    Field {
        name: name.into(),
        offset: 0,
        size: b.len(),
        ty: format!("struct {}", desc.name),
        raw: None,
        rendered,
        children,
    }
}

/// A decoded ioctl call.
#[derive(Debug, Clone, Serialize)]
pub struct DecodedCall {
    /// Device whose table knows the code.
    pub device: Option<Device>,
    /// Macro name, or `UNKNOWN` for codes no table knows.
    pub name: String,
    /// Request code, `0x…`.
    pub code: String,
    /// `_IOC` fields of the code.
    pub ioc: IocFields,
    /// The code is in a table.
    pub known: bool,
    /// `arg` (rendered per the entry's [`ArgKind`]).
    pub arg: Field,
    /// One field per buffer: `in`, `out` (the struct), then pointer buffers by path.
    pub buffers: Vec<Field>,
    /// Remarks (unsupported ioctl, size mismatch…).
    pub notes: Vec<String>,
}

impl DecodedCall {
    /// Text form (golden-file format).
    pub fn to_text(&self) -> String {
        let mut s = format!("{} code={} {}\n", self.name, self.code, self.ioc);
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        self.arg.to_text(0, &mut s);
        for b in &self.buffers {
            b.to_text(0, &mut s);
        }
        s
    }
}

fn decode_ptr_buffer(entry: &IoctlDesc, root: Option<&[u8]>, v: &BufferView<'_>) -> Field {
    let dp = desc_path_of(v.path);
    let pd: Option<&'static PointerDesc> = find_pointer(entry, &dp);
    let mut f = match pd {
        Some(p) => decode_elems(entry, p, root, v.data),
        None => Field::leaf(v.path, 0, v.data.len(), "bytes", None, hex_dump(v.data)),
    };
    f.name = v.path.to_string();
    annotate(&mut f, v);
    f
}

fn annotate(f: &mut Field, v: &BufferView<'_>) {
    let mut tags = vec![
        format!("{:?}", v.role).to_lowercase(),
        format!("addr {:#x}", v.addr),
    ];
    if v.truncated {
        tags.push("truncated".into());
    }
    if v.unreadable {
        tags.push("unreadable".into());
    }
    let t = format!("({})", tags.join(", "));
    f.rendered = if f.rendered.is_empty() {
        t
    } else {
        format!("{t} {}", f.rendered)
    };
}

fn decode_elems(entry: &IoctlDesc, p: &PointerDesc, root: Option<&[u8]>, data: &[u8]) -> Field {
    let es = p.elem_size as usize;
    // ESCAPE's known-escape payload: a byte buffer holding a struct with its own pointers.
    if es == 1
        && !p.nested.is_empty()
        && entry.name == "LX_DXESCAPE"
        && root.is_some_and(|root| p.nested[0].cond.eval(data, root))
    {
        return decode_struct(p.path, &BuildTestCommandBuffer::DESC, data);
    }
    if es <= 1 {
        return Field::leaf(p.path, 0, data.len(), "bytes", None, hex_dump(data));
    }
    let n = data.len() / es;
    let mut children = Vec::new();
    for i in 0..n.min(ELEM_LIMIT) {
        children.push(decode_value(
            &format!("[{i}]"),
            i * es,
            es,
            &p.elem,
            &data[i * es..(i + 1) * es],
        ));
    }
    let mut rendered = format!("{n} × {es} bytes");
    if n > ELEM_LIMIT {
        rendered.push_str(&format!(", first {ELEM_LIMIT} shown"));
    }
    if !data.len().is_multiple_of(es) {
        rendered.push_str(&format!(", {} stray bytes", data.len() % es));
    }
    if children.iter().all(|c| c.children.is_empty()) && n <= 16 {
        rendered = format!(
            "[{}]",
            children
                .iter()
                .map(|c| c.rendered.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Field {
        name: p.path.into(),
        offset: 0,
        size: data.len(),
        ty: format!("{}[{n}]", p.elem.type_name(es)),
        raw: None,
        rendered,
        children,
    }
}

/// Decodes one ioctl call from its request code, `arg` and captured buffers.
/// Never fails; unknown codes decode as raw hex with the `_IOC` fields spelled out.
pub fn decode_ioctl(code: u32, arg: u64, bufs: &[BufferView<'_>]) -> DecodedCall {
    let ioc = IocFields::of(code);
    let Some(entry) = lookup_code(code) else {
        let buffers = bufs
            .iter()
            .map(|v| {
                let mut f = Field::leaf(
                    if v.path.is_empty() { "arg" } else { v.path },
                    0,
                    v.data.len(),
                    "bytes",
                    None,
                    hex_dump(v.data),
                );
                annotate(&mut f, v);
                f
            })
            .collect();
        return DecodedCall {
            device: None,
            name: "UNKNOWN".into(),
            code: format!("{code:#010x}"),
            ioc,
            known: false,
            arg: Field::leaf("arg", 0, 8, "u64", Some(arg), format!("{arg:#x}")),
            buffers,
            notes: vec![format!("request code not in any table: {ioc}")],
        };
    };
    let mut notes = Vec::new();
    if !entry.note.is_empty() {
        notes.push(entry.note.to_string());
    }
    let arg_field = match entry.arg {
        ArgKind::Value(k) => decode_value("arg", 0, 8, &k, &arg.to_le_bytes()),
        ArgKind::Struct => Field::leaf(
            "arg",
            0,
            8,
            "pointer",
            Some(arg),
            render_scalar(&Kind::Pointer, arg, 8),
        ),
        ArgKind::None => Field::leaf("arg", 0, 8, "unused", Some(arg), format!("{arg:#x}")),
    };
    let root_in = bufs
        .iter()
        .find(|b| b.role == BufferRole::StructIn)
        .map(|b| b.data);
    let root_out = bufs
        .iter()
        .find(|b| b.role == BufferRole::StructOut)
        .map(|b| b.data);
    let mut buffers = Vec::new();
    for v in bufs {
        match v.role {
            BufferRole::StructIn | BufferRole::StructOut => {
                let name = if v.role == BufferRole::StructIn {
                    "in"
                } else {
                    "out"
                };
                let mut f = decode_struct(name, entry.layout, v.data);
                if entry.layout.fields.is_empty() {
                    f.children = vec![Field::leaf(
                        "raw",
                        0,
                        v.data.len(),
                        "bytes",
                        None,
                        hex_dump(v.data),
                    )];
                }
                annotate(&mut f, v);
                buffers.push(f);
            }
            BufferRole::PtrIn => buffers.push(decode_ptr_buffer(entry, root_in.or(root_out), v)),
            BufferRole::PtrOut => buffers.push(decode_ptr_buffer(entry, root_out.or(root_in), v)),
        }
    }
    DecodedCall {
        device: Some(entry.device),
        name: entry.name.to_string(),
        code: format!("{code:#010x}"),
        ioc,
        known: true,
        arg: arg_field,
        buffers,
        notes,
    }
}

/// Direction of a VMBus message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VmbusDirection {
    /// Guest → host request (may start with the 16-byte ext header).
    GuestToHost,
    /// Host → guest inbound command.
    HostToGuest,
    /// Completion of a request (give the request's command when known).
    Reply {
        /// The command being answered.
        request: Option<VmbusCmd>,
    },
}

/// A decoded VMBus message.
#[derive(Debug, Clone, Serialize)]
pub struct DecodedMessage {
    /// Command name (`CREATEALLOCATION`, `G:CREATEPROCESS`), `UNKNOWN` or `REPLY …`.
    pub name: String,
    /// Command identity, when recognised.
    pub cmd: Option<VmbusCmd>,
    /// The message started with the 16-byte ext header.
    pub ext_header: bool,
    /// Total bytes.
    pub size: usize,
    /// The decoded message (ext header, then the command struct).
    pub fields: Vec<Field>,
}

impl DecodedMessage {
    /// Text form.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{} ({} bytes{})\n",
            self.name,
            self.size,
            if self.ext_header { ", ext header" } else { "" }
        );
        for f in &self.fields {
            f.to_text(0, &mut s);
        }
        s
    }
}

/// Display name of a command (`G:` prefix for global ones, `H:` for host→guest).
pub fn vmbus_cmd_label(cmd: VmbusCmd) -> String {
    let n = vmbus::command_name(cmd)
        .map(str::to_string)
        .unwrap_or_else(|| format!("#{}", cmd.value));
    match cmd.channel {
        VmbusChannel::Global => format!("G:{n}"),
        VmbusChannel::Adapter => n,
        VmbusChannel::HostToGuest => format!("H:{n}"),
    }
}

/// Whether a guest→host message starts with the ext header: its first u32 is the
/// command offset 16 (without the header, the first u32 is command_id's low half, 0).
pub fn has_ext_header(b: &[u8]) -> bool {
    read_uint(b, 0, 4) == Some(16) && b.len() >= 16 + 24
}

/// The command a VMBus message carries, read from its header alone (no field tree): the
/// cheap path for statistics and indexes over millions of messages, and the one place
/// that knows where the command sits. A guest→host message's channel type picks the
/// family (1 global, 0 per adapter; anything else is not a command), a host→guest
/// message is always host-initiated; a reply carries no command of its own, so it is the
/// request's, when the caller knows it.
pub fn vmbus_command(dir: VmbusDirection, bytes: &[u8]) -> Option<VmbusCmd> {
    match dir {
        VmbusDirection::GuestToHost => {
            let body = if has_ext_header(bytes) {
                &bytes[16..]
            } else {
                bytes
            };
            let d = &vmbus::VgpuToHostHdr::DESC;
            let off = |n: &str| d.field(n).map(|f| f.offset);
            let chan = read_uint(body, off("channel_bits")?, 4)? & 0xff;
            let value = read_uint(body, off("command_type")?, 4)? as u32;
            let channel = match chan {
                1 => VmbusChannel::Global,
                0 => VmbusChannel::Adapter,
                _ => return None,
            };
            Some(VmbusCmd { channel, value })
        }
        VmbusDirection::HostToGuest => {
            let off = HostToVmHdr::DESC.field("command_type").map(|f| f.offset)?;
            read_uint(bytes, off, 4).map(|v| VmbusCmd {
                channel: VmbusChannel::HostToGuest,
                value: v as u32,
            })
        }
        VmbusDirection::Reply { request } => request,
    }
}

/// Decodes a VMBus message. Never fails.
pub fn decode_vmbus(dir: VmbusDirection, bytes: &[u8]) -> DecodedMessage {
    match dir {
        VmbusDirection::GuestToHost => {
            let ext = has_ext_header(bytes);
            let mut fields = Vec::new();
            let body = if ext {
                fields.push(decode_struct(
                    "ext_header",
                    &vmbus::ExtHeader::DESC,
                    &bytes[..16],
                ));
                &bytes[16..]
            } else {
                bytes
            };
            let cmd = vmbus_command(dir, bytes);
            msg(
                cmd,
                cmd.and_then(vmbus::command).map(|c| c.request),
                ext,
                bytes.len(),
                fields,
                body,
            )
        }
        VmbusDirection::HostToGuest => {
            let cmd = vmbus_command(dir, bytes);
            let desc = cmd
                .and_then(vmbus::command)
                .map(|c| c.request)
                .or(Some(&HostToVmHdr::DESC));
            msg(cmd, desc, false, bytes.len(), Vec::new(), bytes)
        }
        VmbusDirection::Reply { request } => {
            let c = request.and_then(vmbus::command);
            let label = request.map(vmbus_cmd_label).unwrap_or_else(|| "?".into());
            let name = format!("REPLY {label}");
            let fields = match c.map(|c| c.reply) {
                Some(ReplyLayout::NtStatus) | Some(ReplyLayout::NtStatusOrAsync) => {
                    vec![decode_struct("reply", &StatusReturn::DESC, bytes)]
                }
                Some(ReplyLayout::Struct(d)) => vec![decode_struct("reply", d, bytes)],
                Some(ReplyLayout::Echo) => vec![decode_struct(
                    "reply",
                    c.map(|c| c.request).unwrap_or(&HostToVmHdr::DESC),
                    bytes,
                )],
                Some(ReplyLayout::Empty) if bytes.is_empty() => Vec::new(),
                _ => vec![Field::leaf(
                    "reply",
                    0,
                    bytes.len(),
                    "bytes",
                    None,
                    hex_dump(bytes),
                )],
            };
            DecodedMessage {
                name,
                cmd: request,
                ext_header: false,
                size: bytes.len(),
                fields,
            }
        }
    }
}

fn msg(
    cmd: Option<VmbusCmd>,
    desc: Option<&'static StructDesc>,
    ext: bool,
    size: usize,
    mut fields: Vec<Field>,
    body: &[u8],
) -> DecodedMessage {
    let name = cmd.map(vmbus_cmd_label).unwrap_or_else(|| "UNKNOWN".into());
    match desc {
        Some(d) => fields.push(decode_struct("command", d, body)),
        None => {
            let hdr = if body.len() >= 24 {
                decode_struct("header", &vmbus::VgpuToHostHdr::DESC, &body[..24])
            } else {
                Field::leaf("header", 0, body.len(), "bytes", None, hex_dump(body))
            };
            fields.push(hdr);
            if body.len() > 24 {
                fields.push(Field::leaf(
                    "body",
                    24,
                    body.len() - 24,
                    "bytes",
                    None,
                    hex_dump(&body[24..]),
                ));
            }
        }
    }
    DecodedMessage {
        name,
        cmd,
        ext_header: ext,
        size,
        fields,
    }
}
