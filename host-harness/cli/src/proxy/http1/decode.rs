//! The request body decoder: `Content-Length` and chunked framing (RFC 9112 §7.1) over whatever bytes the
//! connection has read so far, one step at a time, with no buffer of its own.

use http::HeaderMap;

use super::head::{Framing, MAX_HEADERS};

/// Longest chunk-size line (size, extensions, CRLF); extensions are read and ignored.
const MAX_CHUNK_LINE: usize = 4096;

/// Why a request body is not valid HTTP framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The chunk size is not hexadecimal, overflows, or its line is too long or badly ended.
    #[error("invalid chunk size line")]
    ChunkSize,
    /// A chunk's data is not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    /// The trailer section is not valid header fields, or larger than the limit.
    #[error("invalid trailer section")]
    Trailers,
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The next `n` bytes after those consumed are body data.
    Data(usize),
    /// The trailer section, parsed.
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// More bytes are needed.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes of a `Content-Length` body left.
    Length(u64),
    /// Reading a chunk-size line.
    Size,
    /// Data bytes of the current chunk left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
    Done,
}

/// Decodes one request body; [`Decoder::step`] is called with the unread bytes until it says `End`.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// Largest trailer section accepted.
    max_trailer_bytes: usize,
    /// How far into the trailer section the search for its end has looked: each byte is looked at once,
    /// however the section arrives.
    trailers_scanned: usize,
}

impl Decoder {
    /// A decoder for a body with this framing; trailers are limited like a request head.
    pub fn new(framing: Framing, max_trailer_bytes: usize) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::Size,
        };
        Self {
            state,
            max_trailer_bytes,
            trailers_scanned: 0,
        }
    }

    /// The body has been decoded to its end.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of body data still to come, when the framing says (`Content-Length`).
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(left) => Some(left),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Decodes from `input` (the unread bytes): how many bytes the step consumed (framing, and for
    /// `Data` the data bytes too, which start at `consumed - n`), and what it found.
    ///
    /// # Errors
    /// The framing is invalid; the body cannot be read further.
    pub fn step(&mut self, input: &[u8]) -> Result<(usize, Decoded), DecodeError> {
        let mut consumed = 0;
        loop {
            let rest = input.get(consumed..).unwrap_or_default();
            match self.state {
                State::Done => return Ok((consumed, Decoded::End)),
                State::Length(left) | State::Data(left) => {
                    if rest.is_empty() {
                        return Ok((consumed, Decoded::NeedMore));
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    let left = left - take as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::DataEnd,
                        _ => State::Data(left),
                    };
                    return Ok((consumed + take, Decoded::Data(take)));
                }
                State::Size => {
                    let Some(line_end) = rest.iter().position(|byte| *byte == b'\n') else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(DecodeError::ChunkSize);
                        }
                        return Ok((consumed, Decoded::NeedMore));
                    };
                    if line_end > MAX_CHUNK_LINE {
                        return Err(DecodeError::ChunkSize);
                    }
                    let size = chunk_size(rest.get(..line_end).unwrap_or_default())?;
                    consumed += line_end + 1;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        consumed += 2;
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => return Ok((consumed, Decoded::NeedMore)),
                    _ => return Err(DecodeError::ChunkEnd),
                },
                State::Trailers => {
                    if let [b'\r', b'\n', ..] = rest {
                        self.state = State::Done;
                        return Ok((consumed + 2, Decoded::End));
                    }
                    if !super::head::head_may_end(rest, self.trailers_scanned) {
                        if rest.len() > self.max_trailer_bytes {
                            return Err(DecodeError::Trailers);
                        }
                        self.trailers_scanned = rest.len();
                        return Ok((consumed, Decoded::NeedMore));
                    }
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(rest, &mut fields) {
                        Ok(httparse::Status::Complete((length, fields))) => {
                            let trailers = super::head::header_map(fields)
                                .map_err(|_| DecodeError::Trailers)?;
                            self.state = State::Done;
                            return Ok((consumed + length, Decoded::Trailers(trailers)));
                        }
                        Ok(httparse::Status::Partial) if rest.len() <= self.max_trailer_bytes => {
                            return Ok((consumed, Decoded::NeedMore));
                        }
                        _ => return Err(DecodeError::Trailers),
                    }
                }
            }
        }
    }
}

