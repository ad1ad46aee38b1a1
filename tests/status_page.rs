//! The admin status page (`GET /`) as a browser sees it: headless Chromium loads it from a
//! running switchyard with one backend stopped, and the DOM must say DOWN there and UP elsewhere.
mod support;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium with `args` and the URL; returns stdout. Fails the test (never
/// skips) if Chromium is missing, fails, or hangs.
fn chromium(profile: &TempDir, args: &[&str], url: &str) -> String {
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{CHROMIUM} is required for this test: {e}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "chromium failed ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `data-status` of the table row whose `data-address` is `addr`, in serialized DOM.
fn row_status(dom: &str, addr: &str) -> Option<String> {
    let needle = format!("data-address=\"{addr}\"");
    let at = dom.find(&needle)?;
    let tag_start = dom[..at].rfind('<')?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[tag_start..tag_end];
    assert!(tag.starts_with("<tr"), "the hook sits on the row: {tag}");
    let s = tag.find("data-status=\"")? + "data-status=\"".len();
    Some(tag[s..s + tag[s..].find('"')?].to_string())
}

#[test]
fn status_page_shows_down_and_up_in_a_real_browser() {
    let a = Backend::start("a");
    let mut b = Backend::start("b");
    let c = Backend::start("c");
    let cfg = format!(
        "{}[gateway]\nhealth_check_interval = 0.1\ndown_check_interval = 0.2\n\
         max_consecutive_failures = 2\nhealth_check_timeout = 1\n\n\
         [[targets]]\naddress = \"{a}\"\nhealth_check_endpoint = \"/health?probe=1&from='sy'\"\n\n\
         [[targets]]\naddress = \"{b}\"\nhealth_check_endpoint = \"/health\"\n\n\
         [[backends]]\nname = \"comments\"\naddresses = [\"{a}\", \"{c}\"]\nhealth_check_endpoint = \"/healthz\"\n\n\
         [[routes]]\npath = \"/api/comments/*\"\nmethods = [\"GET\"]\nbackend = \"comments\"\n",
        listen_section(""),
        a = a.address(),
        b = b.address(),
        c = c.address(),
    );
    let sy = Switchyard::start(&cfg);
    let status = |addr: &str| -> String {
        let v: Value = client()
            .get(sy.admin_url("/health"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["targets"][addr]["status"].as_str().unwrap_or("").into()
    };
    assert!(wait_until(Duration::from_secs(10), || status(&b.address())
        == "UP"
        && status(&a.address()) == "UP"));
    b.stop();
    assert!(
        wait_until(Duration::from_secs(10), || status(&b.address()) == "DOWN"),
        "b never DOWN:\n{}",
        sy.log_text()
    );
    let http = client();
    for i in 0..12 {
        let _ = http.get(sy.url(&format!("/page/{i}"))).send().unwrap();
        let _ = http
            .get(sy.url(&format!("/api/comments/{i}")))
            .send()
            .unwrap();
    }

    // The raw page: HTML, self-refreshing, no external assets, dynamic text escaped.
    let r = http.get(sy.admin_url("/")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().unwrap();
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    assert!(
        html.contains("GET /health?probe=1&amp;from=&#39;sy&#39;"),
        "endpoint escaped"
    );

    let profile = TempDir::new("chromium");
    let url = sy.admin_url("/");
    let dom = chromium(&profile, &["--dump-dom"], &url);
    assert_eq!(
        row_status(&dom, &b.address()).as_deref(),
        Some("DOWN"),
        "{dom}"
    );
    assert_eq!(row_status(&dom, &a.address()).as_deref(), Some("UP"));
    assert_eq!(row_status(&dom, &c.address()).as_deref(), Some("UP"));
    assert!(dom.contains("data-overall=\"degraded\""));
    assert!(dom.contains("data-pool=\"comments\""));

    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,800",
        ],
        &url,
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 20_000,
        "a rendered page, not a blank one: {} bytes",
        bytes.len()
    );
}
