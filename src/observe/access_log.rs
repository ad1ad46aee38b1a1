//! The access log (SPEC §12): one line per request in `text` or `json`, written by a thread of
//! its own so the data plane never waits on a disk or a pipe.
//!
//! The data plane formats a line and hands it to a bounded channel with `try_send`; when the
//! channel is full the line is dropped and counted (`switchyard_access_log_dropped_total`),
//! never the request. The writer owns the file; `reopen()` (SIGHUP) makes it open the path
//! again, so `logrotate` can move the old file away.
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Lines that may wait for the writer; beyond this they are dropped.
pub const CHANNEL_LINES: usize = 8192;

/// Lines dropped by every writer this process ran (a reload to a new path starts a new one;
/// the counter stays monotonic for `/metrics`).
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// `switchyard_access_log_dropped_total`.
pub fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(Relaxed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// `[server] access_log*`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub enabled: bool,
    pub format: Format,
    /// `-` = stdout.
    pub path: String,
    pub query: bool,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            format: Format::Text,
            path: "-".into(),
            query: false,
        }
    }
}

/// Everything one line says. Byte fields are as received; they are escaped when written.
#[derive(Debug, Clone, Default)]
pub struct Entry<'a> {
    pub ts_ms: u64,
    pub request_id: &'a [u8],
    pub client: &'a str,
    pub method: &'a [u8],
    pub host: Option<&'a [u8]>,
    /// The request target; its query is cut unless `access_log_query`.
    pub target: &'a [u8],
    pub protocol: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    /// From the head sent to the backend to its response head; None without a backend answer.
    pub upstream_time: Option<Duration>,
    pub rule: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub attempts: u32,
    pub api_key_name: Option<&'a str>,
    pub user_agent: Option<&'a [u8]>,
    pub tls: Option<&'a str>,
    /// The second line of a tunnel, written when it closes.
    pub tunnel_closed: bool,
}

fn cut_query(target: &[u8], keep: bool) -> &[u8] {
    if keep {
        return target;
    }
    match memchr::memchr(b'?', target) {
        Some(i) => &target[..i],
        None => target,
    }
}

