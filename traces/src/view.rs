//! Borrowed views of records: decoding a block without allocating.
//!
//! [`Record`] owns its strings and byte buffers, so decoding one allocates (an ioctl's
//! buffer list, each buffer's bytes, a VMBus message's bytes). Consumers that only
//! aggregate (statistics, indexes, column builders) visit records as [`RecordRef`]s
//! instead: the hot kinds (ioctl, VMBus) borrow their bytes from the decompressed block,
//! the rare kinds are decoded owned and lent out. [`crate::Block::for_each`] and
//! [`crate::visit_record`] produce them; [`RecordRef::to_owned`] turns one into a
//! [`Record`] (that is how [`crate::decode_record`] works, so both paths decode the same
//! way).

use crate::msgpack::Cur;
use crate::record::*;

/// One record, borrowed from a decoded block (or from an owned record).
#[derive(Debug, Clone, Copy)]
pub enum RecordRef<'a> {
    /// An ioctl.
    Ioctl(IoctlRef<'a>),
    /// A VMBus message.
    Vmbus(VmbusRef<'a>),
    /// Any other kind, decoded owned (they are rare), including [`Record::Unknown`].
    Other(&'a Record),
}

impl RecordRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> Record {
        match self {
            RecordRef::Ioctl(r) => Record::Ioctl(r.to_owned()),
            RecordRef::Vmbus(r) => Record::Vmbus(r.to_owned()),
            RecordRef::Other(r) => (*r).clone(),
        }
    }

    /// The record's kind, or `None` for an unknown kind.
    pub fn kind(&self) -> Option<RecordKind> {
        match self {
            RecordRef::Ioctl(_) => Some(RecordKind::Ioctl),
            RecordRef::Vmbus(_) => Some(RecordKind::Vmbus),
            RecordRef::Other(r) => r.kind(),
        }
    }

    /// Timestamp (ioctls: entry time), as [`Record::ts`].
    pub fn ts(&self) -> Option<u64> {
        match self {
            RecordRef::Ioctl(r) => Some(r.ts_enter),
            RecordRef::Vmbus(r) => Some(r.ts),
            RecordRef::Other(r) => r.ts(),
        }
    }

    /// Latest timestamp covered, as [`Record::ts_end`].
    pub fn ts_end(&self) -> Option<u64> {
        match self {
            RecordRef::Ioctl(r) => Some(r.ts_exit.max(r.ts_enter)),
            RecordRef::Vmbus(r) => Some(r.ts),
            RecordRef::Other(r) => r.ts_end(),
        }
    }
}

/// An ioctl record whose buffers are borrowed. Fields as in [`IoctlRecord`].
#[derive(Debug, Clone, Copy)]
#[expect(
    missing_docs,
    reason = "the fields mirror IoctlRecord's, documented there"
)]
pub struct IoctlRef<'a> {
    pub id: u64,
    pub ts_enter: u64,
    pub ts_exit: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub dev: u64,
    pub cmd: u32,
    pub arg: u64,
    pub ret: i64,
    /// The captured buffers, decoded as they are iterated.
    pub buffers: BuffersRef<'a>,
}

impl<'a> IoctlRef<'a> {
    /// An owned copy.
    pub fn to_owned(&self) -> IoctlRecord {
        let mut r = IoctlRecord::default();
        self.clone_into(&mut r);
        r
    }

    /// Makes `out` an owned copy ([`IoctlRef::to_owned`]'s record), reusing the storage
    /// of `out`'s buffers (their vector, paths and bytes): no allocation once `out` has
    /// held a record of the same shape.
    pub fn clone_into(&self, out: &mut IoctlRecord) {
        out.id = self.id;
        out.ts_enter = self.ts_enter;
        out.ts_exit = self.ts_exit;
        out.pid = self.pid;
        out.tid = self.tid;
        out.fd = self.fd;
        out.dev = self.dev;
        out.cmd = self.cmd;
        out.arg = self.arg;
        out.ret = self.ret;
        let n = self.buffers.len();
        out.buffers.truncate(n);
        out.buffers.reserve_exact(n - out.buffers.len());
        for (i, b) in self.buffers.iter().enumerate() {
            match out.buffers.get_mut(i) {
                Some(o) => b.clone_into(o),
                None => out.buffers.push(b.to_owned()),
            }
        }
    }
}

