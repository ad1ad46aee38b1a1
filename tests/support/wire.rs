//! A tiny raw HTTP/1.x client over a std TcpStream, for tests that must control every byte
//! (keep-alive, pipelining, 100-continue, smuggling) and see exactly what comes back.
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One response as read off the wire; header names are lowercased.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(k, _)| *k == name).count()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What ended a read that did not produce a whole response.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// The peer closed (EOF or reset) before a whole message.
    Closed,
    /// Nothing for the read timeout: the peer is silent (a hang, in most tests).
    Timeout,
    Malformed(String),
}

/// A client connection that keeps bytes read past one response for the next.
pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// Connects with a 5 s read timeout: every read in a test is bounded.
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Wraps a stream connected elsewhere (from a chosen source address, say).
    pub fn from_stream(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Writes bytes; an error (the peer already closed) is returned, not a panic, because
    /// several tests send to a server that may rightly have hung up.
    pub fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data)
    }

    fn fill(&mut self) -> Result<(), WireError> {
        let mut tmp = [0u8; 64 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => Err(WireError::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(WireError::Timeout)
            }
            Err(_) => Err(WireError::Closed),
        }
    }

    /// Reads one response head (an interim 1xx is returned like any other).
    pub fn read_head(&mut self) -> Result<RawResponse, WireError> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return parse_head(head);
            }
            self.fill()?;
        }
    }

    /// Reads one whole response; `head_request` means no body follows whatever the headers say.
    pub fn read_response(&mut self, head_request: bool) -> Result<RawResponse, WireError> {
        let mut r = self.read_head()?;
        if head_request || (100..200).contains(&r.status) || r.status == 204 || r.status == 304 {
            return Ok(r);
        }
        let chunked = r
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            r.body = self.read_chunked()?;
        } else if let Some(cl) = r.header("content-length") {
            let n: usize = cl
                .trim()
                .parse()
                .map_err(|_| WireError::Malformed(format!("content-length {cl:?}")))?;
            while self.buf.len() < n {
                self.fill()?;
            }
            r.body = self.buf.drain(..n).collect();
        } else {
            loop {
                match self.fill() {
                    Ok(()) => {}
                    Err(WireError::Closed) => break,
                    Err(e) => return Err(e),
                }
            }
            r.body = std::mem::take(&mut self.buf);
        }
        Ok(r)
    }

    /// Reads the final response, skipping any interim 1xx answers.
    pub fn read_final(&mut self) -> Result<RawResponse, WireError> {
        loop {
            let r = self.read_response(false)?;
            if !(100..200).contains(&r.status) || r.status == 101 {
                return Ok(r);
            }
        }
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        loop {
            let line = self.read_line()?;
            let size_txt = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_txt, 16)
                .map_err(|_| WireError::Malformed(format!("chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(out);
            }
            while self.buf.len() < size + 2 {
                self.fill()?;
            }
            out.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(WireError::Malformed("chunk not followed by CRLF".into()));
            }
            self.buf.drain(..size + 2);
        }
    }

    fn read_line(&mut self) -> Result<String, WireError> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill()?;
        }
    }

    /// Reads exactly `n` bytes (tunnels).
    pub fn read_exact_bytes(&mut self, n: usize) -> Result<Vec<u8>, WireError> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// True if the peer closes (EOF or reset) within `wait`, discarding anything it sends.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        self.set_timeout(Duration::from_millis(100));
        loop {
            if self.fill() == Err(WireError::Closed) {
                return true;
            }
            self.buf.clear();
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Everything until the peer closes or goes silent for the read timeout.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill().is_ok() {}
        std::mem::take(&mut self.buf)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: String) -> Result<RawResponse, WireError> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    if !status_line.starts_with("HTTP/1.") {
        return Err(WireError::Malformed(format!("status line {status_line:?}")));
    }
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| WireError::Malformed(format!("status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| WireError::Malformed(format!("header line {l:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(RawResponse {
        status,
        head,
        headers,
        body: Vec::new(),
    })
}

/// Writes `data` as one chunked body made of chunks of at most `piece` bytes.
pub fn chunk_encode(data: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / piece.max(1) * 10 + 8);
    for c in data.chunks(piece.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
