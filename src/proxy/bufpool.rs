//! Read buffers kept per thread and lent to connections only while they have bytes to move, so
//! that an idle keep-alive connection holds no buffer (HAProxy's and nginx's approach).
use super::io::READ_CHUNK;
use bytes::BytesMut;
use std::cell::RefCell;

/// Buffers kept per thread once returned; beyond this they go back to the allocator. Enough
/// for every connection a worker serves at once under load, small next to their sockets.
const KEEP: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A cleared buffer with room for at least one full read.
pub fn take() -> BytesMut {
    FREE.with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
}

/// Gives an empty buffer back, leaving an unallocated one in its place; a buffer that still
/// holds bytes stays where it is.
pub fn release(b: &mut BytesMut) {
    if !b.is_empty() || b.capacity() == 0 {
        return;
    }
    let mut b = std::mem::take(b);
    // Reclaims the room that consumed bytes left at the front (no allocation when the buffer
    // was a full read buffer), so that the next borrower gets a whole one.
    b.reserve(READ_CHUNK);
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < KEEP {
            f.push(b);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_whole_and_busy_ones_stay() {
        let mut b = take();
        assert!(b.capacity() >= READ_CHUNK);
        b.extend_from_slice(b"abc");
        release(&mut b);
        assert_eq!(&b[..], b"abc", "a buffer with bytes is not taken");
        bytes::Buf::advance(&mut b, 3);
        release(&mut b);
        assert_eq!(b.capacity(), 0);
        let again = take();
        assert!(again.is_empty() && again.capacity() >= READ_CHUNK);
    }
}