/// The size on a chunk-size line (without its LF): hexadecimal digits, then optional whitespace and
/// `;extensions`, then CR.
fn chunk_size(line: &[u8]) -> Result<u64, DecodeError> {
    let line = line.strip_suffix(b"\r").ok_or(DecodeError::ChunkSize)?;
    let digits = line
        .iter()
        .take_while(|byte| byte.is_ascii_hexdigit())
        .count();
    // Sixteen hex digits would overflow past 2^60 with the shift below; no body is that long.
    if digits == 0 || digits > 15 {
        return Err(DecodeError::ChunkSize);
    }
    let (size, after) = line.split_at(digits);
    let after = trim_blank(after);
    // Extensions are ignored, but only as text: no control bytes a later reader might split on.
    let text = after
        .iter()
        .all(|byte| *byte == b'\t' || (b' '..=b'~').contains(byte) || *byte >= 0x80);
    if !(after.is_empty() || after.first() == Some(&b';')) || !text {
        return Err(DecodeError::ChunkSize);
    }
    Ok(size.iter().fold(0u64, |total, digit| {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => digit - b'A' + 10,
        };
        (total << 4) | u64::from(value)
    }))
}

/// `bytes` without leading spaces and tabs (the whitespace RFC 9112 allows before `;`).
fn trim_blank(bytes: &[u8]) -> &[u8] {
    let blank = bytes
        .iter()
        .take_while(|byte| matches!(byte, b' ' | b'\t'))
        .count();
    bytes.get(blank..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; the data, the trailers, and whether it ended.
    fn decode(
        framing: Framing,
        input: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool), DecodeError> {
        let mut decoder = Decoder::new(framing, 1024);
        let mut unread: Vec<u8> = Vec::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            let (consumed, step) = decoder.step(&unread)?;
            if let Decoded::Data(n) = step {
                data.extend_from_slice(&unread[consumed - n..consumed]);
            }
            unread.drain(..consumed);
            match step {
                Decoded::End => return Ok((data, trailers, true)),
                Decoded::Trailers(map) => trailers = Some(map),
                Decoded::NeedMore => {
                    if fed >= input.len() {
                        return Ok((data, trailers, false));
                    }
                    let end = (fed + piece).min(input.len());
                    unread.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                Decoded::Data(_) => {}
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nx-sum: 1\r\n\r\n";
        for piece in 1..wire.len() {
            let (data, trailers, ended) = decode(Framing::Chunked, wire, piece).unwrap();
            assert_eq!(data, b"hello world", "piece {piece}");
            assert_eq!(trailers.unwrap()["x-sum"], "1");
            assert!(ended);
        }
        let (data, trailers, ended) =
            decode(Framing::Chunked, b"A \t;x\r\n0123456789\r\n0\r\n\r\n", 3).unwrap();
        assert_eq!(data, b"0123456789");
        assert!(trailers.is_none() && ended);
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let (data, _, ended) = decode(Framing::Length(5), b"helloGET / HTTP/1.1", 4).unwrap();
        assert_eq!(data, b"hello");
        assert!(ended);
        let (data, _, ended) = decode(Framing::Length(5), b"hel", 4).unwrap();
        assert_eq!(data, b"hel");
        assert!(!ended);
    }

    #[test]
    fn invalid_chunk_framing_is_an_error() {
        let bad: [(&[u8], DecodeError); 9] = [
            (b"zz\r\n", DecodeError::ChunkSize),
            (b"\r\n", DecodeError::ChunkSize),
            (b"5\n", DecodeError::ChunkSize),
            (b"5 x\r\n", DecodeError::ChunkSize),
            (b"5\x0c\r\n", DecodeError::ChunkSize),
            (b"5;a\0b\r\n", DecodeError::ChunkSize),
            (b"1000000000000000\r\n", DecodeError::ChunkSize),
            (b"5\r\nhelloXX", DecodeError::ChunkEnd),
            (b"0\r\nnot a trailer\r\n\r\n", DecodeError::Trailers),
        ];
        for (wire, error) in bad {
            assert_eq!(
                decode(Framing::Chunked, wire, 2).unwrap_err(),
                error,
                "{wire:?}"
            );
        }
        let long_line = [b"1;".as_slice(), &[b'x'; MAX_CHUNK_LINE + 1]].concat();
        assert_eq!(
            decode(Framing::Chunked, &long_line, 512).unwrap_err(),
            DecodeError::ChunkSize
        );
        let long_trailers = [b"0\r\nx: ".as_slice(), &[b'y'; 2000]].concat();
        assert_eq!(
            decode(Framing::Chunked, &long_trailers, 100).unwrap_err(),
            DecodeError::Trailers
        );
    }

    #[test]
    fn fifteen_hex_digits_is_the_largest_chunk_size() {
        let mut decoder = Decoder::new(Framing::Chunked, 1024);
        let (consumed, step) = decoder.step(b"fffffffffffffff\r\nab").unwrap();
        assert_eq!((consumed, step), (19, Decoded::Data(2)));
    }
}
