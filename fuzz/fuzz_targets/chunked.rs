//! Fuzz target: the chunked body decoder fed whole, in up to three pieces and byte by byte
//! must agree on consumed bytes, payload, completion and errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::http::chunked::{ChunkError, Decoder};

/// What feeding a body in the given pieces produced (`consumed` is 0 when it was refused).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    consumed: usize,
    payload: Vec<u8>,
    done: bool,
    error: Option<ChunkError>,
}

/// Feeds `pieces` in order with `Decoder::feed`, collecting the payload.
fn decode<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut d = Decoder::new();
    let mut o = Outcome {
        consumed: 0,
        payload: Vec::new(),
        done: false,
        error: None,
    };
    for piece in pieces {
        let mut at = 0;
        while at < piece.len() {
            match d.feed(&piece[at..]) {
                Ok(f) => {
                    assert!(f.consumed <= piece.len() - at);
                    assert!(f.data.start <= f.data.end && f.data.end <= f.consumed);
                    o.payload.extend_from_slice(&piece[at..][f.data.clone()]);
                    at += f.consumed;
                    o.consumed += f.consumed;
                    if f.done {
                        assert!(d.is_done());
                        o.done = true;
                        return o;
                    }
                    // Only a finished body stops consuming non-empty input.
                    assert!(f.consumed > 0, "feed made no progress before the end");
                }
                Err(e) => {
                    // A refused body is refused whole: how much of it earlier calls had
                    // consumed depends on the split, so it is not compared.
                    o.error = Some(e);
                    o.consumed = 0;
                    return o;
                }
            }
        }
    }
    o
}

/// The same with `Decoder::validate`, which does not separate the payload.
fn validate<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> (usize, bool, Option<ChunkError>) {
    let mut d = Decoder::new();
    let mut total = 0;
    for piece in pieces {
        match d.validate(piece) {
            Ok((n, done)) => {
                total += n;
                if done {
                    return (total, true, None);
                }
                assert_eq!(n, piece.len(), "validate stopped early without finishing");
            }
            Err(e) => return (total, false, Some(e)),
        }
    }
    (total, false, None)
}

// Input: two 2-byte split points, then the body bytes.
fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let body = &data[4..];
    let n = body.len() + 1;
    let mut a = usize::from(u16::from_le_bytes([data[0], data[1]])) % n;
    let mut b = usize::from(u16::from_le_bytes([data[2], data[3]])) % n;
    if a > b {
        std::mem::swap(&mut a, &mut b);
    }

    let whole = decode([body]);
    assert!(whole.consumed <= body.len());
    assert!(whole.payload.len() <= body.len());
    if whole.error.is_none() {
        assert!(whole.payload.len() <= whole.consumed);
        if !whole.done {
            assert_eq!(whole.consumed, body.len());
        }
    }

    let pieces = [&body[..a], &body[a..b], &body[b..]];
    let split = decode(pieces);
    assert_eq!(split, whole, "split at {a} and {b}");
    let bytewise = decode(body.chunks(1));
    assert_eq!(bytewise, whole, "byte by byte");

    // validate agrees with feed on how much is body and whether it ended (the consumed count
    // before an error is not part of validate's answer, so it is compared only on success).
    let (v_consumed, v_done, v_err) = validate([body]);
    assert_eq!(v_err, whole.error);
    if whole.error.is_none() {
        assert_eq!((v_consumed, v_done), (whole.consumed, whole.done));
    }
    let (s_consumed, s_done, s_err) = validate(pieces);
    assert_eq!(s_err, whole.error, "validate split at {a} and {b}");
    if whole.error.is_none() {
        assert_eq!((s_consumed, s_done), (whole.consumed, whole.done));
    }
});