/// Appends `s` as a JSON string (quotes included); invalid UTF-8 becomes U+FFFD.
fn json_str(out: &mut String, s: &[u8]) {
    out.push('"');
    for c in String::from_utf8_lossy(s).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt(out: &mut String, s: Option<&[u8]>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// One JSON line (with its newline), fields in the order of SPEC §12.
pub fn json_line(e: &Entry<'_>, query: bool, out: &mut String) {
    use std::fmt::Write as _;
    out.push_str("{\"ts\":\"");
    out.push_str(&crate::clock::rfc3339_ms(e.ts_ms));
    out.push_str("\",\"request_id\":");
    json_str(out, e.request_id);
    out.push_str(",\"client\":");
    json_str(out, e.client.as_bytes());
    out.push_str(",\"method\":");
    json_str(out, e.method);
    out.push_str(",\"host\":");
    json_opt(out, e.host);
    out.push_str(",\"path\":");
    json_str(out, cut_query(e.target, query));
    out.push_str(",\"protocol\":");
    json_str(out, e.protocol.as_bytes());
    let _ = write!(
        out,
        ",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{}",
        e.status,
        e.bytes_in,
        e.bytes_out,
        ms(e.duration)
    );
    out.push_str(",\"upstream_ms\":");
    match e.upstream_time {
        Some(d) => {
            let _ = write!(out, "{}", ms(d));
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"rule\":");
    json_opt(out, e.rule.map(str::as_bytes));
    out.push_str(",\"upstream\":");
    json_opt(out, e.upstream.map(str::as_bytes));
    let _ = write!(out, ",\"attempts\":{}", e.attempts);
    out.push_str(",\"api_key_name\":");
    json_opt(out, e.api_key_name.map(str::as_bytes));
    out.push_str(",\"user_agent\":");
    json_opt(out, e.user_agent);
    out.push_str(",\"tls\":");
    json_opt(out, e.tls.map(str::as_bytes));
    if e.tunnel_closed {
        out.push_str(",\"event\":\"tunnel_closed\"");
    }
    out.push_str("}\n");
}

/// One text line: `client host "METHOD path PROTOCOL" status in/out "user agent" rule=
/// upstream= attempts= 1.2ms upstream_ms= rid=`; bytes that could forge a line are escaped.
pub fn text_line(e: &Entry<'_>, query: bool, out: &mut String) {
    use std::fmt::Write as _;
    let esc = |b: &[u8]| -> String {
        String::from_utf8_lossy(b)
            .chars()
            .flat_map(|c| {
                if c.is_control() || c == '"' {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect()
    };
    let _ = writeln!(
        out,
        "{} {} \"{} {} {}\" {} {}/{} \"{}\" rule={} upstream={} attempts={} {:.1}ms upstream_ms={} rid={}{}",
        e.client,
        e.host.map_or_else(|| "-".into(), esc),
        esc(e.method),
        esc(cut_query(e.target, query)),
        e.protocol,
        e.status,
        e.bytes_in,
        e.bytes_out,
        e.user_agent.map_or_else(|| "-".into(), esc),
        e.rule.unwrap_or("-"),
        e.upstream.unwrap_or("-"),
        e.attempts,
        e.duration.as_secs_f64() * 1000.0,
        e.upstream_time
            .map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0)),
        esc(e.request_id),
        if e.tunnel_closed { " tunnel_closed" } else { "" },
    );
}

enum Msg {
    Line(String),
    /// Nothing to write: look at the reopen flag.
    Wake,
}

/// The data plane's handle: format + hand over. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct AccessLog {
    path: String,
    tx: mpsc::SyncSender<Msg>,
    reopen: Arc<AtomicBool>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl AccessLog {
    /// Starts the writer thread for `path` (`-` = stdout). A file that cannot be opened is an
    /// error here (at start and on reload it is checked before anything is swapped).
    pub fn start(path: &str) -> std::io::Result<Self> {
        Self::start_with(path, CHANNEL_LINES)
    }

    pub fn start_with(path: &str, capacity: usize) -> std::io::Result<Self> {
        let sink = Sink::open(path)?;
        let (tx, rx) = mpsc::sync_channel(capacity);
        let reopen = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (r, w) = (reopen.clone(), written.clone());
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, sink, r, w))?;
        Ok(AccessLog {
            path: path.to_string(),
            tx,
            reopen,
            dropped: AtomicU64::new(0),
            written,
        })
    }

    /// Where this writer writes (`-` = stdout).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Formats `e` and hands the line over.
    pub fn write(&self, e: &Entry<'_>, format: Format, query: bool) {
        let mut line = String::with_capacity(384);
        match format {
            Format::Json => json_line(e, query, &mut line),
            Format::Text => text_line(e, query, &mut line),
        }
        self.send(line);
    }

    /// Hands a line over; drops and counts it if the writer is behind.
    pub fn send(&self, line: String) {
        if self.tx.try_send(Msg::Line(line)).is_err() {
            self.dropped.fetch_add(1, Relaxed);
            DROPPED_TOTAL.fetch_add(1, Relaxed);
        }
    }

    /// The file is opened again before the next line is written (SIGHUP, log rotation).
    pub fn reopen(&self) {
        self.reopen.store(true, Relaxed);
        let _ = self.tx.try_send(Msg::Wake);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Relaxed)
    }
}

/// Puts the writer `server` asks for into `slot`: none when the log is off, the running one
/// when the path stayed, else a new one (an unopenable path is an error and `slot` is left
/// as it was, so a reload can be refused before anything changed).
pub fn apply(
    slot: &arc_swap::ArcSwapOption<AccessLog>,
    server: &crate::config::Server,
) -> std::io::Result<()> {
    if !server.access_log {
        slot.store(None);
        return Ok(());
    }
    if slot
        .load()
        .as_ref()
        .is_some_and(|l| l.path() == server.access_log_path)
    {
        return Ok(());
    }
    let log = AccessLog::start(&server.access_log_path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("access_log_path {}: {e}", server.access_log_path),
        )
    })?;
    slot.store(Some(Arc::new(log)));
    Ok(())
}

enum Sink {
    Stdout(std::io::Stdout),
    File(String, std::io::BufWriter<std::fs::File>),
}

impl Sink {
    fn open(path: &str) -> std::io::Result<Sink> {
        if path == "-" {
            return Ok(Sink::Stdout(std::io::stdout()));
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Sink::File(path.to_string(), std::io::BufWriter::new(f)))
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Sink::Stdout(s) => s.lock().write_all(line.as_bytes()),
            Sink::File(_, f) => f.write_all(line.as_bytes()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(s) => s.lock().flush(),
            Sink::File(_, f) => f.flush(),
        }
    }
}

