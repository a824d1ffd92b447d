//! Streaming gzip (RFC 1952) and deflate (RFC 1950 zlib; raw RFC 1951 as sent by some
//! servers) decoding into a fixed window, with `miniz_oxide`'s core inflater.
//!
//! The inflater writes into a 32 KiB ring (the largest distance a deflate match may
//! reach back); each run it produces is handed on at once, so memory is the ring plus
//! the inflater's tables, whatever the body's size.

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_PARSE_ZLIB_HEADER,
};
use miniz_oxide::inflate::core::{DecompressorOxide, TINFL_LZ_DICT_SIZE, decompress};
use std::sync::OnceLock;

/// gzip header flag bits (RFC 1952 section 2.3.1).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const FRESERVED: u8 = 0xe0;

/// The gzip header's parts, in the order they appear.
const PART_FIXED: u8 = 0;
const PART_EXTRA: u8 = 1;
const PART_NAME: u8 = 2;
const PART_COMMENT: u8 = 3;
const PART_HEADER_CRC: u8 = 4;

/// The framing around the deflate data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    /// gzip members.
    Gzip,
    /// zlib, or raw deflate when the first two bytes are no zlib header.
    Deflate,
}

/// Where in the framing the decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// gzip: the fixed 10 header bytes, this many read so far.
    Fixed(u8),
    /// gzip: FEXTRA's length, this many bytes read, the value so far.
    ExtraLen(u8, u16),
    /// gzip: FEXTRA bytes left.
    Extra(u16),
    /// gzip: inside the zero-terminated FNAME.
    Name,
    /// gzip: inside the zero-terminated FCOMMENT.
    Comment,
    /// gzip: FHCRC bytes left (not checked: the CRC-32 of the data is).
    HeaderCrc(u8),
    /// deflate: the first byte, held until the second tells zlib from raw.
    Probe(Option<u8>),
    /// Compressed data; `true` when a zlib header and Adler-32 wrap it.
    Data(bool),
    /// gzip: trailer (CRC-32, size), this many bytes read.
    Trailer(u8),
    /// Between gzip members, or after the zlib/raw stream (further bytes are ignored).
    End,
    /// Failed.
    Failed,
}

/// Why decoding stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Corrupt;

/// An incremental gzip/deflate decoder.
pub(super) struct Inflater {
    format: Format,
    stage: Stage,
    /// gzip header flags.
    flags: u8,
    /// Whether any byte arrived (an empty body is a complete one).
    started: bool,
    inflater: DecompressorOxide,
    window: Box<[u8]>,
    /// Where the inflater writes next in `window`.
    at: usize,
    /// gzip: CRC-32 and size (mod 2^32) of the member's data so far, and the trailer read.
    crc: u32,
    size: u32,
    trailer: [u8; 8],
}

