//! TLS termination over real sockets (SPEC §9), with Python's `ssl` (OpenSSL) and curl as the
//! clients: SNI choice (exact, wildcard, default, none), min_version, keep-alive routing,
//! X-Forwarded-Proto, the redirect, SIGHUP certificate swaps, bad files, handshake timeouts,
//! and TLS to backends against a Python `ssl` server with its own CA.
mod support;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::tls::{https_port, sha256_hex, Ca, Leaf, PyClient, PyServer};
use support::*;

struct Certs {
    ca: Ca,
    exact: Leaf,
    wild: Leaf,
    default: Leaf,
}

fn certs(dir: &Path) -> Certs {
    let ca = Ca::new("front");
    let c = Certs {
        exact: ca.leaf(&["a.test"]),
        wild: ca.leaf(&["*.w.test"]),
        default: ca.leaf(&["default.test"]),
        ca,
    };
    std::fs::write(dir.join("ca.pem"), &c.ca.cert_pem).unwrap();
    c.exact.write(dir, "exact", &c.ca.cert_pem);
    c.wild.write(dir, "wild", "");
    c.default.write(dir, "default", "");
    c
}

fn tls_section(extra: &str) -> String {
    format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\n{extra}\n\n\
         [[tls.certificates]]\ncert = \"exact.pem\"\nkey = \"exact.key\"\n\n\
         [[tls.certificates]]\ncert = \"wild.pem\"\nkey = \"wild.key\"\n\n\
         [[tls.certificates]]\ncert = \"default.pem\"\nkey = \"default.key\"\ndefault = true\n"
    )
}

/// Starts switchyard in a directory holding the test certificates.
fn start(extra_server: &str, body: &str, tls_extra: &str) -> (Switchyard, Certs, u16) {
    let dir = TempDir::new("tls");
    let c = certs(&dir.0);
    let cfg = format!(
        "{}{body}\n{}",
        listen_section(extra_server),
        tls_section(tls_extra)
    );
    let sy = Switchyard::start_in(&cfg, &[], dir);
    let port = https_port(&sy);
    (sy, c, port)
}

fn ca_path(sy: &Switchyard) -> String {
    sy.config_path
        .parent()
        .unwrap()
        .join("ca.pem")
        .display()
        .to_string()
}