fn writer(
    rx: mpsc::Receiver<Msg>,
    mut sink: Sink,
    reopen: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) {
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Everything already waiting is written before one flush.
        while let Some(m) = next {
            if reopen.swap(false, Relaxed) {
                let _ = sink.flush();
                if let Sink::File(path, _) = &sink {
                    match Sink::open(path) {
                        Ok(s) => sink = s,
                        Err(e) => log::error!("access log {path}: cannot reopen: {e}"),
                    }
                }
            }
            if let Msg::Line(l) = m {
                match sink.write(&l) {
                    Ok(()) => {
                        failing = false;
                        written.fetch_add(1, Relaxed);
                    }
                    Err(e) if !failing => {
                        failing = true;
                        log::error!("access log: write failed: {e}");
                    }
                    Err(_) => {}
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = sink.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            ts_ms: 1_763_152_200_123,
            request_id: b"rid-1",
            client: "127.0.0.1",
            method: b"GET",
            host: Some(b"api.example.com"),
            target: b"/a/b?token=secret",
            protocol: "HTTP/1.1",
            status: 200,
            bytes_in: 10,
            bytes_out: 2048,
            duration: Duration::from_micros(12_345),
            upstream_time: Some(Duration::from_micros(10_001)),
            rule: Some("route /a/*"),
            upstream: Some("127.0.0.1:8001"),
            attempts: 2,
            api_key_name: None,
            user_agent: Some(b"curl/8 \"x\"\n"),
            tls: None,
            tunnel_closed: false,
        }
    }

    #[test]
    fn json_has_every_field_and_no_query_by_default() {
        let mut s = String::new();
        json_line(&entry(), false, &mut s);
        assert!(s.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let keys = [
            "ts",
            "request_id",
            "client",
            "method",
            "host",
            "path",
            "protocol",
            "status",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "upstream_ms",
            "rule",
            "upstream",
            "attempts",
            "api_key_name",
            "user_agent",
            "tls",
        ];
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), keys.len());
        for k in keys {
            assert!(obj.contains_key(k), "{k}");
        }
        assert_eq!(v["ts"], "2025-11-14T20:30:00.123Z");
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 12.345);
        assert_eq!(v["upstream_ms"], 10.001);
        assert_eq!(v["api_key_name"], serde_json::Value::Null);
        assert_eq!(v["tls"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "curl/8 \"x\"\n");
        let mut s = String::new();
        json_line(&entry(), true, &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["path"], "/a/b?token=secret");
    }

    #[test]
    fn json_survives_hostile_bytes() {
        let e = Entry {
            target: b"/\x00\x1b[31m\xff\"}",
            user_agent: Some(b"\\\x7f"),
            tunnel_closed: true,
            ..entry()
        };
        let mut s = String::new();
        json_line(&e, true, &mut s);
        assert_eq!(s.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["path"], "/\u{0}\u{1b}[31m\u{fffd}\"}");
        assert_eq!(v["event"], "tunnel_closed");
    }

    #[test]
    fn text_is_one_line_without_the_query() {
        let mut s = String::new();
        text_line(&entry(), false, &mut s);
        assert_eq!(s.matches('\n').count(), 1, "{s}");
        assert!(!s.contains("secret"));
        assert!(s.starts_with("127.0.0.1 api.example.com \"GET /a/b HTTP/1.1\" 200 10/2048 "));
        assert!(s.contains("attempts=2"));
    }

    #[test]
    fn a_full_channel_drops_lines_and_counts_them() {
        let dir = std::env::temp_dir().join(format!("sy-al-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("a.log");
        let log = AccessLog::start_with(path.to_str().unwrap(), 4).unwrap();
        for i in 0..10_000 {
            log.send(format!("line {i}\n"));
        }
        for _ in 0..200 {
            if log.written() + log.dropped() == 10_000 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(log.written() + log.dropped(), 10_000);
        // Rotation: move the file away; the next lines go to a new file at the path.
        let moved = dir.join("a.log.1");
        std::fs::rename(&path, &moved).unwrap();
        log.reopen();
        log.send("after\n".into());
        for _ in 0..200 {
            if std::fs::read_to_string(&path).is_ok_and(|s| s == "after\n") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        let old = std::fs::read_to_string(&moved).unwrap();
        assert_eq!(old.lines().count() as u64, log.written() - 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
