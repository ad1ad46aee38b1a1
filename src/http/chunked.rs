//! A streaming, resumable validator and decoder for chunked bodies (RFC 9112 §7.1). It is fed
//! whatever bytes have arrived; a split at any byte gives the same result as one whole feed.
use super::token::is_tchar;
use std::ops::Range;

/// Longest chunk extension or trailer section accepted; more is a malformed body.
const MAX_EXT: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line; no digit read yet.
    SizeStart,
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

/// What one call to [`Decoder::feed`] did with its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// Bytes of input that were consumed (all of them are valid chunked framing or data).
    pub consumed: usize,
    /// Payload bytes within the consumed part (empty if none).
    pub data: Range<usize>,
    /// The terminating empty line has been read.
    pub done: bool,
}

#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    digits: u8,
    remaining: u64,
    ext_len: usize,
    trailer_len: usize,
    line_has_colon: bool,
    line_len: usize,
    /// Stop once at the start of the trailer section (see [`Decoder::pause_at_trailers`]).
    pause: bool,
    paused: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            state: State::SizeStart,
            digits: 0,
            remaining: 0,
            ext_len: 0,
            trailer_len: 0,
            line_has_colon: false,
            line_len: 0,
            pause: false,
            paused: false,
        }
    }

    /// A decoder whose `feed` / `validate` stop right after the last chunk's size line, so
    /// that the caller can hold the trailer section (bounded by `MAX_TRAILERS`) and filter it
    /// before passing it on. Afterwards it goes on as usual.
    pub fn pause_at_trailers() -> Self {
        Decoder {
            pause: true,
            ..Self::new()
        }
    }

    /// In the trailer section (after the last chunk), before the end of the body.
    pub fn in_trailers(&self) -> bool {
        matches!(
            self.state,
            State::TrailerStart | State::Trailer | State::TrailerLf | State::EndLf
        )
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing bytes from `input` until it reaches payload (returned as `data`), the
    /// end of the body, or the end of the input.
    pub fn feed(&mut self, input: &[u8]) -> Result<Feed, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::SizeStart | State::Size => {
                    if let Some(d) = hex(b) {
                        if self.digits == 16 {
                            return Err(ChunkError("chunk size overflows"));
                        }
                        self.remaining = (self.remaining << 4) | d;
                        self.digits += 1;
                        self.state = State::Size;
                    } else if self.state == State::SizeStart {
                        return Err(ChunkError("chunk size expected"));
                    } else if b == b';' {
                        self.state = State::Ext;
                        self.ext_len = 0;
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else {
                        return Err(ChunkError("invalid byte after chunk size"));
                    }
                }
                State::Ext => {
                    self.ext_len += 1;
                    if self.ext_len > MAX_EXT {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b' ' | b'\t' | b';' | b'=' | b'"' | b'\\' => {}
                        b if is_tchar(b) => {}
                        _ => return Err(ChunkError("invalid byte in chunk extension")),
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CR without LF after chunk size"));
                    }
                    self.digits = 0;
                    self.state = if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                    if self.state == State::TrailerStart && std::mem::take(&mut self.pause) {
                        self.paused = true;
                        return Ok(Feed {
                            consumed: i + 1,
                            data: 0..0,
                            done: false,
                        });
                    }
                }
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let n = avail.min(self.remaining) as usize;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Feed {
                        consumed: i + n,
                        data: i..i + n,
                        done: false,
                    });
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CR without LF after chunk data"));
                    }
                    self.state = State::SizeStart;
                }
                State::TrailerStart => {
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else if is_tchar(b) {
                        self.state = State::Trailer;
                        self.line_has_colon = false;
                        self.line_len = 1;
                        self.count_trailer()?;
                    } else {
                        return Err(ChunkError("invalid trailer line"));
                    }
                }
                State::Trailer => {
                    self.count_trailer()?;
                    self.line_len += 1;
                    match b {
                        b'\r' => {
                            if !self.line_has_colon {
                                return Err(ChunkError("trailer line without a colon"));
                            }
                            self.state = State::TrailerLf;
                        }
                        b':' if !self.line_has_colon => self.line_has_colon = true,
                        // Whitespace before the colon is refused, as in the head.
                        b if !self.line_has_colon && !is_tchar(b) => {
                            return Err(ChunkError("invalid trailer name"))
                        }
                        b'\t' | b' '..=0x7e | 0x80..=0xff => {}
                        _ => return Err(ChunkError("invalid byte in trailer")),
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CR without LF in trailer"));
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CR without LF at end of body"));
                    }
                    self.state = State::Done;
                    return Ok(Feed {
                        consumed: i + 1,
                        data: 0..0,
                        done: true,
                    });
                }
            }
            i += 1;
        }
        Ok(Feed {
            consumed: i,
            data: 0..0,
            done: self.state == State::Done,
        })
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(ChunkError("trailers too long"));
        }
        Ok(())
    }

    /// Validates as much of `input` as belongs to the body, without separating payload:
    /// returns how many bytes are body and whether the body is complete. The proxy forwards
    /// exactly those bytes, so a backend sees only framing that switchyard has checked.
    pub fn validate(&mut self, input: &[u8]) -> Result<(usize, bool), ChunkError> {
        let mut at = 0;
        loop {
            let f = self.feed(&input[at..])?;
            at += f.consumed;
            if f.done || at == input.len() || std::mem::take(&mut self.paused) {
                return Ok((at, f.done));
            }
            if f.consumed == 0 {
                return Ok((at, false));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let f = d.feed(&input[at..])?;
            out.extend_from_slice(&input[at..][f.data.clone()]);
            at += f.consumed;
            if f.done || at == input.len() {
                return Ok((out, at, f.done));
            }
        }
    }

    #[test]
    fn decodes_and_stops_at_end() {
        let body = b"5\r\nhello\r\n6;x=\"y\"\r\n world\r\n0\r\nT: v\r\n\r\nNEXT";
        let (out, used, done) = decode_all(body).unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(&body[used..], b"NEXT");
    }

    #[test]
    fn any_split_gives_the_same_result() {
        let body = b"a\r\n0123456789\r\n1;e\r\nZ\r\n0\r\n\r\n";
        for cut in 0..body.len() {
            let mut d = Decoder::new();
            let (a, done_a) = d.validate(&body[..cut]).unwrap();
            assert_eq!(a, cut);
            assert!(!done_a);
            let (b, done_b) = d.validate(&body[cut..]).unwrap();
            assert_eq!(a + b, body.len());
            assert!(done_b);
        }
    }

    #[test]
    fn refuses_bad_framing() {
        let bad: [&[u8]; 12] = [
            b"g\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nT : v\r\n\r\n",
            b"0\r\nnocolon\r\n\r\n",
            b"0\r\n\n",
            b"-1\r\n",
            b"5;\x01\r\n",
        ];
        for v in bad {
            assert!(decode_all(v).is_err(), "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn pauses_once_at_the_trailer_section() {
        let body = b"3\r\nabc\r\n0\r\nX: 1\r\n\r\nNEXT";
        for cut in 0..body.len() {
            let mut d = Decoder::pause_at_trailers();
            let (mut at, mut done) = d.validate(&body[..cut]).unwrap();
            while !done && !d.in_trailers() && at < body.len() {
                let (k, dn) = d.validate(&body[at..]).unwrap();
                at += k;
                done = dn;
            }
            assert!(d.in_trailers() && !done, "cut {cut}");
            assert_eq!(&body[at..], b"X: 1\r\n\r\nNEXT", "cut {cut}");
            let (k, done) = d.validate(&body[at..]).unwrap();
            assert!(done);
            assert_eq!(&body[at + k..], b"NEXT");
        }
    }

    #[test]
    fn largest_size_does_not_overflow() {
        let mut d = Decoder::new();
        assert!(d.validate(b"ffffffffffffffff\r\n").is_ok());
    }
}