impl<'a> From<&'a IoctlRecord> for IoctlRef<'a> {
    fn from(r: &'a IoctlRecord) -> Self {
        IoctlRef {
            id: r.id,
            ts_enter: r.ts_enter,
            ts_exit: r.ts_exit,
            pid: r.pid,
            tid: r.tid,
            fd: r.fd,
            dev: r.dev,
            cmd: r.cmd,
            arg: r.arg,
            ret: r.ret,
            buffers: BuffersRef(Bufs::Owned(&r.buffers)),
        }
    }
}

/// A captured buffer, borrowed. Fields as in [`Buffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(missing_docs, reason = "the fields mirror Buffer's, documented there")]
pub struct BufferRef<'a> {
    pub addr: u64,
    pub role: BufferRole,
    pub path: &'a str,
    pub len: u64,
    pub flags: u8,
    pub data: &'a [u8],
}

impl BufferRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> Buffer {
        let mut b = Buffer::default();
        self.clone_into(&mut b);
        b
    }

    /// Makes `out` an owned copy, reusing its path's and bytes' storage.
    pub fn clone_into(&self, out: &mut Buffer) {
        out.addr = self.addr;
        out.role = self.role;
        out.path.clear();
        out.path.push_str(self.path);
        out.len = self.len;
        out.flags = self.flags;
        out.data.clear();
        out.data.extend_from_slice(self.data);
    }
}

impl<'a> From<&'a Buffer> for BufferRef<'a> {
    fn from(b: &'a Buffer) -> Self {
        BufferRef {
            addr: b.addr,
            role: b.role,
            path: &b.path,
            len: b.len,
            flags: b.flags,
            data: &b.data,
        }
    }
}

/// The buffer list of an [`IoctlRef`]: either still MessagePack (checked when the record
/// was decoded, parsed again as it is iterated) or an owned record's buffers.
#[derive(Debug, Clone, Copy)]
pub struct BuffersRef<'a>(Bufs<'a>);

#[derive(Debug, Clone, Copy)]
enum Bufs<'a> {
    /// `n` buffer arrays back to back.
    Wire {
        bytes: &'a [u8],
        n: u32,
    },
    Owned(&'a [Buffer]),
}

impl<'a> BuffersRef<'a> {
    /// Number of buffers.
    pub fn len(&self) -> usize {
        match self.0 {
            Bufs::Wire { n, .. } => n as usize,
            Bufs::Owned(b) => b.len(),
        }
    }

    /// No buffers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffers in order.
    pub fn iter(&self) -> BufferIter<'a> {
        BufferIter(match self.0 {
            Bufs::Wire { bytes, n } => It::Wire(Cur { buf: bytes, pos: 0 }, n),
            Bufs::Owned(b) => It::Owned(b.iter()),
        })
    }
}

impl<'a> IntoIterator for BuffersRef<'a> {
    type Item = BufferRef<'a>;
    type IntoIter = BufferIter<'a>;
    fn into_iter(self) -> BufferIter<'a> {
        self.iter()
    }
}

/// Iterator over a [`BuffersRef`].
pub struct BufferIter<'a>(It<'a>);

enum It<'a> {
    Wire(Cur<'a>, u32),
    Owned(std::slice::Iter<'a, Buffer>),
}

impl<'a> Iterator for BufferIter<'a> {
    type Item = BufferRef<'a>;

    fn next(&mut self) -> Option<BufferRef<'a>> {
        match &mut self.0 {
            It::Wire(c, left) => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // Checked by `buffers` when the record was decoded; a failure here is
                // impossible, and would only end the iteration early.
                let b = buffer(c);
                if b.is_none() {
                    *left = 0;
                }
                b
            }
            It::Owned(it) => it.next().map(BufferRef::from),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            It::Wire(_, left) => *left as usize,
            It::Owned(it) => it.len(),
        };
        (n, Some(n))
    }
}

/// One buffer body: `[addr, role, path, len, flags, data]`.
#[inline(always)]
fn buffer<'a>(c: &mut Cur<'a>) -> Option<BufferRef<'a>> {
    if c.array()? != 6 {
        return None;
    }
    Some(BufferRef {
        addr: c.u64()?,
        role: BufferRole::try_from(u8::try_from(c.u64()?).ok()?).ok()?,
        path: c.str()?,
        len: c.u64()?,
        flags: u8::try_from(c.u64()?).ok()?,
        data: c.bin()?,
    })
}

