//! The README promise: `switchyard demo` starts within seconds with nothing else installed, and
//! every command it prints does what its comment says. The commands are taken from the demo's
//! stdout and run as a user would paste them (`sh -c`, real curl); each `# -> names` claim is
//! checked against the echo backend that answered. The demo writes nothing into its working
//! directory and removes its own temporary directory on SIGTERM and SIGINT. A busy port is a
//! clear error naming the flag that moves it. The README's copy of the output is the output.
mod support;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::*;

/// A running demo and what it printed.
struct Demo {
    child: Child,
    out: String,
    base: String,
    admin: String,
    dir: PathBuf,
    cwd: TempDir,
}

fn start_demo(listen: &str, admin: &str) -> Demo {
    let cwd = TempDir::new("demo-cwd");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--listen", listen, "--admin", admin])
        .current_dir(&cwd.0)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let last = line.contains("Ctrl-C stops the demo");
                out.push_str(&line);
                out.push('\n');
                if last {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("the demo printed no complete instructions within 10 s:\n{out}");
            }
        }
    }
    // "Starts within seconds": the instructions come once both listeners are bound.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let first = out.lines().next().unwrap();
    let url_after = |word: &str| -> String {
        let i = first
            .find(word)
            .unwrap_or_else(|| panic!("{word} in {first}"))
            + word.len();
        first[i..]
            .split([',', ' '])
            .next()
            .unwrap()
            .trim_end_matches(',')
            .to_string()
    };
    let base = url_after("the balancer on ");
    let admin = url_after("admin on ");
    let dir = out
        .lines()
        .find_map(|l| l.strip_prefix("config and state: "))
        .and_then(|l| l.split(" (removed at exit)").next())
        .map(PathBuf::from)
        .expect("the demo names its directory");
    Demo {
        child,
        out,
        base,
        admin,
        dir,
        cwd,
    }
}

impl Demo {
    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name}");
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One printed command: the shell text (continuation lines joined) and its claim comment.
#[derive(Debug)]
struct Printed {
    cmd: String,
    claim: String,
}

/// The commands in the demo's output: every line that starts with `curl ` or runs the binary,
/// with `\`-continued lines joined; the text after the last ` # ` is the claim.
fn printed_commands(out: &str) -> Vec<Printed> {
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in out.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            continue;
        }
        cur.push_str(line);
        joined.push(std::mem::take(&mut cur));
    }
    let exe = env!("CARGO_BIN_EXE_switchyard");
    joined
        .into_iter()
        .filter(|l| l.starts_with("curl ") || l.starts_with(exe))
        .map(|l| {
            let (cmd, claim) = l.rsplit_once(" # ").expect("every command has a comment");
            Printed {
                cmd: cmd.trim().to_string(),
                claim: claim.trim().to_string(),
            }
        })
        .collect()
}

/// The names after `-> `, up to the first word that is not one (`-> ordinal 1, without ...`).
fn claimed(claim: &str) -> Vec<String> {
    claim
        .strip_prefix("-> ")
        .map(|c| c.split(", ").map(str::to_string).collect())
        .unwrap_or_default()
}

/// Runs a printed curl exactly as printed, through sh, with `-w` added to learn the status.
fn curl(cmd: &str) -> (u16, Value) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} --max-time 5 -w '\\n%{{http_code}}'"))
        .stdin(Stdio::null())
        .output()
        .expect("sh (and curl, installed by scripts/test.sh) must be on the PATH");
    assert!(
        out.status.success(),
        "{cmd}: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code: u16 = code.trim().parse().unwrap_or(0);
    let v = serde_json::from_str(body).unwrap_or_else(|e| panic!("{cmd}: not JSON ({e}):\n{body}"));
    (code, v)
}

fn wait_healthy(admin: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        client()
            .get(format!("{admin}/health"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|v| v["status"] == "healthy")
    })
}

