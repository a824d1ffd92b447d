//! Streaming gzip (RFC 1952) and deflate (RFC 1950 zlib; raw RFC 1951 as sent by some
//! servers) decoding into a fixed window, with the module's own inflater.
//!
//! The inflater writes into a 32 KiB ring (the largest distance a deflate match may
//! reach back); each run it produces is handed on at once, so memory is the ring plus
//! the inflater's state (two Huffman codes and one block's code lengths: under 6 KiB),
//! whatever the body's size.
//!
//! # Resuming
//! Input arrives in chunks cut anywhere. The inflater reads through a 64-bit bit buffer
//! and takes one element at a time: a block header, a stored block's LEN and NLEN, one
//! code length (or run of them) of a dynamic header, one literal, one length/distance
//! pair. An element is taken only once all its bits are there (at most 48); until then
//! they wait in the buffer and the next chunk goes on from there. Nothing else is held:
//! of a dynamic header, only its code lengths (320 bytes at most) while they are read.
//!
//! # What is refused
//! What `miniz_oxide`'s inflater (used before) refused: a block type of 3, a stored
//! block whose NLEN is not LEN's complement, more than 286 literal/length or 30 distance
//! codes, an over-subscribed Huffman code, an incomplete one with more than one symbol
//! (RFC 1951 allows one distance code, or none) and any incomplete code-length code, a
//! repeat before the first code length or past the last, the fixed code's literal/length
//! codes 286 and 287 and distance codes 30 and 31, a zlib header asking for a preset
//! dictionary, and a wrong Adler-32 (zlib) or CRC-32 or size (gzip). One more: a match
//! reaching before the first byte of its stream, which RFC 1951 forbids and which that
//! inflater, writing into a ring, let read stale bytes. Work is linear in input and
//! output: each element costs a bounded number of steps, and Huffman tables are built
//! once per dynamic block (the fixed ones again only after a dynamic block).

use std::sync::OnceLock;

/// gzip header flag bits (RFC 1952 section 2.3.1).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const FRESERVED: u8 = 0xe0;

/// zlib FLG bit: a preset dictionary is needed (RFC 1950 section 2.2), which no server sends.
const FDICT: u8 = 0x20;

/// The gzip header's parts, in the order they appear.
const PART_FIXED: u8 = 0;
const PART_EXTRA: u8 = 1;
const PART_NAME: u8 = 2;
const PART_COMMENT: u8 = 3;
const PART_HEADER_CRC: u8 = 4;

/// The ring: the largest distance a match may reach back, a power of two so a mask
/// keeps every index in bounds.
const WINDOW: usize = 1 << 15;
const MASK: usize = WINDOW - 1;

/// Codes up to this long are decoded with one table lookup; longer ones (rare by
/// construction: each is used at most once in 2^10 symbols) bit by bit.
const FAST_BITS: u32 = 10;
const FAST_SIZE: usize = 1 << FAST_BITS;
/// A fast-table entry for bits that begin a code longer than `FAST_BITS` (length field 0,
/// symbol field nonzero); an entry of 0 begins no code at all.
const LONG: u16 = 1 << 4;

/// Base and extra bits of the literal/length codes 257..=285 (RFC 1951 section 3.2.5).
#[rustfmt::skip]
const LENGTHS: [(u16, u8); 29] = [
    (3, 0), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0), (9, 0), (10, 0), (11, 1), (13, 1),
    (15, 1), (17, 1), (19, 2), (23, 2), (27, 2), (31, 2), (35, 3), (43, 3), (51, 3), (59, 3),
    (67, 4), (83, 4), (99, 4), (115, 4), (131, 5), (163, 5), (195, 5), (227, 5), (258, 0),
];

/// Base and extra bits of the distance codes 0..=29.
#[rustfmt::skip]
const DISTANCES: [(u16, u8); 30] = [
    (1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (7, 1), (9, 2), (13, 2),
    (17, 3), (25, 3), (33, 4), (49, 4), (65, 5), (97, 5), (129, 6), (193, 6),
    (257, 7), (385, 7), (513, 8), (769, 8), (1025, 9), (1537, 9), (2049, 10), (3073, 10),
    (4097, 11), (6145, 11), (8193, 12), (12289, 12), (16385, 13), (24577, 13),
];

/// The order in which a dynamic header lists the code-length code's lengths.
const CODE_LENGTH_ORDER: [u8; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

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
    /// zlib: the Adler-32 after the data, this many bytes read.
    Adler(u8),
    /// Between gzip members, or after the zlib/raw stream (further bytes are ignored).
    End,
    /// Failed.
    Failed,
}

/// Where in the deflate stream the inflater is: the next element to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    /// A block's 3-bit header.
    Header,
    /// A stored block's LEN and NLEN, after the byte boundary.
    StoredLen,
    /// Inside a stored block, this many bytes left.
    Stored(u16),
    /// A dynamic block's HLIT, HDIST and HCLEN.
    Sizes,
    /// A dynamic block's code-length code, this many of its lengths read.
    CodeLengthCode(u8),
    /// A dynamic block's literal/length and distance code lengths, this many read.
    Lengths(u16),
    /// Huffman-coded literals and matches.
    Codes,
    /// After the last block.
    Done,
}

/// Why taking an element stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Its bits have not all arrived.
    More,
    /// The reader wants no more output.
    Halt,
    /// The stream is invalid.
    Corrupt,
}

/// Why decoding stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Corrupt;

/// A canonical Huffman code (RFC 1951 section 3.2.2), ready to decode.
struct Code {
    /// Indexed by the next `FAST_BITS` input bits: `symbol << 4 | length` for a code that
    /// fits, `LONG` where a longer code begins, 0 where none does.
    fast: [u16; FAST_SIZE],
    /// How many codes have each length (index 0 unused), up to the longest.
    count: [u16; 16],
    longest: usize,
    /// The symbols ordered by code: by length, then by symbol.
    symbols: [u16; 288],
}

impl Code {
    /// An empty code (every input is refused until it is built).
    const EMPTY: Code = Code {
        fast: [0; FAST_SIZE],
        count: [0; 16],
        longest: 0,
        symbols: [0; 288],
    };

