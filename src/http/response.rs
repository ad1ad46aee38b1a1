//! Response head parsing for what backends send: status line and headers as ranges into the
//! connection's buffer, with the same size limit and line-ending rules as requests.
use super::head::{HeadError, HeaderRange, MAX_HEADERS};
use std::ops::Range;

#[derive(Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Range<usize>,
    pub minor_version: u8,
    pub headers: Vec<HeaderRange>,
    pub len: usize,
}

/// Parses a complete response head (`buf[..len]`, found with `head::scan`) into `out`.
pub fn parse(buf: &[u8], len: usize, out: &mut ResponseHead) -> Result<(), HeadError> {
    // Uninitialised, as for requests: zeroing 4 KiB per response is pure overhead.
    let mut raw = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let head = &buf[..len];
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, head, &mut raw)
    {
        Ok(httparse::Status::Complete(n)) if n == len => {}
        Ok(_) => return Err(HeadError::Malformed("incomplete response head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("malformed response head")),
    }
    let base = head.as_ptr() as usize;
    let range = |s: &[u8]| {
        if s.is_empty() {
            return 0..0;
        }
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    out.status = res.code.ok_or(HeadError::Malformed("missing status"))?;
    if !(100..=599).contains(&out.status) {
        return Err(HeadError::Malformed("status code out of range"));
    }
    out.reason = range(res.reason.unwrap_or("").as_bytes());
    out.minor_version = res.version.ok_or(HeadError::Malformed("missing version"))?;
    out.len = len;
    out.headers.clear();
    for h in res.headers.iter() {
        out.headers.push(HeaderRange::new(
            buf,
            range(h.name.as_bytes()),
            range(h.value),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_headers() {
        let s = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc";
        let mut h = ResponseHead::default();
        parse(s, s.len() - 3, &mut h).unwrap();
        assert_eq!(h.status, 404);
        assert_eq!(&s[h.reason.clone()], b"Not Found");
        assert_eq!(h.headers.len(), 1);
    }

    #[test]
    fn refuses_garbage() {
        let s = b"HTTP/1.1 2000 OK\r\n\r\n";
        assert!(parse(s, s.len(), &mut ResponseHead::default()).is_err());
        let s = b"SSH-2.0-OpenSSH\r\n\r\n";
        assert!(parse(s, s.len(), &mut ResponseHead::default()).is_err());
    }
}