impl core::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Inflater")
            .field("format", &self.format)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl Inflater {
    /// A decoder before the first byte.
    pub fn new(format: Format) -> Self {
        Inflater {
            format,
            stage: match format {
                Format::Gzip => Stage::Fixed(0),
                Format::Deflate => Stage::Probe(None),
            },
            flags: 0,
            started: false,
            inflater: DecompressorOxide::new(),
            window: vec![0; TINFL_LZ_DICT_SIZE].into_boxed_slice(),
            at: 0,
            crc: 0,
            size: 0,
            trailer: [0; 8],
        }
    }

    /// Heap bytes held (tests check the bound).
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        core::mem::size_of::<Self>() + self.window.len()
    }

    /// Whether the input so far ends at a member's end (or nothing arrived).
    pub fn at_end(&self) -> bool {
        !self.started || self.stage == Stage::End
    }

    /// Decodes `input`, handing each decoded run to `out`; `out` returns `false` to stop.
    ///
    /// # Errors
    /// [`Corrupt`] when the input is no valid gzip/deflate stream (then and after).
    pub fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), Corrupt> {
        if !input.is_empty() {
            self.started = true;
        }
        while !input.is_empty() {
            if let Stage::Data(zlib) = self.stage {
                input = self.inflate(input, zlib, out)?;
                if let Stage::Data(_) = self.stage {
                    // All taken, or the reader stopped.
                    break;
                }
                continue;
            }
            let Some((&b, rest)) = input.split_first() else {
                break;
            };
            input = rest;
            match self.header_byte(b) {
                Ok(Some(held)) => {
                    // The probe decided: the held byte and this one are data.
                    let zlib = self.stage == Stage::Data(true);
                    self.inflate(&[held, b], zlib, out)?;
                }
                Ok(None) => {}
                Err(corrupt) => {
                    self.stage = Stage::Failed;
                    return Err(corrupt);
                }
            }
        }
        Ok(())
    }

    /// One framing byte; `Some(held)` when the deflate probe decided and `held` plus this
    /// byte are the first data bytes.
    fn header_byte(&mut self, b: u8) -> Result<Option<u8>, Corrupt> {
        self.stage = match self.stage {
            Stage::Fixed(n) => {
                match (n, b) {
                    (0, 0x1f) | (1, 0x8b) | (2, 8) | (4..=9, _) => {}
                    (3, flags) if flags & FRESERVED == 0 => self.flags = flags,
                    _ => return Err(Corrupt),
                }
                if n < 9 {
                    Stage::Fixed(n + 1)
                } else {
                    self.after(PART_FIXED)
                }
            }
            Stage::ExtraLen(0, _) => Stage::ExtraLen(1, u16::from(b)),
            Stage::ExtraLen(_, low) => match low | u16::from(b) << 8 {
                0 => self.after(PART_EXTRA),
                len => Stage::Extra(len),
            },
            Stage::Extra(1) => self.after(PART_EXTRA),
            Stage::Extra(left) => Stage::Extra(left - 1),
            Stage::Name if b == 0 => self.after(PART_NAME),
            Stage::Comment if b == 0 => self.after(PART_COMMENT),
            Stage::Name | Stage::Comment => self.stage,
            Stage::HeaderCrc(2) => Stage::HeaderCrc(1),
            Stage::HeaderCrc(_) => self.after(PART_HEADER_CRC),
            Stage::Probe(None) => Stage::Probe(Some(b)),
            Stage::Probe(Some(cmf)) => {
                let zlib = cmf & 0x0f == 8
                    && cmf >> 4 <= 7
                    && (u16::from(cmf) << 8 | u16::from(b)) % 31 == 0;
                self.stage = Stage::Data(zlib);
                return Ok(Some(cmf));
            }
            Stage::Trailer(n) => {
                if let Some(at) = self.trailer.get_mut(usize::from(n)) {
                    *at = b;
                }
                if n < 7 {
                    Stage::Trailer(n + 1)
                } else {
                    let [c0, c1, c2, c3, s0, s1, s2, s3] = self.trailer;
                    if u32::from_le_bytes([c0, c1, c2, c3]) != self.crc
                        || u32::from_le_bytes([s0, s1, s2, s3]) != self.size
                    {
                        return Err(Corrupt);
                    }
                    Stage::End
                }
            }
            // Another gzip member follows the first one.
            Stage::End if self.format == Format::Gzip => {
                self.inflater.init();
                self.crc = 0;
                self.size = 0;
                self.flags = 0;
                self.stage = Stage::Fixed(0);
                return self.header_byte(b);
            }
            Stage::End => Stage::End,
            Stage::Data(_) | Stage::Failed => return Err(Corrupt),
        };
        Ok(None)
    }

    /// The gzip header part that follows part number `done` (see the `PART_` constants).
    fn after(&self, done: u8) -> Stage {
        if done < PART_EXTRA && self.flags & FEXTRA != 0 {
            Stage::ExtraLen(0, 0)
        } else if done < PART_NAME && self.flags & FNAME != 0 {
            Stage::Name
        } else if done < PART_COMMENT && self.flags & FCOMMENT != 0 {
            Stage::Comment
        } else if done < PART_HEADER_CRC && self.flags & FHCRC != 0 {
            Stage::HeaderCrc(2)
        } else {
            Stage::Data(false)
        }
    }

    /// Inflates from `input`; returns what is left after the deflate stream's end (or nothing).
    fn inflate<'a>(
        &mut self,
        mut input: &'a [u8],
        zlib: bool,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<&'a [u8], Corrupt> {
        let flags = TINFL_FLAG_HAS_MORE_INPUT
            | if zlib {
                TINFL_FLAG_PARSE_ZLIB_HEADER
            } else {
                0
            };
        loop {
            let (status, read, written) =
                decompress(&mut self.inflater, input, &mut self.window, self.at, flags);
            input = input.get(read..).unwrap_or(&[]);
            let produced = self.window.get(self.at..self.at + written).unwrap_or(&[]);
            if self.format == Format::Gzip {
                self.crc = crc32(self.crc, produced);
                self.size = self.size.wrapping_add(written as u32);
            }
            let more = out(produced);
            self.at = (self.at + written) & (TINFL_LZ_DICT_SIZE - 1);
            match status {
                TINFLStatus::Done => {
                    self.stage = match self.format {
                        Format::Gzip => Stage::Trailer(0),
                        Format::Deflate => Stage::End,
                    };
                    return Ok(if more { input } else { &[] });
                }
                // All input taken; the reader wants no more.
                TINFLStatus::NeedsMoreInput => return Ok(&[]),
                TINFLStatus::HasMoreOutput if !more => return Ok(&[]),
                // The ring wrapped: go on (a call that moves nothing would never end).
                TINFLStatus::HasMoreOutput if read > 0 || written > 0 => {}
                _ => {
                    self.stage = Stage::Failed;
                    return Err(Corrupt);
                }
            }
        }
    }
}