    /// Builds the code whose symbol `n` has code length `lengths[n]` (0: unused). An
    /// over-subscribed code is refused; an incomplete one too, unless `lenient` and it
    /// has at most one symbol (a one-distance code, or none, is valid deflate).
    fn build(&mut self, lengths: &[u8], lenient: bool) -> Result<(), Stop> {
        let mut count = [0u16; 16];
        let mut longest = 0;
        for &len in lengths {
            let len = usize::from(len & 15);
            count[len] += 1;
            longest = longest.max(len);
        }
        count[0] = 0;
        // Per length: the first code (RFC 1951's `next_code`) and where its symbols start
        // in `symbols`; `left` counts the codes still free, to find an over-subscribed or
        // incomplete code. Loops run to the longest length only (the rest changes nothing).
        let mut next = [0u32; 16];
        let mut start = [0u16; 16];
        let (mut left, mut used, mut code) = (1i32, 0u16, 0u32);
        for len in 1..=longest {
            let n = count[len & 15];
            left = (left << 1) - i32::from(n);
            if left < 0 {
                return Err(Stop::Corrupt);
            }
            code = (code + u32::from(count[(len - 1) & 15])) << 1;
            next[len & 15] = code;
            start[len & 15] = used;
            used += n;
        }
        if left > 0 && !(lenient && used <= 1) {
            return Err(Stop::Corrupt);
        }
        self.count = count;
        self.longest = longest;
        self.fast = [0; FAST_SIZE];
        for (symbol, &len) in (0u16..).zip(lengths) {
            let len = u32::from(len & 15);
            if len == 0 {
                continue;
            }
            let i = len as usize & 15;
            let code = next[i];
            next[i] += 1;
            if let Some(slot) = self.symbols.get_mut(usize::from(start[i])) {
                *slot = symbol;
            }
            start[i] += 1;
            // The table is indexed by bits in input order, so by the code reversed.
            if len <= FAST_BITS {
                let mut at = reversed(code, len);
                while let Some(slot) = self.fast.get_mut(at) {
                    *slot = symbol << 4 | len as u16;
                    at += 1 << len;
                }
            } else if let Some(slot) = self
                .fast
                .get_mut(reversed(code >> (len - FAST_BITS), FAST_BITS))
            {
                *slot = LONG;
            }
        }
        Ok(())
    }

    /// The symbol whose code begins `bits` (`have` of them valid, zeros above) and its length.
    #[inline(never)]
    fn decode(&self, bits: u64, have: u32) -> Result<(u16, u32), Stop> {
        let entry = self.fast[bits as usize & (FAST_SIZE - 1)];
        let len = u32::from(entry & 15);
        if len != 0 {
            return if len <= have {
                Ok((entry >> 4, len))
            } else {
                Err(Stop::More)
            };
        }
        if entry == 0 {
            // No code begins so (bits not yet here read as zeros: wait for them).
            return Err(if have >= FAST_BITS {
                Stop::Corrupt
            } else {
                Stop::More
            });
        }
        self.decode_long(bits, have)
    }

    /// `decode` for codes longer than `FAST_BITS`: canonical decoding, one bit at a time.
    #[inline(never)]
    fn decode_long(&self, bits: u64, have: u32) -> Result<(u16, u32), Stop> {
        // `code` the bits read so far, `first` the first code of this length, `index` where
        // this length's symbols start.
        let (mut code, mut first, mut index) = (0u32, 0u32, 0u32);
        for len in 1..=self.longest {
            code |= (bits >> (len - 1)) as u32 & 1;
            let n = u32::from(self.count[len & 15]);
            let offset = code.wrapping_sub(first);
            if offset < n {
                if len as u32 > have {
                    return Err(Stop::More);
                }
                let symbol = self.symbols.get((index + offset) as usize);
                return symbol.map(|&s| (s, len as u32)).ok_or(Stop::Corrupt);
            }
            index += n;
            first = (first + n) << 1;
            code <<= 1;
        }
        Err(if have as usize >= self.longest {
            Stop::Corrupt
        } else {
            Stop::More
        })
    }
}

/// `code`'s low `len` bits in reverse order.
fn reversed(code: u32, len: u32) -> usize {
    (code.reverse_bits() >> (32 - len)) as usize
}

/// An incremental gzip/deflate decoder.
pub(super) struct Inflater {
    format: Format,
    stage: Stage,
    /// gzip header flags.
    flags: u8,
    /// Whether any byte arrived (an empty body is a complete one).
    started: bool,
    /// The reader returned `false`: nothing more is decoded.
    halted: bool,
    window: Box<[u8; WINDOW]>,
    /// Where the next byte goes in `window`, and where the run not yet handed on starts.
    at: usize,
    flushed: usize,
    /// Whether the ring filled once in this stream (else `at` bytes were decoded).
    wrapped: bool,
    /// Input bits taken but not used (low bits first; `have` of them, zeros above).
    bits: u64,
    have: u32,
    block: Block,
    /// Whether the current block is the last one.
    last: bool,
    /// Whether `lit` and `dist` hold the fixed codes (built once, not per fixed block).
    fixed: bool,
    /// A dynamic header's sizes and code lengths (the code-length code's first).
    hlit: u16,
    hdist: u16,
    hclen: u8,
    lengths: [u8; 288 + 32],
    /// The literal/length code (while a dynamic header is read, its code-length code)
    /// and the distance code.
    lit: Code,
    dist: Code,
    /// gzip: CRC-32 and size (mod 2^32) of the member's data so far, and the trailer read.
    crc: u32,
    size: u32,
    trailer: [u8; 8],
    /// zlib: Adler-32 of the data so far.
    adler: u32,
}

