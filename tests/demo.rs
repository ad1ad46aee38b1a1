//! The README promise: `switchyard demo` starts, routes by path, pattern and round robin, and
//! answers on its admin port, with nothing else installed.
mod support;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

#[test]
fn demo_routes_what_it_prints() {
    let (port, admin) = (dead_port(), dead_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let l2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            l2.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let up = wait_until(Duration::from_secs(10), || {
        client()
            .get(format!("{base}/hello"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    let text = log.lock().unwrap().clone();
    assert!(up, "demo did not answer:\n{text}");
    assert!(
        text.contains(&format!("curl -s {base}/hello")),
        "prints curl commands:\n{text}"
    );
    let backend = |path: &str| -> String {
        let v: Value = client()
            .get(format!("{base}{path}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["backend"].as_str().unwrap_or("").to_string()
    };
    let a = backend("/hello");
    let b = backend("/hello");
    assert_ne!(a, b, "round robin alternates");
    assert!(a.starts_with("api-") && b.starts_with("api-"));
    assert_eq!(backend("/files/report.pdf"), "files");
    assert!(backend("/filesystem").starts_with("api-"));
    assert!(backend("/api/comments/post-1").starts_with("comments-"));
    let h = client()
        .get(format!("http://127.0.0.1:{admin}/health"))
        .send()
        .unwrap();
    assert_eq!(h.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}