#[test]
fn every_printed_command_does_what_its_comment_says() {
    let mut demo = start_demo("127.0.0.1:0", "127.0.0.1:0");
    assert!(demo.dir.join("demo.toml").is_file(), "{}", demo.out);
    // Round robin is only visible once both targets are UP (UNKNOWN ones take traffic only
    // while no address of the pool is UP).
    assert!(wait_healthy(&demo.admin), "not healthy:\n{}", demo.out);
    let cmds = printed_commands(&demo.out);
    let mut seen = BTreeSet::new();
    let mut guild_42_pod = None;
    let mut registered = false;
    for p in &cmds {
        let names = claimed(&p.claim);
        if p.cmd.starts_with(env!("CARGO_BIN_EXE_switchyard")) {
            // `switchyard route` on the demo's own config file.
            let out = Command::new("sh").arg("-c").arg(&p.cmd).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}: {text}", p.cmd);
            let ordinal = names[0].strip_prefix("ordinal ").expect("an ordinal claim");
            assert!(
                text.contains(&format!("ordinal: {ordinal} -> ")),
                "{}:\n{text}",
                p.cmd
            );
            assert_eq!(
                guild_42_pod.as_deref(),
                Some(format!("gateway-{ordinal}").as_str()),
                "route and the guild 42 curl disagree"
            );
            seen.insert("route".to_string());
            continue;
        }
        if p.cmd.contains("/orders/17") {
            assert!(registered, "the orders curl comes after the registration");
        }
        if p.cmd.contains("register-service") {
            // Before the registration, /orders/17 is somebody else's (the catch-all).
            let v: Value = client()
                .get(format!("{}/orders/17", demo.base))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_ne!(v["backend"], "orders");
        }
        let (code, v) = curl(&p.cmd);
        assert_eq!(code, 200, "{}: {v}", p.cmd);
        if names.is_empty() {
            continue;
        }
        match v["backend"].as_str() {
            Some(first) => {
                // Each name answers in turn: as many runs as names show exactly those names.
                let mut got = BTreeSet::from([first.to_string()]);
                for _ in 1..names.len() {
                    let (code, v) = curl(&p.cmd);
                    assert_eq!(code, 200);
                    got.insert(v["backend"].as_str().unwrap_or("").to_string());
                }
                let want: BTreeSet<String> = names.iter().cloned().collect();
                assert_eq!(got, want, "{}", p.cmd);
                if let Some(n) = first.strip_prefix("gateway-") {
                    assert_eq!(v["headers"]["x-shard"], n, "{}: {v}", p.cmd);
                    if p.cmd.contains("X-Guild-Id: 42'") {
                        guild_42_pod = Some(first.to_string());
                    }
                }
                seen.extend(got);
            }
            None => {
                assert_eq!(v["status"].as_str(), Some(names[0].as_str()), "{}", p.cmd);
                registered = true;
                seen.insert(names[0].clone());
            }
        }
    }
    // All four kinds of routing and the registration were shown (and checked above).
    for want in [
        "api-1",
        "api-2",
        "files",
        "comments-1",
        "comments-2",
        "gateway-0",
        "gateway-1",
        "gateway-2",
        "registered",
        "orders",
        "route",
    ] {
        assert!(seen.contains(want), "{want} not shown:\n{}", demo.out);
    }
    // The status page it names.
    let page = demo
        .out
        .lines()
        .find_map(|l| l.strip_prefix("status page: "))
        .unwrap();
    let r = client().get(page).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("<html"));
    // The registration went to the demo's own store, not into the working directory.
    assert!(demo.dir.join("state.json").is_file());
    demo.signal("TERM");
    assert_eq!(demo.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!demo.dir.exists(), "{} is left behind", demo.dir.display());
    let left: Vec<_> = std::fs::read_dir(&demo.cwd.0).unwrap().collect();
    assert!(left.is_empty(), "the demo wrote into its cwd: {left:?}");
}

#[test]
fn ctrl_c_removes_the_temporary_directory() {
    let mut demo = start_demo("127.0.0.1:0", "127.0.0.1:0");
    assert!(demo.dir.is_dir());
    demo.signal("INT");
    assert_eq!(demo.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!demo.dir.exists(), "{} is left behind", demo.dir.display());
}

#[test]
fn a_busy_port_is_a_clear_error_naming_the_flag() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = busy.local_addr().unwrap().to_string();
    for (args, flag) in [
        (
            ["--listen", b.as_str(), "--admin", "127.0.0.1:0"],
            "--listen",
        ),
        (
            ["--listen", "127.0.0.1:0", "--admin", b.as_str()],
            "--admin",
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the demo kept running on a busy port");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains(flag) && err.contains(&b), "{err}");
        assert!(err.contains("in use"), "{err}");
        assert!(!out.contains("curl"), "instructions printed anyway:\n{out}");
    }
}

/// The README shows the demo's output; it must be the output (ports, the temporary directory
/// and the binary's path normalized).
#[test]
fn the_readme_shows_what_the_demo_prints() {
    let demo = start_demo("127.0.0.1:0", "127.0.0.1:0");
    let port = |url: &str| url.rsplit(':').next().unwrap().to_string();
    let (data, admin) = (port(&demo.base), port(&demo.admin));
    let mut text = demo
        .out
        .replace(&format!("127.0.0.1:{data}"), "127.0.0.1:8080")
        .replace(&format!("127.0.0.1:{admin}"), "127.0.0.1:9901")
        .replace(demo.dir.to_str().unwrap(), "/tmp/switchyard-demo-XXXX")
        .replace(env!("CARGO_BIN_EXE_switchyard"), "switchyard");
    // The orders backend's port is whatever the kernel gave it.
    let i = text.find("\"url\": \"http://127.0.0.1:").unwrap() + 25;
    let j = i + text[i..].find('"').unwrap();
    text.replace_range(i..j, "PORT");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split("```text\n")
        .find(|b| b.starts_with("switchyard demo: "))
        .and_then(|b| b.split("```").next())
        .expect("README shows the demo's output in a ```text block");
    // The comment column is padded to the real URLs' lengths: compare words, line by line.
    let words = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        words(block),
        words(&text),
        "README's demo output differs from the demo's:\n{text}"
    );
}