impl core::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Inflater")
            .field("format", &self.format)
            .field("stage", &self.stage)
            .field("block", &self.block)
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
            halted: false,
            window: Box::new([0; WINDOW]),
            at: 0,
            flushed: 0,
            wrapped: false,
            bits: 0,
            have: 0,
            block: Block::Header,
            last: false,
            fixed: false,
            hlit: 0,
            hdist: 0,
            hclen: 0,
            lengths: [0; 288 + 32],
            lit: Code::EMPTY,
            dist: Code::EMPTY,
            crc: 0,
            size: 0,
            trailer: [0; 8],
            adler: 1,
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
        while !input.is_empty() && !self.halted {
            if let Stage::Data(zlib) = self.stage {
                let Some(rest) = self.inflate(input, zlib, out)? else {
                    // All taken, or the reader stopped.
                    break;
                };
                // The bytes after the stream that the bit buffer had already taken come
                // first (at most 7: the trailer's start).
                let (ahead, n) = self.read_ahead();
                self.feed(ahead.get(..n).unwrap_or_default(), out)?;
                input = rest;
                continue;
            }
            let Some((&b, rest)) = input.split_first() else {
                break;
            };
            input = rest;
            match self.header_byte(b) {
                // Raw deflate: the held byte and this one are data.
                Ok(Some(held)) => self.feed(&[held, b], out)?,
                Ok(None) => {}
                Err(corrupt) => {
                    self.stage = Stage::Failed;
                    return Err(corrupt);
                }
            }
        }
        Ok(())
    }

    /// One framing byte; `Some(held)` when the deflate probe found raw deflate and `held`
    /// plus this byte are its first bytes.
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
                if !zlib {
                    self.stage = Stage::Data(false);
                    return Ok(Some(cmf));
                }
                if b & FDICT != 0 {
                    return Err(Corrupt);
                }
                Stage::Data(true)
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
            Stage::Adler(n) => {
                if let Some(at) = self.trailer.get_mut(usize::from(n)) {
                    *at = b;
                }
                if n < 3 {
                    Stage::Adler(n + 1)
                } else {
                    let [a0, a1, a2, a3, ..] = self.trailer;
                    if u32::from_be_bytes([a0, a1, a2, a3]) != self.adler {
                        return Err(Corrupt);
                    }
                    Stage::End
                }
            }
            // Another gzip member follows the first one.
            Stage::End if self.format == Format::Gzip => {
                self.block = Block::Header;
                self.at = 0;
                self.flushed = 0;
                self.wrapped = false;
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

    /// Inflates from `input`: `Some(rest)` when the deflate stream ended before `rest`,
    /// `None` when all input was taken or the reader stopped.
    fn inflate<'a>(
        &mut self,
        input: &'a [u8],
        zlib: bool,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<Option<&'a [u8]>, Corrupt> {
        let mut pos = 0;
        let result = self.blocks(input, &mut pos, out);
        // What was decoded before the stream failed is handed on first, as it was produced.
        let more = self.flush(zlib, out);
        match result {
            Ok(()) => {
                self.stage = match (self.format, zlib) {
                    (Format::Gzip, _) => Stage::Trailer(0),
                    (Format::Deflate, true) => Stage::Adler(0),
                    (Format::Deflate, false) => Stage::End,
                };
                Ok(more.then(|| input.get(pos..).unwrap_or_default()))
            }
            Err(Stop::More | Stop::Halt) => Ok(None),
            Err(Stop::Corrupt) => {
                self.stage = Stage::Failed;
                Err(Corrupt)
            }
        }
    }

    /// Hands the run decoded since the last call to `out` (with its checksums); `false`
    /// once the reader wants no more.
    fn flush(&mut self, zlib: bool, out: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        if self.halted {
            return false;
        }
        let run = self.window.get(self.flushed..self.at).unwrap_or_default();
        self.flushed = self.at;
        if run.is_empty() {
            return true;
        }
        if self.format == Format::Gzip {
            self.crc = crc32(self.crc, run);
            self.size = self.size.wrapping_add(run.len() as u32);
        } else if zlib {
            self.adler = adler32(self.adler, run);
        }
        self.halted = !out(run);
        !self.halted
    }

    /// Whole bytes the bit buffer took past the stream's end (its last bits dropped to
    /// the byte boundary), and how many; the buffer is left empty for a next stream.
    fn read_ahead(&mut self) -> ([u8; 8], usize) {
        let n = (self.have / 8) as usize;
        let bytes = (self.bits >> (self.have % 8)).to_le_bytes();
        self.bits = 0;
        self.have = 0;
        (bytes, n)
    }

    /// Takes input bytes into the bit buffer while it has room for a whole one.
    #[inline]
    fn refill(&mut self, input: &[u8], pos: &mut usize) {
        let rest = input.get(*pos..).unwrap_or_default();
        // Eight bytes at once (fewer at the input's end); the ones that fit are kept.
        let word = match rest.first_chunk::<8>() {
            Some(word) => u64::from_le_bytes(*word),
            None => last_bytes(rest),
        };
        let fit = (63u32.saturating_sub(self.have) / 8).min(rest.len().min(8) as u32);
        self.bits |= (word & ((1 << (fit * 8)) - 1)) << self.have;
        self.have += fit * 8;
        *pos += fit as usize;
    }

    /// The next `n` (at most 32) bits as a number, taken.
    fn take(&mut self, n: u32) -> Result<u32, Stop> {
        let (value, bits, have) = take(self.bits, self.have, n)?;
        self.bits = bits;
        self.have = have;
        Ok(value)
    }

    /// Takes elements until the stream's end (`Ok`), missing input, the reader's stop
    /// or invalid data.
    fn blocks(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), Stop> {
        loop {
            if !matches!(self.block, Block::Stored(_)) {
                self.refill(input, pos);
            }
            self.block = match self.block {
                Block::Header => {
                    let header = self.take(3)?;
                    self.last = header & 1 != 0;
                    match header >> 1 {
                        0 => Block::StoredLen,
                        1 => {
                            self.fixed_codes()?;
                            Block::Codes
                        }
                        2 => Block::Sizes,
                        _ => return Err(Stop::Corrupt),
                    }
                }
                Block::StoredLen => {
                    // To the byte boundary (once: then `have` stays a multiple of 8).
                    self.bits >>= self.have % 8;
                    self.have -= self.have % 8;
                    let lens = self.take(32)?;
                    if lens & 0xffff != !lens >> 16 {
                        return Err(Stop::Corrupt);
                    }
                    Block::Stored(lens as u16)
                }
                Block::Stored(left) => {
                    self.stored(left, input, pos, out)?;
                    self.block_end()
                }
                Block::Sizes => {
                    let sizes = self.take(14)?;
                    self.hlit = 257 + (sizes & 31) as u16;
                    self.hdist = 1 + (sizes >> 5 & 31) as u16;
                    self.hclen = 4 + (sizes >> 10) as u8;
                    if self.hlit > 286 || self.hdist > 30 {
                        return Err(Stop::Corrupt);
                    }
                    self.lengths = [0; 288 + 32];
                    Block::CodeLengthCode(0)
                }
                Block::CodeLengthCode(read) if read < self.hclen => {
                    let len = self.take(3)?;
                    let symbol = CODE_LENGTH_ORDER.get(usize::from(read)).copied();
                    if let Some(slot) = self.lengths.get_mut(usize::from(symbol.unwrap_or(0))) {
                        *slot = len as u8;
                    }
                    Block::CodeLengthCode(read + 1)
                }
                Block::CodeLengthCode(_) => {
                    self.fixed = false;
                    self.lit
                        .build(self.lengths.get(..19).unwrap_or_default(), false)?;
                    Block::Lengths(0)
                }
                Block::Lengths(read) => self.code_length(read)?,
                Block::Codes => {
                    self.codes(input, pos, out)?;
                    self.block_end()
                }
                Block::Done => return Ok(()),
            };
        }
    }

    /// What follows the end of a block.
    fn block_end(&self) -> Block {
        if self.last {
            Block::Done
        } else {
            Block::Header
        }
    }

    /// Makes `lit` and `dist` the fixed codes (RFC 1951 section 3.2.6), unless they are.
    fn fixed_codes(&mut self) -> Result<(), Stop> {
        if !self.fixed {
            // All 32 distance codes, so the code is complete; 30 and 31 are refused when used.
            for (symbol, len) in self.lengths.iter_mut().enumerate() {
                *len = match symbol {
                    0..=143 | 280..=287 => 8,
                    144..=255 => 9,
                    256..=279 => 7,
                    _ => 5,
                };
            }
            self.hlit = 288;
            self.hdist = 32;
            self.codes_from_lengths()?;
            self.fixed = true;
        }
        Ok(())
    }

    /// Builds `lit` and `dist` from the first `hlit` and the next `hdist` code lengths.
    fn codes_from_lengths(&mut self) -> Result<Block, Stop> {
        let hlit = usize::from(self.hlit);
        let lit = self.lengths.get(..hlit).unwrap_or_default();
        self.lit.build(lit, true)?;
        let dist = self.lengths.get(hlit..hlit + usize::from(self.hdist));
        self.dist.build(dist.unwrap_or_default(), true)?;
        Ok(Block::Codes)
    }

    /// One code length (or one run of them) of a dynamic header, `read` of them so far.
    fn code_length(&mut self, read: u16) -> Result<Block, Stop> {
        let total = self.hlit + self.hdist;
        if read >= total {
            return self.codes_from_lengths();
        }
        let (symbol, len) = self.lit.decode(self.bits, self.have)?;
        // The repeat codes' extra bits, and the least run each gives.
        let (extra, least) = match symbol {
            16 => (2, 3),
            17 => (3, 3),
            18 => (7, 11),
            _ => (0, 1),
        };
        let (more, bits, have) = take(self.bits >> len, self.have - len, extra)?;
        let value = match symbol {
            0..=15 => symbol as u8,
            // The previous length again (there must be one).
            16 => {
                let previous = usize::from(read).checked_sub(1);
                *previous
                    .and_then(|at| self.lengths.get(at))
                    .ok_or(Stop::Corrupt)?
            }
            _ => 0,
        };
        let end = read + least + more as u16;
        let run = self.lengths.get_mut(usize::from(read)..usize::from(end));
        run.filter(|_| end <= total)
            .ok_or(Stop::Corrupt)?
            .fill(value);
        self.bits = bits;
        self.have = have;
        Ok(Block::Lengths(end))
    }

    /// Copies a stored block's `left` bytes (first those the bit buffer took).
    fn stored(
        &mut self,
        mut left: u16,
        input: &[u8],
        pos: &mut usize,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), Stop> {
        while left > 0 && self.have >= 8 {
            let b = self.take(8)? as u8;
            left -= 1;
            self.block = Block::Stored(left);
            self.put(b, out)?;
        }
        while left > 0 {
            let rest = input.get(*pos..).unwrap_or_default();
            let n = usize::from(left).min(rest.len()).min(WINDOW - self.at);
            let (Some(to), Some(from)) = (self.window.get_mut(self.at..self.at + n), rest.get(..n))
            else {
                return Err(Stop::Corrupt);
            };
            if n == 0 {
                return Err(Stop::More);
            }
            to.copy_from_slice(from);
            *pos += n;
            left -= n as u16;
            self.block = Block::Stored(left);
            self.at += n;
            if self.at == WINDOW {
                self.wrap(out)?;
            }
        }
        Ok(())
    }

    /// Decodes literals and matches to the end of the block.
    fn codes(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), Stop> {
        loop {
            // 48 bits are the longest element; fewer after a refill only at the input's end.
            if self.have < 48 {
                self.refill(input, pos);
            }
            // Taken from copies, kept only once the whole element is there.
            let (symbol, len) = self.lit.decode(self.bits, self.have)?;
            let (bits, have) = (self.bits >> len, self.have - len);
            if symbol < 256 {
                self.bits = bits;
                self.have = have;
                self.put(symbol as u8, out)?;
                continue;
            }
            if symbol == 256 {
                self.bits = bits;
                self.have = have;
                return Ok(());
            }
            let &(base, extra) = LENGTHS
                .get(usize::from(symbol - 257))
                .ok_or(Stop::Corrupt)?;
            let (extra, bits, have) = take(bits, have, u32::from(extra))?;
            let length = usize::from(base) + extra as usize;
            let (symbol, len) = self.dist.decode(bits, have)?;
            let (bits, have) = (bits >> len, have - len);
            let &(base, extra) = DISTANCES.get(usize::from(symbol)).ok_or(Stop::Corrupt)?;
            let (extra, bits, have) = take(bits, have, u32::from(extra))?;
            let distance = usize::from(base) + extra as usize;
            if distance > self.at && !self.wrapped {
                return Err(Stop::Corrupt);
            }
            self.bits = bits;
            self.have = have;
            self.copy(distance, length, out)?;
        }
    }

    /// Appends one byte to the ring.
    #[inline]
    fn put(&mut self, b: u8, out: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Stop> {
        self.window[self.at & MASK] = b;
        self.at += 1;
        if self.at == WINDOW {
            return self.wrap(out);
        }
        Ok(())
    }

    /// Appends `length` bytes from `distance` back (overlapping: a run repeats).
    #[inline]
    fn copy(
        &mut self,
        distance: usize,
        mut length: usize,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), Stop> {
        while length > 0 {
            // Up to the ring's end at most, then the ring is handed on.
            let to = self.at;
            let n = length.min(WINDOW - to);
            let from = to.wrapping_sub(distance) & MASK;
            if distance == 1 {
                // A run of one byte (the commonest overlap): a fill.
                let b = self.window[from & MASK];
                if let Some(run) = self.window.get_mut(to..to + n) {
                    run.fill(b);
                }
            } else if from < to {
                // The source does not wrap. Where it overlaps the destination, the bytes
                // repeat with period `distance`: each move copies all that is there, doubling.
                let mut done = 0;
                while done < n {
                    let k = (n - done).min(done + distance);
                    let parts = self.window.split_at_mut_checked(to + done);
                    let Some((written, free)) = parts else {
                        return Err(Stop::Corrupt);
                    };
                    let (Some(source), Some(target)) =
                        (written.get(from..from + k), free.get_mut(..k))
                    else {
                        return Err(Stop::Corrupt);
                    };
                    target.copy_from_slice(source);
                    done += k;
                }
            } else {
                for i in 0..n {
                    self.window[(to + i) & MASK] = self.window[(from + i) & MASK];
                }
            }
            self.at = to + n;
            length -= n;
            if self.at == WINDOW {
                self.wrap(out)?;
            }
        }
        Ok(())
    }

    /// The ring is full: hands it on and starts over at its beginning.
    #[inline(never)]
    fn wrap(&mut self, out: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Stop> {
        let more = self.flush(self.stage == Stage::Data(true), out);
        self.at = 0;
        self.flushed = 0;
        self.wrapped = true;
        if more { Ok(()) } else { Err(Stop::Halt) }
    }
}

/// The next `n` (at most 32) of `have` bits as a number, and the bits after them.
#[inline]
fn take(bits: u64, have: u32, n: u32) -> Result<(u32, u64, u32), Stop> {
    if n > have {
        return Err(Stop::More);
    }
    let value = (bits & ((1u64 << n) - 1)) as u32;
    Ok((value, bits >> n, have - n))
}

/// The input's last bytes (fewer than 8), little-endian, zeros above.
#[inline(never)]
fn last_bytes(rest: &[u8]) -> u64 {
    let mut word = [0; 8];
    if let Some(to) = word.get_mut(..rest.len()) {
        to.copy_from_slice(rest);
    }
    u64::from_le_bytes(word)
}

/// `adler` (of the bytes before) extended over `bytes` (RFC 1950 section 8).
fn adler32(adler: u32, bytes: &[u8]) -> u32 {
    const BASE: u32 = 65521;
    let (mut a, mut b) = (adler & 0xffff, adler >> 16);
    // 5552 bytes is the longest run whose sums cannot overflow before the reduction.
    for run in bytes.chunks(5552) {
        for &x in run {
            a += u32::from(x);
            b += a;
        }
        a %= BASE;
        b %= BASE;
    }
    b << 16 | a
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

    #[test]
    fn adler32_matches_known_values() {
        assert_eq!(adler32(1, b""), 1);
        assert_eq!(adler32(1, b"Wikipedia"), 0x11e6_0398);
        // Long enough for the sums to be reduced several times, and split anywhere.
        let data = vec![0xff; 20_000];
        let whole = adler32(1, &data);
        let (head, tail) = data.split_at(7_777);
        assert_eq!(adler32(adler32(1, head), tail), whole);
        assert_eq!(whole, 0x9f51_d664);
    }

    /// What a decoder made of a stream.
    #[derive(Debug, PartialEq, Eq)]
    struct Decoded {
        data: Vec<u8>,
        result: Result<(), Corrupt>,
        at_end: bool,
    }

    impl Decoded {
        /// Whole and valid.
        fn ok(data: &[u8]) -> Decoded {
            Decoded {
                data: data.to_vec(),
                result: Ok(()),
                at_end: true,
            }
        }
    }

    /// Decodes `stream` fed in chunks of `chunk` bytes.
    fn decode(format: Format, stream: &[u8], chunk: usize) -> Decoded {
        let mut inflater = Inflater::new(format);
        let mut data = Vec::new();
        let mut result = Ok(());
        for piece in stream.chunks(chunk.max(1)) {
            result = inflater.feed(piece, &mut |run| {
                data.extend_from_slice(run);
                true
            });
            if result.is_err() {
                break;
            }
        }
        Decoded {
            data,
            result,
            at_end: inflater.at_end(),
        }
    }

    /// The framings the differential tests compress with.
    #[derive(Clone, Copy, Debug)]
    enum Framing {
        Raw,
        Zlib,
        Gzip,
    }

    fn compress(framing: Framing, data: &[u8], level: u8) -> Vec<u8> {
        match framing {
            Framing::Raw => miniz_oxide::deflate::compress_to_vec(data, level),
            Framing::Zlib => miniz_oxide::deflate::compress_to_vec_zlib(data, level),
            Framing::Gzip => {
                let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
                out.extend(miniz_oxide::deflate::compress_to_vec(data, level));
                out.extend(crc32(0, data).to_le_bytes());
                out.extend((data.len() as u32).to_le_bytes());
                out
            }
        }
    }

    fn format_of(framing: Framing) -> Format {
        match framing {
            Framing::Gzip => Format::Gzip,
            Framing::Raw | Framing::Zlib => Format::Deflate,
        }
    }

    // Deterministic pseudo-random test data: the parser tests' generator.
    use super::super::tests::Rng;

    /// Words from a small vocabulary: text as compressible as a JSON or event-stream body.
    fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
        const WORDS: [&str; 12] = [
            "the ",
            "usage",
            "\"input_tokens\":",
            "data: ",
            "event: message_delta\n",
            "{\"type\":",
            "claude ",
            "0123",
            "\n\n",
            "stop_reason ",
            "Hello, world! ",
            "x",
        ];
        let mut out = Vec::with_capacity(len + 32);
        while out.len() < len {
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
        }
        out.truncate(len);
        out
    }

    fn random(rng: &mut Rng, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.next() as u8).collect()
    }

    /// The test inputs: text, random bytes and repetitive data, 0 to 100 KB.
    fn inputs() -> Vec<Vec<u8>> {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut inputs = vec![
            Vec::new(),
            b"a".to_vec(),
            text(&mut rng, 300),
            random(&mut rng, 1_000),
            vec![0; 5_000],
            text(&mut rng, 20_000),
            b"abc".repeat(7_000),
            random(&mut rng, 40_000),
            text(&mut rng, 100_000),
        ];
        // A random block repeated from just under a window back: the longest distances.
        let block = random(&mut rng, 32_000);
        inputs.push([&block[..], &block[..], &block[..1_000]].concat());
        // Text with random bytes mixed in: blocks of every kind in one stream.
        let mut mixed = text(&mut rng, 30_000);
        for _ in 0..3_000 {
            let at = rng.below(mixed.len());
            mixed[at] = rng.next() as u8;
        }
        inputs.push(mixed);
        inputs
    }

    const FRAMINGS: [Framing; 3] = [Framing::Raw, Framing::Zlib, Framing::Gzip];

    #[test]
    fn decodes_what_miniz_compresses_fed_in_any_chunks() {
        for (i, data) in inputs().iter().enumerate() {
            for (j, framing) in FRAMINGS.into_iter().enumerate() {
                // Every level 0..=10 comes up across the inputs.
                let level = ((i * 4 + j * 3) % 11) as u8;
                let stream = compress(framing, data, level);
                for chunk in [1, 7, 64, 4096, stream.len()] {
                    let decoded = decode(format_of(framing), &stream, chunk);
                    assert!(
                        decoded == Decoded::ok(data),
                        "input {i} ({} bytes), {framing:?}, level {level}, chunks of {chunk}: {:?}, {:?}, {} bytes",
                        data.len(),
                        decoded.result,
                        decoded.at_end,
                        decoded.data.len(),
                    );
                }
            }
        }
        // Every level on one input, in every framing.
        let data = &inputs()[5];
        for level in 0..=10 {
            for framing in FRAMINGS {
                let stream = compress(framing, data, level);
                for chunk in [13, stream.len()] {
                    let decoded = decode(format_of(framing), &stream, chunk);
                    assert!(decoded == Decoded::ok(data), "{framing:?}, level {level}");
                }
            }
        }
    }

    /// What `miniz_oxide`'s inflater makes of a zlib or raw stream (chosen by the first two
    /// bytes as `Inflater` chooses): its output, and whether it accepted the stream.
    fn reference(stream: &[u8]) -> (Vec<u8>, bool) {
        let zlib = match stream {
            [cmf, flg, ..] => {
                cmf & 0x0f == 8
                    && cmf >> 4 <= 7
                    && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
            }
            _ => false,
        };
        let decoded = if zlib {
            miniz_oxide::inflate::decompress_to_vec_zlib(stream)
        } else {
            miniz_oxide::inflate::decompress_to_vec(stream)
        };
        match decoded {
            Ok(data) => (data, true),
            Err(error) => (error.output, false),
        }
    }

    #[test]
    fn corrupt_streams_fail_or_stop_and_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let data = [
            text(&mut rng, 3_000),
            random(&mut rng, 700),
            b"abcd".repeat(500),
        ];
        for (i, data) in data.iter().enumerate() {
            for (j, framing) in FRAMINGS.into_iter().enumerate() {
                let level = [1, 6, 9, 0][(i + j) % 4];
                let stream = compress(framing, data, level);
                let format = format_of(framing);
                // Cut anywhere: what was decoded is a prefix, the stream is not at its end, and
                // nothing is called corrupt (every byte so far was valid).
                for cut in (0..stream.len()).step_by(1 + stream.len() / 300) {
                    let decoded = decode(format, &stream[..cut], 1 + cut % 50);
                    assert_eq!(decoded.result, Ok(()), "{framing:?} cut at {cut}");
                    assert!(cut == 0 || !decoded.at_end, "{framing:?} cut at {cut}");
                    assert!(data.starts_with(&decoded.data), "{framing:?} cut at {cut}");
                }
                // Bytes changed: refused, or cut short, or (where no checksum protects the
                // data) decoded as the reference decoder decodes it.
                for _ in 0..200 {
                    let mut bad = stream.clone();
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(bad.len());
                        if rng.below(2) == 0 {
                            bad[at] ^= 1 << rng.below(8);
                        } else {
                            bad[at] = rng.next() as u8;
                        }
                    }
                    let decoded = decode(format, &bad, 1 + rng.below(100));
                    let accepted = decoded.result.is_ok() && decoded.at_end;
                    if let Framing::Gzip = framing {
                        assert!(!accepted || decoded.data == *data, "{bad:?}");
                        continue;
                    }
                    let (expected, reference_accepted) = reference(&bad);
                    // Accepted only what the reference accepts, as it decodes it; otherwise a
                    // prefix of what it decoded (it also lets a match reach before the data).
                    assert!(!accepted || reference_accepted, "{bad:?}");
                    assert!(expected.starts_with(&decoded.data), "{bad:?}");
                    if accepted {
                        assert_eq!(decoded.data, expected, "{bad:?}");
                    }
                }
            }
        }
    }

    /// Writes a raw deflate stream bit by bit, for streams no compressor makes.
    #[derive(Default)]
    struct Writer {
        bytes: Vec<u8>,
        bits: u32,
    }

    impl Writer {
        /// `n` bits of `value`, low bit first (header fields, extra bits).
        fn bits(&mut self, value: u32, n: u32) -> &mut Self {
            for i in 0..n {
                if self.bits.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                if let Some(last) = self.bytes.last_mut() {
                    *last |= ((value >> i & 1) as u8) << (self.bits % 8);
                }
                self.bits += 1;
            }
            self
        }

        /// Symbol `symbol` of the canonical code with these `lengths`, high bit first.
        fn symbol(&mut self, lengths: &[u8], symbol: usize) -> &mut Self {
            let (code, len) = canonical(lengths)[symbol];
            for i in (0..len).rev() {
                self.bits(code >> i & 1, 1);
            }
            self
        }

        /// A dynamic block's header: `cl` are the code-length code's lengths (by symbol),
        /// `items` the code-length symbols with their extra bits.
        fn dynamic(
            &mut self,
            last: bool,
            sizes: (u32, u32),
            cl: &[u8; 19],
            items: &[(usize, u32)],
        ) -> &mut Self {
            self.bits(u32::from(last), 1).bits(2, 2);
            self.bits(sizes.0 - 257, 5)
                .bits(sizes.1 - 1, 5)
                .bits(19 - 4, 4);
            for symbol in CODE_LENGTH_ORDER {
                self.bits(u32::from(cl[usize::from(symbol)]), 3);
            }
            for &(symbol, extra) in items {
                self.symbol(cl, symbol);
                match symbol {
                    16 => self.bits(extra, 2),
                    17 => self.bits(extra, 3),
                    18 => self.bits(extra, 7),
                    _ => self,
                };
            }
            self
        }
    }

    /// The canonical codes (code, length) of `lengths` (RFC 1951 section 3.2.2).
    fn canonical(lengths: &[u8]) -> Vec<(u32, u32)> {
        let mut count = [0u32; 16];
        for &len in lengths {
            count[usize::from(len)] += 1;
        }
        count[0] = 0;
        let mut next = [0u32; 16];
        for len in 1..16 {
            next[len] = (next[len - 1] + count[len - 1]) << 1;
        }
        lengths
            .iter()
            .map(|&len| {
                let code = next[usize::from(len)];
                next[usize::from(len)] += 1;
                (code, u32::from(len))
            })
            .collect()
    }

    /// The code-length code giving symbols 0..=15 four bits each (no repeats).
    const CL_PLAIN: [u8; 19] = [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0];
    /// A code-length code with the repeat symbols: 0, 8, 16, 17, 18 (3 bits) and 5, 7, 9 (3 bits).
    const CL_REPEATS: [u8; 19] = [3, 0, 0, 0, 0, 3, 0, 3, 3, 3, 0, 0, 0, 0, 0, 0, 3, 3, 3];

    /// Fixed literal/length and distance code lengths (for writing symbols).
    fn fixed_lengths() -> (Vec<u8>, Vec<u8>) {
        let lit = (0..288)
            .map(|s| match s {
                0..=143 => 8,
                144..=255 => 9,
                256..=279 => 7,
                _ => 8,
            })
            .collect();
        (lit, vec![5; 32])
    }

    fn raw(stream: &[u8]) -> Decoded {
        let whole = decode(Format::Deflate, stream, stream.len());
        assert_eq!(decode(Format::Deflate, stream, 1), whole);
        whole
    }

    fn refused(stream: &[u8]) -> bool {
        raw(stream).result == Err(Corrupt)
    }

    #[test]
    fn invalid_block_headers_are_refused() {
        // Block type 3.
        assert!(refused(
            &Writer::default().bits(1, 1).bits(3, 2).bits(0, 13).bytes
        ));
        // Stored: NLEN not LEN's complement; then the same block with it, accepted.
        let mut bad = Writer::default();
        bad.bits(1, 1)
            .bits(0, 2)
            .bits(0, 5)
            .bits(2, 16)
            .bits(0xfffc, 16);
        bad.bytes.extend(b"hi");
        assert!(refused(&bad.bytes));
        let mut good = Writer::default();
        good.bits(1, 1)
            .bits(0, 2)
            .bits(0, 5)
            .bits(2, 16)
            .bits(0xfffd, 16);
        good.bytes.extend(b"hi");
        assert_eq!(raw(&good.bytes), Decoded::ok(b"hi"));
        // Dynamic: 287 or 288 literal/length codes, 31 or 32 distance codes.
        for sizes in [(287, 1), (288, 1), (257, 31), (257, 32)] {
            let stream = Writer::default()
                .dynamic(true, sizes, &CL_PLAIN, &[])
                .bytes
                .clone();
            assert!(refused(&stream), "{sizes:?}");
        }
    }

    #[test]
    fn invalid_code_lengths_are_refused() {
        let plain = |lengths: &[u8]| -> Vec<(usize, u32)> {
            lengths.iter().map(|&l| (usize::from(l), 0)).collect()
        };
        // Literal/length codes: 0..=255 8 bits, 256 8 bits would over-subscribe.
        let mut lit = vec![8u8; 257];
        let over = [&lit[..], &[1]].concat();
        let stream = Writer::default()
            .dynamic(true, (257, 1), &CL_PLAIN, &plain(&over))
            .bytes
            .clone();
        assert!(refused(&stream));
        // Incomplete with more than one symbol: 256 literals of 9 bits and the end of block.
        lit.iter_mut().for_each(|l| *l = 9);
        let incomplete = [&lit[..], &[1]].concat();
        let stream = Writer::default()
            .dynamic(true, (257, 1), &CL_PLAIN, &plain(&incomplete))
            .bytes
            .clone();
        assert!(refused(&stream));
        // The code-length code over-subscribed, or incomplete (one symbol only).
        let mut cl = CL_PLAIN;
        cl[0] = 3;
        assert!(refused(
            &Writer::default()
                .dynamic(true, (257, 1), &cl, &[])
                .bytes
                .clone()
        ));
        let mut cl = [0; 19];
        cl[1] = 1;
        assert!(refused(
            &Writer::default()
                .dynamic(true, (257, 1), &cl, &[])
                .bytes
                .clone()
        ));
        // A repeat before any length; a repeat past the last length.
        let stream = Writer::default()
            .dynamic(true, (257, 1), &CL_REPEATS, &[(16, 0)])
            .bytes
            .clone();
        assert!(refused(&stream));
        let past = [(18, 127), (18, 127), (8, 0), (18, 127)];
        let stream = Writer::default()
            .dynamic(true, (257, 1), &CL_REPEATS, &past)
            .bytes
            .clone();
        assert!(refused(&stream));
    }

    /// The code-length items (symbol, extra bits) spelling `lengths`, runs of zeros as 18.
    fn items(lengths: &[u8]) -> Vec<(usize, u32)> {
        let mut items = Vec::new();
        let mut at = 0;
        while let Some(&len) = lengths.get(at) {
            let zeros = lengths[at..]
                .iter()
                .take_while(|&&l| l == 0)
                .count()
                .min(138);
            if zeros >= 11 {
                items.push((18, zeros as u32 - 11));
                at += zeros;
            } else {
                items.push((usize::from(len), 0));
                at += 1;
            }
        }
        items
    }

    /// The code-length code for `items`: 0, 1, 2 and 18, two bits each.
    const CL_SHORT: [u8; 19] = [2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    #[test]
    fn single_and_empty_distance_codes_are_valid() {
        // 'a', 'b', end of block and length 3: two bits each; one distance code (distance 1)
        // of one bit, an incomplete code RFC 1951 allows.
        let mut lengths = vec![0u8; 258 + 1];
        for symbol in [usize::from(b'a'), usize::from(b'b'), 256, 257] {
            lengths[symbol] = 2;
        }
        lengths[258] = 1;
        let mut w = Writer::default();
        w.dynamic(true, (258, 1), &CL_SHORT, &items(&lengths));
        let (lit, dist) = lengths.split_at(258);
        w.symbol(lit, usize::from(b'a'))
            .symbol(lit, usize::from(b'b'));
        w.symbol(lit, 257).symbol(dist, 0).symbol(lit, 256);
        assert_eq!(raw(&w.bytes), Decoded::ok(b"abbbb"));
        // No distance code at all (one length of 0): literals only.
        let mut lengths = vec![0u8; 257 + 1];
        lengths[usize::from(b'a')] = 1;
        lengths[256] = 1;
        let mut w = Writer::default();
        w.dynamic(true, (257, 1), &CL_SHORT, &items(&lengths));
        for symbol in [usize::from(b'a'), usize::from(b'a'), 256] {
            w.symbol(&lengths, symbol);
        }
        assert_eq!(raw(&w.bytes), Decoded::ok(b"aa"));
        // The same with a match: no distance code to decode it.
        let mut lengths = vec![0u8; 258 + 1];
        for symbol in [usize::from(b'a'), 256, 257] {
            lengths[symbol] = 2;
        }
        lengths[usize::from(b'a')] = 1;
        let mut w = Writer::default();
        w.dynamic(true, (258, 1), &CL_SHORT, &items(&lengths));
        w.symbol(&lengths[..258], usize::from(b'a'))
            .symbol(&lengths[..258], 257);
        w.bits(0xffff, 16);
        assert!(refused(&w.bytes));
    }

    #[test]
    fn fixed_code_symbols_beyond_the_alphabet_and_far_distances_are_refused() {
        let (lit, dist) = fixed_lengths();
        let start = || {
            let mut w = Writer::default();
            w.bits(1, 1).bits(1, 2);
            w
        };
        // A literal, then a length/distance pair: distance 1 is fine, 2 reaches before the data.
        let mut w = start();
        w.symbol(&lit, usize::from(b'z'))
            .symbol(&lit, 257)
            .symbol(&dist, 0)
            .symbol(&lit, 256);
        assert_eq!(raw(&w.bytes), Decoded::ok(b"zzzz"));
        let mut w = start();
        w.symbol(&lit, usize::from(b'z'))
            .symbol(&lit, 257)
            .symbol(&dist, 1)
            .symbol(&lit, 256);
        assert!(refused(&w.bytes));
        // Literal/length codes 286 and 287, distance codes 30 and 31.
        for symbol in [286, 287] {
            let mut w = start();
            w.symbol(&lit, usize::from(b'z'))
                .symbol(&lit, symbol)
                .symbol(&dist, 0);
            assert!(refused(&w.bytes), "{symbol}");
        }
        for symbol in [30, 31] {
            let mut w = start();
            w.symbol(&lit, usize::from(b'z'))
                .symbol(&lit, 257)
                .symbol(&dist, symbol);
            assert!(refused(&w.bytes), "{symbol}");
        }
        // A second gzip member starts with no data to reach back to.
        let mut w = start();
        w.symbol(&lit, usize::from(b'z')).symbol(&lit, 256);
        let member = |raw: &[u8], data: &[u8]| {
            let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
            out.extend(raw);
            out.extend(crc32(0, data).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out
        };
        let first = member(&w.bytes, b"z");
        let mut w = start();
        w.symbol(&lit, 257).symbol(&dist, 0).symbol(&lit, 256);
        let body = [first.clone(), member(&w.bytes, b"zzz")].concat();
        assert_eq!(decode(Format::Gzip, &first, 1), Decoded::ok(b"z"));
        let decoded = decode(Format::Gzip, &body, 3);
        assert_eq!(
            (decoded.data, decoded.result),
            (b"z".to_vec(), Err(Corrupt))
        );
    }

    #[test]
    fn zlib_preset_dictionary_and_wrong_adler_are_refused() {
        let good = compress(Framing::Zlib, b"hello hello hello", 6);
        assert_eq!(
            decode(Format::Deflate, &good, 1),
            Decoded::ok(b"hello hello hello")
        );
        // FDICT set (0x78 0x20 is a valid zlib header with it).
        let dict = [&[0x78, FDICT][..], &good[2..]].concat();
        assert_eq!((0x78u16 << 8 | u16::from(FDICT)) % 31, 0);
        assert_eq!(decode(Format::Deflate, &dict, 5).result, Err(Corrupt));
        // The data is handed on before the trailer refuses it.
        let mut bad = good;
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let decoded = decode(Format::Deflate, &bad, 2);
        assert_eq!(decoded.data, b"hello hello hello");
        assert_eq!(decoded.result, Err(Corrupt));
    }

    #[test]
    fn a_reader_that_stops_stops_the_decoding() {
        let data = text(&mut Rng(7), 100_000);
        let stream = compress(Framing::Gzip, &data, 6);
        let mut inflater = Inflater::new(Format::Gzip);
        let mut calls = 0;
        let mut seen = 0;
        let mut out = |run: &[u8]| {
            calls += 1;
            seen += run.len();
            false
        };
        for piece in stream.chunks(1000) {
            assert_eq!(inflater.feed(piece, &mut out), Ok(()));
        }
        assert_eq!(calls, 1);
        assert!(seen > 0 && seen <= WINDOW);
        assert!(!inflater.at_end());
    }
}