/// A VMBus message whose bytes are borrowed. Fields as in [`VmbusMessage`].
#[derive(Debug, Clone, Copy)]
#[expect(
    missing_docs,
    reason = "the fields mirror VmbusMessage's, documented there"
)]
pub struct VmbusRef<'a> {
    pub ts: u64,
    pub dir: VmbusDir,
    pub channel: Option<u64>,
    pub request_id: u64,
    pub is_async: bool,
    pub status: Option<i64>,
    pub ioctl_id: Option<u64>,
    pub pid: u32,
    pub tid: u32,
    pub len: u64,
    pub flags: u8,
    pub bytes: &'a [u8],
}

impl VmbusRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> VmbusMessage {
        VmbusMessage {
            ts: self.ts,
            dir: self.dir,
            channel: self.channel,
            request_id: self.request_id,
            is_async: self.is_async,
            status: self.status,
            ioctl_id: self.ioctl_id,
            pid: self.pid,
            tid: self.tid,
            len: self.len,
            flags: self.flags,
            bytes: self.bytes.to_vec(),
        }
    }
}

impl<'a> From<&'a VmbusMessage> for VmbusRef<'a> {
    fn from(m: &'a VmbusMessage) -> Self {
        VmbusRef {
            ts: m.ts,
            dir: m.dir,
            channel: m.channel,
            request_id: m.request_id,
            is_async: m.is_async,
            status: m.status,
            ioctl_id: m.ioctl_id,
            pid: m.pid,
            tid: m.tid,
            len: m.len,
            flags: m.flags,
            bytes: &m.bytes,
        }
    }
}

/// The body fields after the ones this version knows (a newer minor's additions) are
/// skipped; fewer fields than known (an older writer) go to the serde path, which
/// defaults them.
#[inline]
fn body_header(c: &mut Cur<'_>, kind: RecordKind) -> Option<usize> {
    c.array()?.checked_sub(kind.field_count())
}

#[inline]
fn skip_n(c: &mut Cur<'_>, n: usize) -> Option<()> {
    for _ in 0..n {
        c.skip()?;
    }
    Some(())
}

/// Hand-written decoder of an ioctl body at `pos`: the record and where it ends, or
/// `None` when the body uses an encoding this path does not take (serde then decides).
pub(crate) fn ioctl_ref(buf: &[u8], pos: usize) -> Option<(IoctlRef<'_>, usize)> {
    let mut c = Cur { buf, pos };
    let extra = body_header(&mut c, RecordKind::Ioctl)?;
    let id = c.u64()?;
    let ts_enter = c.u64()?;
    let ts_exit = c.u64()?;
    let pid = u32::try_from(c.u64()?).ok()?;
    let tid = u32::try_from(c.u64()?).ok()?;
    let fd = i32::try_from(c.i64()?).ok()?;
    let dev = c.u64()?;
    let cmd = u32::try_from(c.u64()?).ok()?;
    let arg = c.u64()?;
    let ret = c.i64()?;
    let n = c.array()?;
    let start = c.pos;
    for _ in 0..n {
        buffer(&mut c)?;
    }
    let bytes = &buf[start..c.pos];
    skip_n(&mut c, extra)?;
    let r = IoctlRef {
        id,
        ts_enter,
        ts_exit,
        pid,
        tid,
        fd,
        dev,
        cmd,
        arg,
        ret,
        buffers: BuffersRef(Bufs::Wire {
            bytes,
            n: u32::try_from(n).ok()?,
        }),
    };
    Some((r, c.pos))
}

/// Hand-written decoder of a VMBus body at `pos`, as [`ioctl_ref`].
pub(crate) fn vmbus_ref(buf: &[u8], pos: usize) -> Option<(VmbusRef<'_>, usize)> {
    let mut c = Cur { buf, pos };
    let extra = body_header(&mut c, RecordKind::Vmbus)?;
    let r = VmbusRef {
        ts: c.u64()?,
        dir: VmbusDir::try_from(u8::try_from(c.u64()?).ok()?).ok()?,
        channel: c.opt(|c| c.u64())?,
        request_id: c.u64()?,
        is_async: c.bool()?,
        status: c.opt(|c| c.i64())?,
        ioctl_id: c.opt(|c| c.u64())?,
        pid: u32::try_from(c.u64()?).ok()?,
        tid: u32::try_from(c.u64()?).ok()?,
        len: c.u64()?,
        flags: u8::try_from(c.u64()?).ok()?,
        bytes: c.bin()?,
    };
    skip_n(&mut c, extra)?;
    Some((r, c.pos))
}
