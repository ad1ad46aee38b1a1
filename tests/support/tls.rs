//! TLS test material and clients: a CA and leaf certificates made with rcgen per test (no
//! private keys committed), and TLS clients in Python's `ssl` (OpenSSL), independent of the
//! rustls switchyard serves with.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// A certificate authority for one test.
pub struct Ca {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate and key as PEM, and the leaf's DER (to recognise it when served).
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("switchyard test CA {name}"),
        );
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, None)
    }

    /// A leaf valid from/until the given dates (`None`: rcgen's long default).
    pub fn leaf_valid(&self, names: &[&str], until: Option<(i32, u8, u8)>) -> Leaf {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("leaf"),
        );
        if let Some((y, m, d)) = until {
            p.not_before = rcgen::date_time_ymd(y - 1, m, d);
            p.not_after = rcgen::date_time_ymd(y, m, d);
        } else {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    /// Writes `<stem>.pem` (leaf then `chain`) and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str, chain: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{stem}.pem"));
        let k = dir.join(format!("{stem}.key"));
        std::fs::write(&c, format!("{}{chain}", self.cert_pem)).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c, k)
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Python side: one line of JSON per command on stdin, one line of JSON back. Keeps TLS
/// connections open between commands, so a test can hold one across a reload.
const CLIENT_PY: &str = r#"
import json, socket, ssl, sys, hashlib, http.client
conns = {}
def ctx(c):
    x = ssl.create_default_context(cafile=c.get("ca")) if c.get("ca") else ssl.create_default_context()
    if not c.get("verify", True):
        x.check_hostname = False
        x.verify_mode = ssl.CERT_NONE
    elif not c.get("check_hostname", True):
        x.check_hostname = False
    if c.get("max") == "1.2":
        x.maximum_version = ssl.TLSVersion.TLSv1_2
    x.set_alpn_protocols(["http/1.1"])
    return x
for line in sys.stdin:
    c = json.loads(line)
    out = {}
    try:
        if c["op"] == "handshake":
            s = socket.create_connection(("127.0.0.1", c["port"]), timeout=5)
            t = ctx(c).wrap_socket(s, server_hostname=c.get("sni"))
            der = t.getpeercert(binary_form=True)
            out = {"ok": True, "sha256": hashlib.sha256(der).hexdigest(), "version": t.version(),
                   "alpn": t.selected_alpn_protocol(),
                   "not_after": (t.getpeercert() or {}).get("notAfter"),
                   "not_before": (t.getpeercert() or {}).get("notBefore"),
                   "serial": (t.getpeercert() or {}).get("serialNumber")}
            t.close()
        elif c["op"] == "open":
            # http.client over a socket we wrapped ourselves, so SNI is ours to choose.
            h = http.client.HTTPConnection("127.0.0.1", c["port"], timeout=5)
            s = socket.create_connection(("127.0.0.1", c["port"]), timeout=5)
            h.sock = ctx(c).wrap_socket(s, server_hostname=c.get("sni"))
            conns[c["name"]] = h
            out = {"ok": True, "sha256": hashlib.sha256(h.sock.getpeercert(binary_form=True)).hexdigest(),
                   "version": h.sock.version()}
        elif c["op"] == "get":
            h = conns[c["name"]]
            h.request("GET", c["path"], headers=c.get("headers", {}))
            r = h.getresponse()
            body = r.read().decode("utf-8", "replace")
            out = {"ok": True, "status": r.status, "body": body,
                   "headers": {k.lower(): v for k, v in r.getheaders()}}
        elif c["op"] == "close":
            conns.pop(c["name"]).close()
            out = {"ok": True}
    except Exception as e:
        out = {"ok": False, "error": type(e).__name__ + ": " + str(e)}
    print(json.dumps(out), flush=True)
"#;

/// A running Python TLS client.
pub struct PyClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PyClient {
    pub fn start() -> PyClient {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(CLIENT_PY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        PyClient {
            child,
            stdin,
            stdout,
        }
    }

    pub fn call(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python `ssl` HTTPS server (http.server) answering every GET with a JSON naming `name`,
/// the path and the request headers; prints its port. Killed on drop.
pub struct PyServer {
    child: Child,
    pub port: u16,
}

const SERVER_PY: &str = r#"
import json, ssl, sys, http.server, socketserver
name, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        b = json.dumps({"backend": name, "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain(cert, key)
s.socket = c.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

impl PyServer {
    pub fn start(name: &str, cert: &Path, key: &Path) -> PyServer {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SERVER_PY)
            .arg(name)
            .arg(cert)
            .arg(key)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port: {line:?}"));
        PyServer { child, port }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTPS listener's port, from the log.
pub fn https_port(sy: &super::Switchyard) -> u16 {
    let mut port = None;
    super::wait_until(Duration::from_secs(5), || {
        let l = sy.log_text();
        port = l.split("https listener on ").nth(1).and_then(|r| {
            r.split_whitespace()
                .next()
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port())
        });
        port.is_some()
    });
    port.unwrap_or_else(|| panic!("no https listener in the log:\n{}", sy.log_text()))
}