#[test]
fn sni_picks_exact_wildcard_and_default_certificates() {
    let b = Backend::start("one");
    let (sy, c, port) = start("", &targets_toml(&[b.address()]), "");
    let ca = ca_path(&sy);
    let mut py = PyClient::start();
    let mut hs = |sni: Option<&str>, check_hostname: bool| {
        let r = py.call(
            json!({"op": "handshake", "port": port, "sni": sni, "ca": ca,
                                "check_hostname": check_hostname}),
        );
        assert_eq!(r["ok"], true, "{sni:?}: {r}");
        r
    };
    // The served leaf is recognised by its digest; verification against our CA with the
    // hostname checked proves the chain and the SAN fit the name asked for.
    let r = hs(Some("a.test"), true);
    assert_eq!(r["sha256"], sha256_hex(&c.exact.der));
    assert_eq!(r["alpn"], "http/1.1");
    assert_eq!(
        hs(Some("x.w.test"), true)["sha256"],
        sha256_hex(&c.wild.der)
    );
    assert_eq!(hs(Some("A.TEST"), true)["sha256"], sha256_hex(&c.exact.der));
    // A wildcard covers one label, as TLS clients check it.
    assert_eq!(
        hs(Some("y.x.w.test"), false)["sha256"],
        sha256_hex(&c.default.der)
    );
    assert_eq!(
        hs(Some("nothing.test"), false)["sha256"],
        sha256_hex(&c.default.der)
    );
    assert_eq!(hs(None, false)["sha256"], sha256_hex(&c.default.der));

    // curl, another TLS stack's view: verified against the CA, the request goes through.
    let out = Command::new("curl")
        .args(["-sS", "--cacert", &ca, "--resolve"])
        .arg(format!("a.test:{port}:127.0.0.1"))
        .arg(format!("https://a.test:{port}/hello"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["backend"], "one");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");

    // /health lists the certificates; /metrics has their expiry and the handshakes.
    let h: serde_json::Value = client()
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let certs = h["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 3, "{h}");
    assert_eq!(certs[0]["hosts"], json!(["a.test"]));
    assert_eq!(certs[0]["source"], "file");
    assert!(certs[0]["not_after"].as_str().unwrap().starts_with("4096-"));
    assert_eq!(certs[2]["default"], true);
    let m = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let expiry = metrics::sample(
        &m,
        "switchyard_tls_certificate_expiry_timestamp_seconds{host=\"*.w.test\"}",
    )
    .unwrap_or_else(|| panic!("{m}"));
    // rcgen's default not_after, 4096-01-01, is about 6.9e10 Unix seconds.
    assert!(expiry > 6.0e10, "{expiry}");
    let ok = metrics::sample(&m, "switchyard_tls_handshakes_total{result=\"ok\"}").unwrap();
    assert!(ok >= 7.0, "{ok}");
    let (fine, report) = metrics::promtool(&m);
    assert!(fine, "{report}");
}

#[test]
fn min_version_1_3_refuses_a_tls_1_2_client() {
    let b = Backend::start("one");
    let (sy, _c, port) = start("", &targets_toml(&[b.address()]), "min_version = \"1.3\"");
    let ca = ca_path(&sy);
    let mut py = PyClient::start();
    let r =
        py.call(json!({"op": "handshake", "port": port, "sni": "a.test", "ca": ca, "max": "1.2"}));
    assert_eq!(r["ok"], false, "{r}");
    let r = py.call(json!({"op": "handshake", "port": port, "sni": "a.test", "ca": ca}));
    assert_eq!(r["version"], "TLSv1.3", "{r}");
    let m = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        metrics::sample(&m, "switchyard_tls_handshakes_total{result=\"error\"}"),
        Some(1.0),
        "{m}"
    );
    // A failed handshake is not an info-level log line.
    assert!(!sy.log_text().contains("handshake"), "{}", sy.log_text());

    // With the default, a TLS 1.2 client is served.
    let (sy2, _c, port2) = start("", &targets_toml(&[b.address()]), "");
    let r = py.call(json!({"op": "handshake", "port": port2, "sni": "a.test", "ca": ca_path(&sy2), "max": "1.2"}));
    assert_eq!(r["version"], "TLSv1.2", "{r}");
}

#[test]
fn keep_alive_over_tls_routes_each_request_with_forwarded_proto() {
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    let routes = format!(
        "[[path_routes]]\npath = \"/one\"\naddress = \"{}\"\n\n[[path_routes]]\npath = \"/two\"\naddress = \"{}\"\n",
        one.address(),
        two.address()
    );
    let (sy, _c, port) = start("", &routes, "");
    let mut py = PyClient::start();
    let r = py.call(
        json!({"op": "open", "name": "k", "port": port, "sni": "a.test", "ca": ca_path(&sy)}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let mut backends = Vec::new();
    for path in ["/one/x", "/two/y"] {
        let r = py.call(json!({"op": "get", "name": "k", "path": path,
                               "headers": {"Host": "a.test", "X-Forwarded-Proto": "http"}}));
        assert_eq!(r["status"], 200, "{r}");
        let v: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        // The client's own X-Forwarded-Proto is replaced, never trusted.
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
        backends.push(v["backend"].as_str().unwrap().to_string());
    }
    assert_eq!(backends, ["one", "two"]);
    // Both on one TLS connection.
    let m = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        metrics::sample(&m, "switchyard_tls_handshakes_total{result=\"ok\"}"),
        Some(1.0)
    );
    // Plain HTTP still says http.
    let v: serde_json::Value = client()
        .get(sy.url("/one/z"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "http");
}

#[test]
fn the_https_listener_applies_the_same_admission_checks() {
    // The TLS listener feeds the same session: canonical paths, the hop marker, `_` names and
    // asserted headers are handled exactly as on the plain one.
    let b = Backend::start("one");
    let (sy, _c, port) = start("via_name = \"fleet-t\"", &targets_toml(&[b.address()]), "");
    let mut py = PyClient::start();
    let r = py.call(
        json!({"op": "open", "name": "k", "port": port, "sni": "a.test", "ca": ca_path(&sy)}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let get = |py: &mut PyClient, path: &str, headers: serde_json::Value| {
        let r = py.call(json!({"op": "get", "name": "k", "path": path, "headers": headers}));
        assert_eq!(r["ok"], true, "{path}: {r}");
        r
    };
    // A rewritten path reaches the backend canonical, with the query as sent, over https.
    let r = get(
        &mut py,
        "/a//b/%7Ex?q=%2F",
        json!({"Host": "a.test", "X_Api_Key_Name": "forged", "X-Forwarded-Proto": "http"}),
    );
    assert_eq!(r["status"], 200, "{r}");
    let v: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(v["target"], "/a/b/~x?q=%2F", "{v}");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    assert_eq!(v["headers"]["via"], "1.1 fleet-t");
    assert!(v["headers"].get("x_api_key_name").is_none(), "{v}");
    let hits = b.hits();
    // Dot segments (encoded) are a 400 that never reaches the backend, and close.
    let r = get(&mut py, "/a/%2e%2E/admin", json!({"Host": "a.test"}));
    assert_eq!(r["status"], 400, "{r}");
    assert_eq!(r["headers"]["connection"], "close", "{r}");
    py.call(json!({"op": "close", "name": "k"}));
    // A request carrying this fleet's own marker is a loop: 508.
    let r = py.call(
        json!({"op": "open", "name": "k", "port": port, "sni": "a.test", "ca": ca_path(&sy)}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let r = get(
        &mut py,
        "/x",
        json!({"Host": "a.test", "Via": "1.1 elsewhere, 1.1 fleet-t"}),
    );
    assert_eq!(r["status"], 508, "{r}");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(b.hits(), hits, "a refused request reached the backend");
}

#[test]
fn redirect_http_sends_named_hosts_to_https_except_acme_challenges() {
    let b = Backend::start("one");
    let (sy, _c, port) = start("", &targets_toml(&[b.address()]), "redirect_http = true");
    let get = |host: &str, target: &str| {
        raw(
            sy.http,
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        )
    };
    let r = get("a.test:8080", "/p/q?x=1");
    assert_eq!(status_of(&r), 308, "{r}");
    assert!(
        r.contains(&format!("\r\nLocation: https://a.test:{port}/p/q?x=1\r\n")),
        "{r}"
    );
    let r = get("deep.w.test", "/");
    assert!(
        r.contains(&format!("Location: https://deep.w.test:{port}/\r\n")),
        "{r}"
    );
    // A host only the default certificate would serve is not redirected: routed as usual.
    let r = get("unnamed.test", "/p");
    assert_eq!(status_of(&r), 200, "{r}");
    // ACME challenge paths are never redirected.
    let r = get("a.test", "/.well-known/acme-challenge/abc");
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(b.hits(), 2);
    // curl follows the redirect to the HTTPS listener with the host's certificate.
    let out = Command::new("curl")
        .args(["-sS", "-L", "--cacert", &ca_path(&sy), "--resolve"])
        .arg(format!("a.test:{port}:127.0.0.1"))
        .arg("--resolve")
        .arg(format!("a.test:{}:127.0.0.1", sy.http.port()))
        .arg(format!("http://a.test:{}/followed", sy.http.port()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["target"], "/followed");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
}

#[test]
fn sighup_swaps_a_certificate_and_open_connections_keep_going() {
    let b = Backend::start("one");
    let (sy, c, port) = start("access_log = false", &targets_toml(&[b.address()]), "");
    let dir = sy.config_path.parent().unwrap().to_path_buf();
    let ca = ca_path(&sy);
    let mut py = PyClient::start();
    let r = py.call(json!({"op": "open", "name": "old", "port": port, "sni": "a.test", "ca": ca}));
    assert_eq!(r["sha256"], sha256_hex(&c.exact.der));
    let r =
        py.call(json!({"op": "get", "name": "old", "path": "/1", "headers": {"Host": "a.test"}}));
    assert_eq!(r["status"], 200);

    let renewed = c.ca.leaf(&["a.test"]);
    renewed.write(&dir, "exact", &c.ca.cert_pem);
    sy.signal("HUP");
    assert!(
        sy.wait_log("reloaded", Duration::from_secs(5)),
        "{}",
        sy.log_text()
    );
    let r = py.call(json!({"op": "handshake", "port": port, "sni": "a.test", "ca": ca}));
    assert_eq!(r["sha256"], sha256_hex(&renewed.der), "{r}");
    // The connection opened before the reload still works, with its old certificate.
    let r =
        py.call(json!({"op": "get", "name": "old", "path": "/2", "headers": {"Host": "a.test"}}));
    assert_eq!(r["status"], 200, "{r}");

    // A bad file refuses the whole reload: the renewed certificate stays.
    std::fs::write(dir.join("exact.pem"), "not a certificate\n").unwrap();
    sy.signal("HUP");
    assert!(
        sy.wait_log("reload refused", Duration::from_secs(5)),
        "{}",
        sy.log_text()
    );
    let log = sy.log_text();
    assert!(log.contains("tls.certificates[0].cert"), "{log}");
    let r = py.call(json!({"op": "handshake", "port": port, "sni": "a.test", "ca": ca}));
    assert_eq!(r["sha256"], sha256_hex(&renewed.der), "{r}");
}

/// `switchyard check` on a config, in `dir`.
fn check(dir: &Path, cfg: &str) -> (bool, String) {
    let p = dir.join("check.toml");
    std::fs::write(&p, cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir)
        .args(["check", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_names_key_and_line_of_every_certificate_problem() {
    let dir = TempDir::new("tls-check");
    let c = certs(&dir.0);
    let other = c.ca.leaf(&["a.test"]);
    other.write(&dir.0, "other", "");
    c.ca.leaf_valid(&["old.test"], Some((2021, 1, 1)))
        .write(&dir.0, "expired", "");
    std::fs::write(dir.0.join("empty.pem"), "nothing here\n").unwrap();
    let cfg = "[server]\nlisten = \"127.0.0.1:0\"\n\
[tls]\n\
min_version = \"1.1\"\n\
[[tls.certificates]]\n\
cert = \"missing.pem\"\n\
key = \"exact.key\"\n\
[[tls.certificates]]\n\
cert = \"empty.pem\"\n\
key = \"exact.key\"\n\
[[tls.certificates]]\n\
cert = \"exact.pem\"\n\
key = \"wild.key\"\n\
[[tls.certificates]]\n\
cert = \"expired.pem\"\n\
key = \"expired.key\"\n\
[[tls.certificates]]\n\
cert = \"exact.pem\"\n\
key = \"exact.key\"\n\
[[tls.certificates]]\n\
cert = \"other.pem\"\n\
key = \"other.key\"\n";
    let (ok, out) = check(&dir.0, cfg);
    assert!(!ok, "{out}");
    for (line, key, what) in [
        (4, "tls.min_version", "\"1.1\""),
        (6, "tls.certificates[0].cert", "cannot read"),
        (9, "tls.certificates[1].cert", "no CERTIFICATE"),
        (13, "tls.certificates[2].key", "does not match"),
        (15, "tls.certificates[3].cert", "expired"),
        (
            21,
            "tls.certificates[5].cert",
            "a.test is also claimed by tls.certificates[4]",
        ),
    ] {
        let needle = format!("check.toml:{line}: {key}: ");
        let l = out
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no {needle} in:\n{out}"));
        assert!(l.contains(what), "{l}");
    }
    // `hosts` settles the overlap.
    let settled = "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\n\
[[tls.certificates]]\ncert = \"exact.pem\"\nkey = \"exact.key\"\n\
[[tls.certificates]]\ncert = \"other.pem\"\nkey = \"other.key\"\nhosts = [\"a.test\"]\n";
    let (ok, out) = check(&dir.0, settled);
    assert!(ok, "{out}");
    assert!(
        out.contains("https 0.0.0.0:8443 (2 certificate files)"),
        "{out}"
    );
}

#[test]
fn pkcs1_and_sec1_keys_from_openssl_are_served() {
    let dir = TempDir::new("tls-keys");
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(&dir.0)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ec.key",
    ]);
    for (k, host) in [("rsa", "rsa.test"), ("ec", "ec.test")] {
        run(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{k}.key"),
            "-out",
            &format!("{k}.pem"),
            "-days",
            "30",
            "-subj",
            &format!("/CN={host}"),
            "-addext",
            &format!("subjectAltName=DNS:{host}"),
        ]);
    }
    assert!(std::fs::read_to_string(dir.0.join("rsa.key"))
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    assert!(std::fs::read_to_string(dir.0.join("ec.key"))
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    let b = Backend::start("one");
    let cfg = format!(
        "{}{}\n[tls]\nlisten = \"127.0.0.1:0\"\n\
[[tls.certificates]]\ncert = \"rsa.pem\"\nkey = \"rsa.key\"\n\
[[tls.certificates]]\ncert = \"ec.pem\"\nkey = \"ec.key\"\n",
        listen_section(""),
        targets_toml(&[b.address()])
    );
    let d = dir.0.clone();
    let sy = Switchyard::start_in(&cfg, &[], dir);
    let port = https_port(&sy);
    for (k, host) in [("rsa", "rsa.test"), ("ec", "ec.test")] {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(d.join(format!("{k}.pem")))
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"))
            .arg(format!("https://{host}:{port}/k"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{k}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_silent_tls_client_is_cut_off_after_request_header_timeout() {
    let b = Backend::start("one");
    let (sy, _c, port) = start(
        "request_header_timeout = 0.5",
        &targets_toml(&[b.address()]),
        "",
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let m = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        metrics::sample(&m, "switchyard_tls_handshakes_total{result=\"timeout\"}"),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn backend_tls_verifies_against_tls_ca_and_fails_over() {
    let dir = TempDir::new("tls-backend");
    let ca = Ca::new("backend");
    std::fs::write(dir.0.join("backend-ca.pem"), &ca.cert_pem).unwrap();
    let (gc, gk) = ca.leaf(&["backend.test"]).write(&dir.0, "good", "");
    let good = PyServer::start("good", &gc, &gk);
    // Signed by a CA switchyard does not trust.
    let stranger = Ca::new("stranger");
    let (bc, bk) = stranger.leaf(&["backend.test"]).write(&dir.0, "bad", "");
    let bad = PyServer::start("bad", &bc, &bk);
    let plain = Backend::start("plain");
    let cfg = format!(
        "{}[gateway]\nhealth_check_interval = 60\n\n\
[[backends]]\nname = \"secure\"\naddresses = [\"{bad}\", \"{good}\"]\ntls = true\ntls_ca = \"backend-ca.pem\"\ntls_server_name = \"backend.test\"\n\n\
[[backends]]\nname = \"untrusted\"\naddresses = [\"{bad}\"]\ntls = true\ntls_ca = \"backend-ca.pem\"\ntls_server_name = \"backend.test\"\n\n\
[[backends]]\nname = \"wrongname\"\naddresses = [\"{good}\"]\ntls = true\ntls_ca = \"backend-ca.pem\"\n\n\
[[backends]]\nname = \"plain\"\naddresses = [\"{plain}\"]\n\n\
[[routes]]\npath = \"/secure/*\"\nbackend = \"secure\"\n\n\
[[routes]]\npath = \"/untrusted/*\"\nbackend = \"untrusted\"\n\n\
[[routes]]\npath = \"/wrongname/*\"\nbackend = \"wrongname\"\n\n\
[[routes]]\npath = \"/plain/*\"\nbackend = \"plain\"\n",
        listen_section(""),
        bad = bad.address(),
        good = good.address(),
        plain = plain.address(),
    );
    let sy = Switchyard::start_in(&cfg, &[], dir);
    let c = client();
    for i in 0..4 {
        let r = c.get(sy.url(&format!("/secure/{i}"))).send().unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["backend"], "good", "{v}");
        assert_eq!(v["path"], format!("/secure/{i}"));
    }
    let r = c.get(sy.url("/untrusted/x")).send().unwrap();
    assert_eq!(r.status(), 503);
    // The certificate names backend.test, not the address' 127.0.0.1.
    let r = c.get(sy.url("/wrongname/x")).send().unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(c.get(sy.url("/plain/x")).send().unwrap().status(), 200);
    let log = sy.log_text();
    assert!(
        log.contains(&format!(
            "connect to {} failed: TLS handshake (as backend.test): invalid peer certificate",
            bad.address()
        )),
        "{log}"
    );
    assert!(
        log.contains("TLS handshake (as 127.0.0.1): invalid peer certificate"),
        "{log}"
    );

    // A registration with tls and its CA as PEM text reaches the service over TLS.
    let reg = json!({"service": "reg", "url": format!("https://{}", good.address()),
                     "tls_ca": ca.cert_pem, "tls_server_name": "backend.test",
                     "routes": [{"path": "/reg/*"}]});
    let r = c
        .post(sy.admin_url("/internal/register-service"))
        .json(&reg)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let v: serde_json::Value = c.get(sy.url("/reg/z")).send().unwrap().json().unwrap();
    assert_eq!(v["backend"], "good");
    let bad_reg = json!({"service": "reg2", "url": format!("http://{}", good.address()),
                         "tls": true, "tls_ca": "not pem", "routes": [{"path": "/reg2/*"}]});
    let r = c
        .post(sy.admin_url("/internal/register-service"))
        .json(&bad_reg)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("tls_ca"));
}
