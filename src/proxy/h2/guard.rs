//! Flood detection on an HTTP/2 connection (SPEC §10): a scanner over the frame headers the
//! client sends, run on the bytes before the `h2` crate sees them. It counts stream resets
//! against completed streams (the 2023 rapid-reset attack, CVE-2023-44487), CONTINUATION
//! frames per header block (CVE-2024-27316) and control frames that cost work without
//! carrying a request (PING, SETTINGS, PRIORITY, empty DATA: the 2019 flood family). Pure:
//! the clock and the completed-stream count come in as arguments; [`Guarded`] is the I/O
//! wrapper that feeds it.
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a connection was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Streams reset by the client far outnumber those completed.
    RapidReset,
    /// A header block split over too many CONTINUATION frames or too many bytes.
    Continuation,
    /// PING / SETTINGS / PRIORITY / empty DATA faster than the control budget.
    Control,
}

impl Flood {
    pub fn label(self) -> &'static str {
        match self {
            Flood::RapidReset => "rapid_reset",
            Flood::Continuation => "continuation",
            Flood::Control => "control_flood",
        }
    }
    fn code(self) -> u8 {
        self as u8 + 1
    }
    fn from_code(c: u8) -> Option<Flood> {
        match c {
            1 => Some(Flood::RapidReset),
            2 => Some(Flood::Continuation),
            3 => Some(Flood::Control),
            _ => None,
        }
    }
}

/// The thresholds. Generous for real clients (a browser sends a handful of SETTINGS and PINGs
/// per connection; gRPC cancels some calls), far below what an attack needs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Resets beyond the completed streams that are tolerated.
    pub reset_allowance: u64,
    /// Encoded bytes of one header block (HEADERS + CONTINUATION).
    pub max_block_bytes: usize,
    /// Frames of one header block.
    pub max_block_frames: u32,
    /// Control frames in a burst, and how many the budget regains per second.
    pub control_burst: f64,
    pub control_per_second: f64,
}

impl Limits {
    /// From `max_header_bytes`: a block encodes at most about the bytes it decodes to (HPACK
    /// only shrinks literals), so twice the limit plus padding is never a legitimate block.
    pub fn new(max_header_bytes: usize) -> Self {
        Limits {
            reset_allowance: 200,
            max_block_bytes: max_header_bytes.saturating_mul(2) + 1024,
            max_block_frames: 64,
            control_burst: 500.0,
            control_per_second: 50.0,
        }
    }
}

const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const CONTINUATION: u8 = 0x9;
const DATA: u8 = 0x0;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// The scanner's state: where in the byte stream it is, and the counts.
#[derive(Debug)]
pub struct Scanner {
    limits: Limits,
    /// Preface bytes still to skip.
    preface: usize,
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    block: Option<(usize, u32)>,
    pub resets: u64,
    tokens: f64,
    refilled: Option<Instant>,
}

impl Scanner {
    /// A scanner for a server connection (the stream starts with the client preface).
    pub fn new(limits: Limits) -> Self {
        Scanner {
            limits,
            preface: PREFACE.len(),
            head: [0; 9],
            head_len: 0,
            skip: 0,
            block: None,
            resets: 0,
            tokens: limits.control_burst,
            refilled: None,
        }
    }

    /// Scans `bytes` read from the client at `now`, `completed` streams having ended
    /// normally so far. A flood, once found, is returned for every later call too.
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant, completed: u64) -> Result<(), Flood> {
        let p = self.preface.min(bytes.len());
        self.preface -= p;
        bytes = &bytes[p..];
        while !bytes.is_empty() {
            if self.skip > 0 {
                let k = self.skip.min(bytes.len());
                self.skip -= k;
                bytes = &bytes[k..];
                continue;
            }
            let k = (9 - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + k].copy_from_slice(&bytes[..k]);
            self.head_len += k;
            bytes = &bytes[k..];
            if self.head_len == 9 {
                self.head_len = 0;
                let h = self.head;
                let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.skip = len;
                self.frame(h[3], h[4], len, now, completed)?;
            }
        }
        Ok(())
    }

    fn frame(
        &mut self,
        kind: u8,
        flags: u8,
        len: usize,
        now: Instant,
        completed: u64,
    ) -> Result<(), Flood> {
        match kind {
            HEADERS if flags & END_HEADERS == 0 => self.block = Some((len, 1)),
            HEADERS => self.block = None,
            CONTINUATION => {
                let (bytes, frames) = self.block.unwrap_or((0, 0));
                let (bytes, frames) = (bytes + len, frames + 1);
                if bytes > self.limits.max_block_bytes || frames > self.limits.max_block_frames {
                    return Err(Flood::Continuation);
                }
                self.block = (flags & END_HEADERS == 0).then_some((bytes, frames));
            }
            RST_STREAM => {
                self.resets += 1;
                if self.resets > completed + self.limits.reset_allowance {
                    return Err(Flood::RapidReset);
                }
            }
            PING | SETTINGS if flags & ACK == 0 => self.control(now)?,
            PRIORITY => self.control(now)?,
            DATA if len == 0 && flags & END_STREAM == 0 => self.control(now)?,
            _ => {}
        }
        Ok(())
    }

    /// One control frame against the token bucket.
    fn control(&mut self, now: Instant) -> Result<(), Flood> {
        if let Some(t) = self.refilled {
            let gained =
                now.saturating_duration_since(t).as_secs_f64() * self.limits.control_per_second;
            self.tokens = (self.tokens + gained).min(self.limits.control_burst);
        }
        self.refilled = Some(now);
        if self.tokens < 1.0 {
            return Err(Flood::Control);
        }
        self.tokens -= 1.0;
        Ok(())
    }
}