/// The CRC-32 (IEEE, reflected) tables for slicing by 4: `[0]` is the byte table, `[k][n]`
/// the CRC of byte `n` followed by `k` zero bytes. Four independent lookups per 4 bytes:
/// the checksum costs no more than the inflating. Built on first use (once per VM), so the
/// 4 KiB are no data in the module.
fn crc_tables() -> &'static [[u32; 256]; 4] {
    static TABLES: OnceLock<[[u32; 256]; 4]> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut tables = [[0u32; 256]; 4];
        let [t0, rest @ ..] = &mut tables;
        for (n, entry) in (0u32..).zip(t0.iter_mut()) {
            *entry = (0..8).fold(n, |c, _| (c >> 1) ^ (0xedb8_8320 & (c & 1).wrapping_neg()));
        }
        let mut previous: &[u32; 256] = t0;
        for table in rest {
            for (entry, &c) in table.iter_mut().zip(previous) {
                *entry = (c >> 8) ^ t0[(c & 0xff) as usize];
            }
            previous = table;
        }
        tables
    })
}

/// `crc` (of the bytes before) extended over `bytes`.
pub(super) fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let [t0, t1, t2, t3] = crc_tables();
    let byte = |c: u32, b: u8| (c >> 8) ^ t0[((c ^ u32::from(b)) & 0xff) as usize];
    let mut words = bytes.chunks_exact(4);
    let mut c = !crc;
    for word in &mut words {
        let Ok(word) = <[u8; 4]>::try_from(word) else {
            break;
        };
        let x = c ^ u32::from_le_bytes(word);
        c = t3[(x & 0xff) as usize]
            ^ t2[((x >> 8) & 0xff) as usize]
            ^ t1[((x >> 16) & 0xff) as usize]
            ^ t0[(x >> 24) as usize];
    }
    !words.remainder().iter().fold(c, |c, &b| byte(c, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(crc32(0, b"12345"), b"6789"), 0xcbf4_3926);
        // Every split of a longer input: the 4-byte steps and the byte steps agree.
        let text = b"The quick brown fox jumps over the lazy dog";
        for at in 0..=text.len() {
            let (head, tail) = text.split_at(at);
            assert_eq!(crc32(crc32(0, head), tail), 0x414f_a339, "split at {at}");
        }
    }
}
