//! Minimal MessagePack walking: find where a value ends without decoding it. Used to skip
//! unknown record kinds and extra trailing fields written by newer minor versions.

/// Why a value could not be walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalkError(pub &'static str);

/// Deepest nesting accepted: bounds recursion on hostile input.
const MAX_DEPTH: u32 = 64;

/// Returns the length in bytes of the MessagePack value at the start of `buf`.
pub(crate) fn value_len(buf: &[u8]) -> Result<usize, WalkError> {
    let mut pos = 0usize;
    skip(buf, &mut pos, 0)?;
    Ok(pos)
}

/// Reads an array header at `pos`, returning the element count and advancing `pos`.
pub(crate) fn read_array_len(buf: &[u8], pos: &mut usize) -> Result<u32, WalkError> {
    let m = *buf.get(*pos).ok_or(WalkError("unexpected end of data"))?;
    *pos += 1;
    match m {
        0x90..=0x9f => Ok((m & 0x0f) as u32),
        0xdc => Ok(be(buf, pos, 2)? as u32),
        0xdd => Ok(be(buf, pos, 4)? as u32),
        _ => Err(WalkError("expected an array")),
    }
}

/// Reads an unsigned integer at `pos`.
pub(crate) fn read_uint(buf: &[u8], pos: &mut usize) -> Result<u64, WalkError> {
    let m = *buf.get(*pos).ok_or(WalkError("unexpected end of data"))?;
    *pos += 1;
    match m {
        0x00..=0x7f => Ok(m as u64),
        0xcc => be(buf, pos, 1),
        0xcd => be(buf, pos, 2),
        0xce => be(buf, pos, 4),
        0xcf => be(buf, pos, 8),
        _ => Err(WalkError("expected an unsigned integer")),
    }
}

fn be(buf: &[u8], pos: &mut usize, n: usize) -> Result<u64, WalkError> {
    let end = pos.checked_add(n).ok_or(WalkError("length overflow"))?;
    let bytes = buf
        .get(*pos..end)
        .ok_or(WalkError("unexpected end of data"))?;
    *pos = end;
    Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
}

fn advance(buf: &[u8], pos: &mut usize, n: u64) -> Result<(), WalkError> {
    let end = (*pos as u64)
        .checked_add(n)
        .ok_or(WalkError("length overflow"))?;
    if end > buf.len() as u64 {
        return Err(WalkError("unexpected end of data"));
    }
    *pos = end as usize;
    Ok(())
}

/// Advances `pos` past one value.
pub(crate) fn skip(buf: &[u8], pos: &mut usize, depth: u32) -> Result<(), WalkError> {
    if depth > MAX_DEPTH {
        return Err(WalkError("nesting too deep"));
    }
    let m = *buf.get(*pos).ok_or(WalkError("unexpected end of data"))?;
    *pos += 1;
    let (items, bytes): (u64, u64) = match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
        0x80..=0x8f => (2 * (m & 0x0f) as u64, 0),
        0x90..=0x9f => ((m & 0x0f) as u64, 0),
        0xa0..=0xbf => (0, (m & 0x1f) as u64),
        0xc4 | 0xd9 => (0, be(buf, pos, 1)?),
        0xc5 | 0xda => (0, be(buf, pos, 2)?),
        0xc6 | 0xdb => (0, be(buf, pos, 4)?),
        0xc7 => (0, be(buf, pos, 1)? + 1),
        0xc8 => (0, be(buf, pos, 2)? + 1),
        0xc9 => (0, be(buf, pos, 4)? + 1),
        0xca | 0xce | 0xd2 => (0, 4),
        0xcb | 0xcf | 0xd3 => (0, 8),
        0xcc | 0xd0 => (0, 1),
        0xcd | 0xd1 => (0, 2),
        0xd4 => (0, 2),
        0xd5 => (0, 3),
        0xd6 => (0, 5),
        0xd7 => (0, 9),
        0xd8 => (0, 17),
        0xdc => (be(buf, pos, 2)?, 0),
        0xdd => (be(buf, pos, 4)?, 0),
        0xde => (2 * be(buf, pos, 2)?, 0),
        0xdf => (2 * be(buf, pos, 4)?, 0),
        0xc1 => return Err(WalkError("reserved marker 0xc1")),
    };
    advance(buf, pos, bytes)?;
    // Each element needs at least one byte: reject impossible counts before looping.
    if items > (buf.len() - *pos) as u64 {
        return Err(WalkError("container longer than the data"));
    }
    for _ in 0..items {
        skip(buf, pos, depth + 1)?;
    }
    Ok(())
}