/// What the connection driver and the guarded stream share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Streams that ended normally (answered in full).
    pub completed: AtomicU64,
    tripped: AtomicU8,
    /// Woken when the guard trips.
    pub notify: tokio::sync::Notify,
}

impl Shared {
    pub fn tripped(&self) -> Option<Flood> {
        Flood::from_code(self.tripped.load(Relaxed))
    }
}

/// The client stream, scanned as it is read. Once a flood is found no further byte reaches
/// the `h2` crate: the driver sends GOAWAY and closes.
pub struct Guarded<S> {
    inner: S,
    scanner: Scanner,
    shared: Arc<Shared>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, limits: Limits, shared: Arc<Shared>) -> Self {
        Guarded {
            inner,
            scanner: Scanner::new(limits),
            shared,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.shared.tripped().is_some() {
            // The driver is sending GOAWAY; the connection closes once it is out.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut me.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        let completed = me.shared.completed.load(Relaxed);
        if let Err(f) = me.scanner.feed(fresh, Instant::now(), completed) {
            me.shared.tripped.store(f.code(), Relaxed);
            me.shared.notify.notify_one();
            // None of these bytes reach h2.
            buf.set_filled(before);
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How long the driver keeps a flooded connection open for its GOAWAY to go out.
pub const GOAWAY_FLUSH: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn limits() -> Limits {
        Limits {
            reset_allowance: 10,
            max_block_bytes: 100,
            max_block_frames: 4,
            control_burst: 5.0,
            control_per_second: 1.0,
        }
    }

    #[test]
    fn resets_beyond_completed_streams_trip_in_any_split() {
        let mut bytes = PREFACE.to_vec();
        for i in 0..12u32 {
            bytes.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &[0; 7]));
            bytes.extend(frame(RST_STREAM, 0, 2 * i + 1, &[0, 0, 0, 8]));
        }
        let now = Instant::now();
        // Fed one byte at a time: the scanner resumes mid-header and mid-payload.
        let mut s = Scanner::new(limits());
        let r: Result<(), Flood> = bytes.iter().try_for_each(|b| s.feed(&[*b], now, 0));
        assert_eq!(r, Err(Flood::RapidReset));
        assert_eq!(s.resets, 11);
        // The same resets with as many completed streams are fine.
        let mut s = Scanner::new(limits());
        assert_eq!(s.feed(&bytes, now, 12), Ok(()));
    }

    #[test]
    fn continuation_floods_trip_by_frames_and_by_bytes() {
        let now = Instant::now();
        let mut s = Scanner::new(limits());
        let mut b = PREFACE.to_vec();
        b.extend(frame(HEADERS, 0, 1, &[0; 10]));
        for _ in 0..3 {
            b.extend(frame(CONTINUATION, 0, 1, &[]));
        }
        assert_eq!(s.feed(&b, now, 0), Ok(()));
        assert_eq!(
            s.feed(&frame(CONTINUATION, 0, 1, &[]), now, 0),
            Err(Flood::Continuation)
        );
        let mut s = Scanner::new(limits());
        let mut b = PREFACE.to_vec();
        b.extend(frame(HEADERS, 0, 1, &[0; 60]));
        b.extend(frame(CONTINUATION, 0, 1, &[0; 60]));
        assert_eq!(s.feed(&b, now, 0), Err(Flood::Continuation));
        // A block that ends resets the count.
        let mut s = Scanner::new(limits());
        let mut b = PREFACE.to_vec();
        for i in 0..10u32 {
            b.extend(frame(HEADERS, 0, 2 * i + 1, &[0; 30]));
            b.extend(frame(CONTINUATION, END_HEADERS, 2 * i + 1, &[0; 30]));
        }
        assert_eq!(s.feed(&b, now, 0), Ok(()));
    }

    #[test]
    fn control_frames_spend_a_budget_that_refills_with_time() {
        let t0 = Instant::now();
        let mut s = Scanner::new(limits());
        let mut b = PREFACE.to_vec();
        for _ in 0..5 {
            b.extend(frame(PING, 0, 0, &[0; 8]));
        }
        // ACKs are answers to our own frames and cost nothing.
        b.extend(frame(SETTINGS, ACK, 0, &[]));
        b.extend(frame(PING, ACK, 0, &[0; 8]));
        assert_eq!(s.feed(&b, t0, 0), Ok(()));
        assert_eq!(
            s.feed(&frame(SETTINGS, 0, 0, &[]), t0, 0),
            Err(Flood::Control)
        );
        let mut s = Scanner::new(limits());
        let mut b = PREFACE.to_vec();
        for _ in 0..5 {
            b.extend(frame(DATA, 0, 1, &[]));
        }
        assert_eq!(s.feed(&b, t0, 0), Ok(()));
        // Two seconds later two more fit, a third does not.
        let t2 = t0 + Duration::from_secs(2);
        let two = [
            frame(PRIORITY, 0, 1, &[0; 5]),
            frame(PRIORITY, 0, 1, &[0; 5]),
        ]
        .concat();
        assert_eq!(s.feed(&two, t2, 0), Ok(()));
        assert_eq!(s.feed(&frame(DATA, 0, 1, &[]), t2, 0), Err(Flood::Control));
        // Data that ends a stream or carries bytes is not a control frame.
        let mut s = Scanner::new(limits());
        let mut b = PREFACE.to_vec();
        for _ in 0..20 {
            b.extend(frame(DATA, END_STREAM, 1, &[]));
            b.extend(frame(DATA, 0, 1, b"x"));
        }
        assert_eq!(s.feed(&b, t0, 0), Ok(()));
    }
}
