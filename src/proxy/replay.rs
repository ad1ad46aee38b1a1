//! The request body kept for a retry (SPEC §11 `max_retry_body`). While the first try streams
//! the body up, each piece it passes on is moved out of the client's read buffer as a `Bytes`
//! (no copy) and kept here, up to the limit; a retry writes the same pieces again, then goes on
//! streaming whatever the client has not sent yet. The first try never waits for the body to
//! be read whole: keeping costs nothing but the memory the pieces already occupy.
use bytes::{Bytes, BytesMut};

/// Pieces kept at most per body. A client dribbling its body a few bytes per packet would
/// otherwise make the list of pieces outweigh the bytes themselves (a `Bytes` is 32 bytes);
/// a body that arrives in more pieces than this is not kept, so not retried.
pub(crate) const MAX_PIECES: usize = 1024;

/// Where keeping stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Not asked to keep (the request may not be retried, or has no body).
    #[default]
    Off,
    /// Every byte passed on so far is kept.
    On,
    /// The body is, or grew, larger than the limit: nothing is kept, no replay.
    Lost,
}

/// The body bytes passed on so far, as they went (framing included, for chunked bodies).
#[derive(Debug, Default)]
pub(crate) struct Kept {
    chunks: Vec<Bytes>,
    len: u64,
    limit: u64,
    state: State,
    /// During a retry: the next kept piece to send again (None: not replaying).
    replay_from: Option<usize>,
}

impl Kept {
    /// Starts keeping up to `limit` bytes. `known`: the body's length when it is announced;
    /// a body known to be larger is never kept.
    pub fn start(&mut self, limit: u64, known: Option<u64>) {
        self.limit = limit;
        self.state = match known {
            Some(n) if n > limit => State::Lost,
            _ => State::On,
        };
    }

    /// Whether pieces passed on now are to be kept.
    pub fn on(&self) -> bool {
        self.state == State::On
    }

    /// Moves the first `k` bytes out of `pending` (sharing its allocation, no copy) and keeps
    /// them; what is returned is what to write. A piece that takes the body past the limit
    /// drops everything kept.
    pub fn take(&mut self, pending: &mut BytesMut, k: usize) -> Bytes {
        let b = pending.split_to(k).freeze();
        self.push(b.clone());
        b
    }

    /// Keeps a piece that was built rather than read (a filtered trailer section).
    pub fn push(&mut self, b: Bytes) {
        if self.state != State::On {
            return;
        }
        self.len += b.len() as u64;
        if self.len > self.limit || self.chunks.len() == MAX_PIECES {
            self.state = State::Lost;
            self.chunks = Vec::new();
            return;
        }
        self.chunks.push(b);
    }

    /// Every byte passed on so far is kept, given `passed` bytes were passed on: a retry can
    /// send the body again.
    pub fn whole(&self, passed: u64) -> bool {
        match self.state {
            State::Off => passed == 0,
            State::On => true,
            State::Lost => false,
        }
    }

    /// The next try starts with the kept pieces.
    pub fn rewind(&mut self) {
        if self.state == State::On {
            self.replay_from = Some(0);
        }
    }

    /// Kept pieces a replay has still to send.
    pub fn pending_replay(&self) -> bool {
        self.replay_from.is_some_and(|i| i < self.chunks.len())
    }

    /// The next piece to send again, if any; `sent` moves past it once it is written (a try
    /// abandoned mid-write resends it on the next rewind anyway).
    pub fn next_replay(&self) -> Option<Bytes> {
        let i = self.replay_from?;
        self.chunks.get(i).cloned()
    }

    pub fn sent(&mut self) {
        if let Some(i) = &mut self.replay_from {
            *i += 1;
        }
    }

    /// The replay is over: what follows comes from the client.
    pub fn replayed(&mut self) {
        self.replay_from = None;
    }

    /// Bytes kept.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_kept_without_copy_and_replayed_in_order() {
        let mut k = Kept::default();
        k.start(10, None);
        let mut pending = BytesMut::from(&b"hello world"[..]);
        let base = pending.as_ptr();
        let a = k.take(&mut pending, 5);
        assert_eq!(&a[..], b"hello");
        assert_eq!(a.as_ptr(), base, "the piece shares the read buffer");
        assert_eq!(&pending[..], b" world");
        let b = k.take(&mut pending, 3);
        assert_eq!(&b[..], b" wo");
        assert!(k.whole(8));
        assert_eq!(k.len(), 8);
        k.rewind();
        assert!(k.pending_replay());
        let mut again = Vec::new();
        while let Some(p) = k.next_replay() {
            again.extend_from_slice(&p);
            k.sent();
        }
        assert_eq!(again, b"hello wo");
        assert!(!k.pending_replay());
        // An abandoned replay starts over.
        k.rewind();
        assert_eq!(&k.next_replay().unwrap()[..], b"hello");
    }

    #[test]
    fn the_limit_is_inclusive_and_passing_it_drops_everything() {
        let mut k = Kept::default();
        k.start(6, None);
        let mut pending = BytesMut::from(&b"abcdefgh"[..]);
        k.take(&mut pending, 6);
        assert!(k.whole(6));
        let rest = k.take(&mut pending, 1);
        assert_eq!(&rest[..], b"g", "the piece is still written");
        assert!(!k.whole(7));
        assert!(!k.on());
        k.rewind();
        assert!(!k.pending_replay());
        assert_eq!(k.next_replay(), None);
    }

    #[test]
    fn a_body_dribbled_in_tiny_pieces_is_not_kept() {
        let mut k = Kept::default();
        k.start(1 << 20, None);
        let mut pending = BytesMut::from(&vec![b'x'; MAX_PIECES + 1][..]);
        for _ in 0..MAX_PIECES {
            k.take(&mut pending, 1);
        }
        assert!(k.whole(MAX_PIECES as u64));
        k.take(&mut pending, 1);
        assert!(!k.whole(MAX_PIECES as u64 + 1));
    }

    #[test]
    fn a_body_announced_too_large_is_never_kept() {
        let mut k = Kept::default();
        k.start(100, Some(101));
        assert!(!k.on());
        assert!(!k.whole(0), "not replayable even before a byte went");
        let mut k = Kept::default();
        k.start(100, Some(100));
        assert!(k.on() && k.whole(0));
    }

    #[test]
    fn not_keeping_is_replayable_only_before_the_first_byte() {
        let k = Kept::default();
        assert!(k.whole(0));
        assert!(!k.whole(1));
    }
}
