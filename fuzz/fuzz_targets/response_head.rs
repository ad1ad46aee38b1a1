//! Fuzz target: a backend's response head through scan, parse and framing, then the head the
//! client receives, which must parse back with the framing switchyard announces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::http::framing::{self, Body};
use switchyard::http::reply;
use switchyard::http::head::{self, HeadError, Scan};
use switchyard::http::response::{self, ResponseHead};
use switchyard::http::rewrite::{self, Reply};

fn crlf_only(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, c)| match c {
        b'\n' => i > 0 && b[i - 1] == b'\r',
        b'\r' => b.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}

/// Scans and parses a head the gateway wrote; it must be one complete, valid head. None when
/// it has more headers than `MAX_HEADERS` only because of the ones the gateway adds.
fn reparse(out: &[u8]) -> Option<ResponseHead> {
    let shown = String::from_utf8_lossy(out);
    assert!(crlf_only(out), "bare CR or LF in rewritten head: {shown:?}");
    assert_eq!(
        head::scan(out, 0, usize::MAX),
        Ok(Scan::Complete(out.len())),
        "{shown:?}"
    );
    let mut r = ResponseHead::default();
    match response::parse(out, out.len(), &mut r) {
        Ok(()) => {}
        Err(HeadError::TooLarge) if header_lines(out) > head::MAX_HEADERS => return None,
        Err(e) => panic!("rewritten response head does not parse ({e:?}): {shown:?}"),
    }
    assert_eq!(r.minor_version, 1);
    Some(r)
}

/// Header lines in a complete head: its lines less the status line and the blank line.
fn header_lines(head: &[u8]) -> usize {
    head.windows(2).filter(|w| w == b"\r\n").count() - 2
}

// Input: 1 byte flags (bit 0: the request was HEAD; bit 1: the client speaks HTTP/1.1; bit 2:
// the client connection closes; bit 3: the client asked to upgrade; bit 4: CONNECT), then the
// bytes a backend sent.
fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    let is_head = flags & 1 != 0;
    let minor = (flags >> 1) & 1;
    let client_close = flags & 4 != 0;
    let upgrade = flags & 8 != 0;
    let is_connect = flags & 16 != 0;

    let Ok(Scan::Complete(len)) = head::scan(buf, 0, 65536) else {
        return;
    };
    let mut r = ResponseHead::default();
    if response::parse(buf, len, &mut r).is_err() {
        return;
    }
    assert!(r.reason.end <= len);
    assert!(r
        .headers
        .iter()
        .all(|h| h.name.end <= len && h.value.end <= len));
    let status = r.status;
    let reason = &buf[r.reason.clone()];
    let mut out = Vec::new();

    // Interim answers are relayed as they are, less hop-by-hop headers.
    if (100..200).contains(&status) && status != 101 {
        rewrite::interim_head(buf, &r, &mut out);
        let Some(r2) = reparse(&out) else {
            return;
        };
        assert_eq!((r2.status, &out[r2.reason.clone()]), (status, reason));
        return;
    }
    // Tunnels: a 101 to an upgrade, a 2xx to CONNECT.
    if (status == 101 && upgrade) || (is_connect && (200..300).contains(&status)) {
        let reply = Reply {
            gateway: "switchyard",
            upstream_ms: 1.5,
            content_length: None,
            chunked: false,
            close: false,
            keep_alive_1_0: false,
            switching: status == 101,
            edits: &switchyard::http::edits::NONE.response,
        };
        rewrite::response_head(buf, &r, &reply, &mut out);
        let Some(r2) = reparse(&out) else {
            return;
        };
        assert_eq!((r2.status, &out[r2.reason.clone()]), (status, reason));
        return;
    }
    if status == 101 {
        return;
    }

    // The ordinary response, framed for the client by the rule the proxy uses.
    let Ok(rbody) = framing::response(buf, &r.headers, status, is_head) else {
        return;
    };
    // The proxy's own rule (HEAD / 304 keep the declared length; chunked for HTTP/1.1).
    let f = reply::frame(buf, &r.headers, rbody, status, is_head, minor, client_close);
    let reply = Reply {
        gateway: "switchyard",
        upstream_ms: 12.345,
        content_length: f.content_length,
        chunked: f.chunked,
        close: f.close,
        keep_alive_1_0: minor == 0 && !f.close,
        switching: false,
        edits: &switchyard::http::edits::NONE.response,
    };
    rewrite::response_head(buf, &r, &reply, &mut out);
    let Some(r2) = reparse(&out) else {
        return;
    };
    let shown = String::from_utf8_lossy(&out);
    assert_eq!((r2.status, &out[r2.reason.clone()]), (status, reason));
    let expect = match rbody {
        Body::Chunked | Body::UntilClose if minor == 1 => Body::Chunked,
        Body::Chunked | Body::UntilClose => Body::UntilClose,
        b => b,
    };
    assert_eq!(
        framing::response(&out, &r2.headers, status, is_head),
        Ok(expect),
        "{shown:?}"
    );
});