/// Writes an array header for `n` elements.
pub(crate) fn write_array_len(out: &mut Vec<u8>, n: u32) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= u16::MAX as u32 {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A forward-only reader of MessagePack values, borrowing strings and byte strings from
/// the buffer: the hand-written fast path for the two hot record kinds (ioctl and VMBus).
/// Any unexpected marker returns `None` and the caller falls back to the serde decoder,
/// which accepts every encoding serde would and produces the precise error.
pub(crate) struct Cur<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cur<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// A big-endian integer of `N` bytes (1, 2, 4 or 8): one load and a byte swap.
    #[inline(always)]
    fn be<const N: usize>(&mut self) -> Option<u64> {
        let end = self.pos.checked_add(N)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        let mut b = [0u8; 8];
        b[8 - N..].copy_from_slice(s);
        Some(u64::from_be_bytes(b))
    }

    #[inline(always)]
    pub fn array(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some((m & 0x0f) as usize),
            0xdc => Some(self.be::<2>()? as usize),
            0xdd => Some(self.be::<4>()? as usize),
            _ => None,
        }
    }

    #[inline(always)]
    pub fn u64(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(m as u64),
            0xcc => self.be::<1>(),
            0xcd => self.be::<2>(),
            0xce => self.be::<4>(),
            0xcf => self.be::<8>(),
            _ => None,
        }
    }

    #[inline(always)]
    pub fn i64(&mut self) -> Option<i64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(m as i64),
            m @ 0xe0..=0xff => Some(m as i8 as i64),
            0xcc => self.be::<1>().map(|v| v as i64),
            0xcd => self.be::<2>().map(|v| v as i64),
            0xce => self.be::<4>().map(|v| v as i64),
            0xcf => self.be::<8>().and_then(|v| i64::try_from(v).ok()),
            0xd0 => self.be::<1>().map(|v| v as u8 as i8 as i64),
            0xd1 => self.be::<2>().map(|v| v as u16 as i16 as i64),
            0xd2 => self.be::<4>().map(|v| v as u32 as i32 as i64),
            0xd3 => self.be::<8>().map(|v| v as i64),
            _ => None,
        }
    }

    #[inline(always)]
    pub fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// `Some(None)` for nil.
    #[inline(always)]
    pub fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if *self.buf.get(self.pos)? == 0xc0 {
            self.pos += 1;
            Some(None)
        } else {
            f(self).map(Some)
        }
    }

    /// A string borrowed from the buffer (UTF-8 checked).
    #[inline(always)]
    pub fn str(&mut self) -> Option<&'a str> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => (m & 0x1f) as usize,
            0xd9 => self.be::<1>()? as usize,
            0xda => self.be::<2>()? as usize,
            0xdb => self.be::<4>()? as usize,
            _ => return None,
        };
        if n == 0 {
            return Some("");
        }
        std::str::from_utf8(self.take(n)?).ok()
    }

    /// A byte string borrowed from the buffer.
    #[inline(always)]
    pub fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => self.be::<1>()? as usize,
            0xc5 => self.be::<2>()? as usize,
            0xc6 => self.be::<4>()? as usize,
            _ => return None,
        };
        self.take(n)
    }

    /// Skips one value of any type (extra trailing fields of a newer minor version).
    #[inline(always)]
    pub fn skip(&mut self) -> Option<()> {
        skip(self.buf, &mut self.pos, 0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_values_written_by_rmp_serde() {
        let v = (
            1u8,
            "hello",
            vec![1u64, 1 << 40],
            serde_bytes::ByteBuf::from(vec![7u8; 300]),
            Some(-5i64),
            None::<u8>,
            std::collections::BTreeMap::from([("k", 1.5f64)]),
        );
        let bytes = rmp_serde::to_vec(&v).unwrap();
        let mut with_tail = bytes.clone();
        with_tail.extend_from_slice(&[0xc3, 0xc2]);
        assert_eq!(value_len(&with_tail).unwrap(), bytes.len());
    }

    #[test]
    fn rejects_truncated_and_hostile_input() {
        let bytes = rmp_serde::to_vec(&("abc", vec![1u32, 2, 3])).unwrap();
        for cut in 0..bytes.len() {
            assert!(value_len(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // array claiming 2^32-1 elements with no data
        assert!(value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        // deep nesting
        assert!(value_len(&[0x91; 200]).is_err());
    }
}
