//! README.md is a contract as well: every command in its ```sh blocks is run here, as a user
//! would type it (`sh -c`, with the built binary first on the PATH), or, where it needs a
//! release build, root or a Docker engine, is named with the test that checks it; the outputs
//! it shows are what the binary prints; its command table is clap's `--help`.
mod support;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

/// A fenced block: the `## ` section it is in, its language and its text.
struct Block {
    section: String,
    lang: String,
    body: String,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match &mut open {
            None => {
                if let Some(h) = line.strip_prefix("## ") {
                    section = h.trim().to_string();
                } else if let Some(lang) = line.strip_prefix("```") {
                    open = Some((lang.trim().to_string(), String::new()));
                }
            }
            Some((lang, body)) => {
                if line.starts_with("```") {
                    out.push(Block {
                        section: section.clone(),
                        lang: std::mem::take(lang),
                        body: std::mem::take(body),
                    });
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

/// One command of an sh block: the text as a shell gets it (continuations and quoted line
/// breaks kept), its trailing comment, and the comment lines right after it (shown output).
#[derive(Debug, Clone)]
struct Cmd {
    section: String,
    text: String,
    comment: String,
    output: Vec<String>,
}

impl Cmd {
    /// The command on one line, whitespace collapsed: how the table below names it.
    fn key(&self) -> String {
        self.text
            .replace("\\\n", " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn commands(text: &str) -> Vec<Cmd> {
    let mut out: Vec<Cmd> = Vec::new();
    for b in blocks(text).into_iter().filter(|b| b.lang == "sh") {
        let mut cur = String::new();
        for line in b.body.lines() {
            if cur.is_empty() {
                if line.trim().is_empty() {
                    continue;
                }
                if let Some(c) = line.trim_start().strip_prefix('#') {
                    if let Some(last) = out.last_mut().filter(|c| c.section == b.section) {
                        last.output.push(c.trim().to_string());
                    }
                    continue;
                }
            }
            cur.push_str(line);
            // Still inside single quotes, or continued with a backslash: the command goes on.
            if cur.matches('\'').count() % 2 == 1 || line.ends_with('\\') {
                cur.push('\n');
                continue;
            }
            let (text, comment) = match cur.rsplit_once(" # ") {
                Some((t, c)) if c.matches('\'').count() % 2 == 0 => (t, c),
                _ => (cur.as_str(), ""),
            };
            out.push(Cmd {
                section: b.section.clone(),
                text: text.trim_end().to_string(),
                comment: comment.trim().to_string(),
                output: Vec::new(),
            });
            cur.clear();
        }
        assert!(cur.is_empty(), "unterminated command in README: {cur}");
    }
    out
}

/// Where each README command is exercised: a test here, a test elsewhere, or CI itself.
/// A command missing from this table, or an entry no longer in README, fails the test below.
const COVERED: &[(&str, &str)] = &[
    ("cargo run --release -- demo", "tests/demo.rs::every_printed_command_does_what_its_comment_says"),
    ("scripts/test.sh", ".ci/run"),
    ("cargo run --release -- -c config.toml", "tests/readme.rs::the_shipped_config_checks_and_runs_as_it_is"),
    ("cargo build --release --locked", "tests/deploy.rs::the_build_context_has_what_the_locked_build_needs"),
    ("cargo install --path . --locked", "tests/deploy.rs::the_build_context_has_what_the_locked_build_needs"),
    ("switchyard check -c config.toml", "tests/readme.rs::the_shipped_config_checks_and_runs_as_it_is"),
    ("switchyard -c config.toml", "tests/readme.rs::the_shipped_config_checks_and_runs_as_it_is"),
    ("sudo install -m 0755 target/release/switchyard /usr/local/bin/switchyard", "tests/deploy.rs::systemd_unit_reloads_drains_and_matches_the_install_steps"),
    ("sudo install -D -m 0644 config.toml /etc/switchyard/config.toml", "tests/deploy.rs::systemd_unit_reloads_drains_and_matches_the_install_steps"),
    ("sudo install -m 0644 deploy/switchyard.service /etc/systemd/system/switchyard.service", "tests/deploy.rs::systemd_unit_reloads_drains_and_matches_the_install_steps"),
    ("sudo systemctl daemon-reload", "tests/deploy.rs::systemd_unit_reloads_drains_and_matches_the_install_steps"),
    ("sudo systemctl enable --now switchyard", "tests/deploy.rs::systemd_unit_reloads_drains_and_matches_the_install_steps"),
    ("sudo systemctl reload switchyard", "tests/deploy.rs::systemd_unit_reloads_drains_and_matches_the_install_steps"),
    ("docker build -f deploy/Dockerfile -t switchyard:local .", "tests/deploy.rs::dockerfile_builds_and_runs_as_the_readme_says"),
    ("docker run --rm -p 8080:8080 -p 127.0.0.1:9901:9901 switchyard:local", "tests/deploy.rs::dockerfile_builds_and_runs_as_the_readme_says"),
    ("docker compose -f deploy/docker-compose.yml up --build", "tests/deploy.rs::compose_file_runs_switchyard_in_front_of_two_services_with_a_valid_config"),
    ("switchyard --help", "tests/readme.rs::the_command_table_is_the_help"),
    ("switchyard route --help", "tests/readme.rs::the_command_table_is_the_help"),
    ("switchyard --version", "tests/readme.rs::the_command_table_is_the_help"),
    ("switchyard check -c shards.toml", "tests/readme.rs::the_shard_example_routes_as_shown"),
    ("switchyard route -c shards.toml -H 'X-Guild-Id: 42' GET /gw/x", "tests/readme.rs::the_shard_example_routes_as_shown"),
    ("cargo test keys_moved -- --nocapture", "src/routing/shard.rs::keys_moved_when_pods_change"),
];

/// The registration example's curls all run in one test (matched by section, not listed).
const REGISTRATION: &str = "Service registration and API keys";

#[test]
fn every_readme_command_is_exercised() {
    let cmds = commands(&readme());
    assert!(cmds.len() > 20, "{cmds:?}");
    for c in &cmds {
        if c.section == REGISTRATION && c.key().starts_with("curl ") {
            continue;
        }
        assert!(
            COVERED.iter().any(|(k, _)| *k == c.key()),
            "README command not exercised by any test (add it to COVERED): {}",
            c.key()
        );
    }
    for (k, place) in COVERED {
        assert!(
            cmds.iter().any(|c| c.key() == *k),
            "COVERED names a command README no longer has: {k}"
        );
        // The place exists: a test function of that name in that file, or the CI script
        // running the command.
        let (file, func) = place.split_once("::").unwrap_or((place, ""));
        let src =
            std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        if func.is_empty() {
            assert!(src.contains(k), "{file} does not run {k}");
        } else {
            assert!(
                src.contains(&format!("fn {func}()")),
                "no fn {func} in {file}"
            );
        }
    }
}

/// Runs one README command through sh in `dir`, with the built binary first on the PATH and
/// `cargo run --release --` standing for it (the suite's build of the same source).
fn sh(cmd: &str, dir: &Path, env: &[(&str, &str)]) -> Output {
    let text = cmd.replace("cargo run --release -- ", "switchyard ");
    let bin = Path::new(env!("CARGO_BIN_EXE_switchyard"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(&text)
        .current_dir(dir)
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        .env_remove("NUM_GATEWAY_PODS")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{text}: still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn find(cmds: &[Cmd], key: &str) -> Cmd {
    cmds.iter()
        .find(|c| c.key() == key)
        .cloned()
        .unwrap_or_else(|| panic!("README lost the command {key}"))
}

fn text_after(readme: &str, cmd: &str) -> String {
    // The ```text block that follows the sh block holding `cmd`.
    let i = readme.find(cmd).expect("command in README");
    let rest = &readme[i..];
    let j = rest.find("```text\n").expect("an output block after it") + 8;
    let k = rest[j..].find("```").unwrap();
    rest[j..j + k].to_string()
}

#[test]
fn the_shard_example_routes_as_shown() {
    let text = readme();
    let cmds = commands(&text);
    // The config the route example runs on is the toml block of the same section.
    let block = blocks(&text)
        .into_iter()
        .find(|b| b.section.starts_with("Guild routing") && b.lang == "toml")
        .expect("the shard config block");
    let dir = TempDir::new("readme-shards");
    std::fs::write(dir.0.join("shards.toml"), &block.body).unwrap();

    let check = find(&cmds, "switchyard check -c shards.toml");
    let out = sh(&check.text, &dir.0, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("gateway (3 pods, md5"));

    let route = find(
        &cmds,
        "switchyard route -c shards.toml -H 'X-Guild-Id: 42' GET /gw/x",
    );
    let out = sh(&route.text, &dir.0, &[]);
    assert!(out.status.success());
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        got,
        text_after(&text, &route.text),
        "README's route output is not what route prints"
    );
    // And the pod it names is the md5 pick of the TypeScript helper:
    // readUInt32BE(md5("42"), 0) % 3.
    let d = md5_of(b"42");
    let pod = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 3;
    assert!(
        got.contains(&format!("ordinal: {pod} -> gateway-{pod}.")),
        "{got}"
    );
}

fn md5_of(b: &[u8]) -> [u8; 16] {
    let out = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .expect("md5sum (coreutils)");
    let hex = String::from_utf8_lossy(&out.stdout);
    let mut d = [0u8; 16];
    for (i, x) in d.iter_mut().enumerate() {
        *x = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    d
}

#[test]
fn the_shipped_config_checks_and_runs_as_it_is() {
    let cmds = commands(&readme());
    let dir = TempDir::new("readme-run");
    std::fs::copy(root().join("config.toml"), dir.0.join("config.toml")).unwrap();
    let check = find(&cmds, "switchyard check -c config.toml");
    let out = sh(&check.text, &dir.0, &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("config.toml: ok"));

    // Both ways of running it; the shipped config takes its listeners from these variables,
    // so the run uses free ports instead of 8080/9901.
    for key in [
        "cargo run --release -- -c config.toml",
        "switchyard -c config.toml",
    ] {
        let cmd = find(&cmds, key);
        let text = format!(
            "exec {}",
            cmd.text.replace("cargo run --release -- ", "switchyard ")
        );
        let bin = Path::new(env!("CARGO_BIN_EXE_switchyard"))
            .parent()
            .unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&text)
            .current_dir(&dir.0)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
            .env("SWITCHYARD_ADMIN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(l);
            }
        });
        let (mut http, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while (http.is_none() || admin.is_none()) && Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                let addr = |needle: &str| {
                    l.split(needle)
                        .nth(1)
                        .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok())
                };
                http = http.or_else(|| addr("http listener on "));
                admin = admin.or_else(|| addr("admin listener on "));
            }
        }
        let (Some(http), Some(admin)) = (http, admin) else {
            let _ = child.kill();
            panic!("{key}: did not start");
        };
        let r = client()
            .get(format!("http://{admin}/ready"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        // "its backends are loopback ports that answer 503 until something listens there"
        let r = client().get(format!("http://{http}/x")).send().unwrap();
        assert_eq!(r.status(), 503, "{key}");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                // What it logged tells where it waited (drain, or after "stopped").
                let tail: Vec<String> = rx.try_iter().collect();
                panic!(
                    "{key}: no exit after SIGTERM; its log:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(code, Some(0), "{key}");
    }
}

/// The usage lines and descriptions of README's command table.
fn table_rows(readme: &str) -> Vec<(String, String)> {
    let sec = readme.split("\n## Command line\n").nth(1).expect("section");
    sec.lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let l = l.replace("\\|", "\u{1}");
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let unq = |s: &str| s.replace('\u{1}', "|").replace('`', "");
            (unq(cells[0]), unq(cells[1]))
        })
        .collect()
}

#[test]
fn the_command_table_is_the_help() {
    let text = readme();
    let cmds = commands(&text);
    let dir = TempDir::new("readme-help");
    let run = |key: &str| -> String {
        let out = sh(&find(&cmds, key).text, &dir.0, &[]);
        assert!(out.status.success(), "{key}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let help = run("switchyard --help");
    let version = run("switchyard --version");
    assert_eq!(
        version.trim(),
        format!("switchyard {}", env!("CARGO_PKG_VERSION"))
    );
    // The usage block of --help, line by line, is the first column of the table.
    let usage: Vec<String> = help
        .split("Usage: ")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    let rows = table_rows(&text);
    let firsts: Vec<String> = rows.iter().map(|(u, _)| u.clone()).collect();
    assert_eq!(firsts, usage, "README's command table vs --help's usage");
    assert!(usage.iter().any(|u| u.contains("--version")));
    // Every subcommand --help lists has a row with its description, and its own --help opens
    // with the same description and usage line.
    let listed: Vec<(String, String)> = help
        .split("Commands:\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (name, about) = l.split_once(' ')?;
            Some((name.to_string(), about.trim().to_string()))
        })
        .filter(|(n, _)| n != "help")
        .collect();
    assert_eq!(listed.len(), 3, "{help}");
    for (name, about) in &listed {
        let row = rows
            .iter()
            .find(|(u, _)| u.starts_with(&format!("switchyard {name} ")))
            .unwrap_or_else(|| panic!("no README row for {name}"));
        assert_eq!(&row.1, about, "README vs --help for {name}");
        let out = sh(&format!("switchyard {name} --help"), &dir.0, &[]);
        let sub = String::from_utf8_lossy(&out.stdout);
        assert!(sub.starts_with(about.as_str()), "{sub}");
        assert!(sub.contains(&format!("Usage: {}\n", row.0)), "{sub}");
    }
    // The route help README shows.
    assert!(run("switchyard route --help").contains("-H, --header"));
    // The lines after the table are --help's closing lines.
    let closing = help.split("Print version\n\n").nth(1).expect("after_help");
    let sec = text
        .split("\n## Command line\n")
        .nth(1)
        .unwrap()
        .replace('`', "");
    for l in closing.lines().filter(|l| !l.is_empty()) {
        let l = l.replace('`', "");
        assert!(sec.contains(&l), "README lacks {l:?} from --help");
    }
}

#[test]
fn the_registration_example_answers_as_shown() {
    let text = readme();
    let cmds: Vec<Cmd> = commands(&text)
        .into_iter()
        .filter(|c| c.section == REGISTRATION)
        .collect();
    assert!(cmds.len() >= 5, "{cmds:?}");
    let keys = blocks(&text)
        .into_iter()
        .find(|b| b.section == REGISTRATION && b.lang == "toml")
        .expect("the api_keys block");
    let sagjan = Backend::start("sagjan");
    let sy = Switchyard::start(&format!("{}{}", listen_section(""), keys.body));
    let dir = TempDir::new("readme-reg");
    for c in &cmds {
        if c.comment.starts_with("deregister: needs a key") {
            // The claim: without the key the same DELETE is refused.
            let keyless = c
                .text
                .replace(" -H 'X-API-Key: test'", "")
                .replace("127.0.0.1:9901", &sy.admin.to_string());
            let out = sh(
                &format!("{keyless} -o /dev/null -w '%{{http_code}}'"),
                &dir.0,
                &[],
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), "403", "{keyless}");
        }
        // README's addresses are the defaults; this run's are free ports.
        let cmd = c
            .text
            .replace("127.0.0.1:9901", &sy.admin.to_string())
            .replace("127.0.0.1:8080", &sy.http.to_string())
            .replace("127.0.0.1:7812", &sagjan.address());
        let out = sh(
            &format!("{cmd} --max-time 5 -w '\\n%{{http_code}}'"),
            &dir.0,
            &[],
        );
        assert!(out.status.success(), "{cmd}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (body, code) = stdout.rsplit_once('\n').unwrap();
        let code: u16 = code.parse().unwrap();
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{cmd}: {e}: {body}"));
        let shown = c.output.join(" ");
        match c.comment.as_str() {
            "" if shown.starts_with('{') => {
                // The answer shown below the command, up to its "...".
                assert_eq!(code, 200, "{cmd}: {v}");
                for pair in shown.trim_matches(['{', '}']).split(", ") {
                    let Some((k, val)) = pair.split_once(": ") else {
                        continue;
                    };
                    if val.starts_with('"') {
                        assert_eq!(
                            v[k.trim_matches('"')].as_str(),
                            Some(val.trim_matches('"')),
                            "{cmd}: {v}"
                        );
                    }
                }
            }
            "routed to sagjan" => {
                assert_eq!(code, 200, "{v}");
                assert_eq!(v["backend"], "sagjan");
            }
            "401 unauthorized" => {
                assert_eq!(code, 401, "{v}");
                assert!(body.contains("unauthorized"), "{body}");
            }
            "the registry" => {
                assert_eq!(code, 200);
                assert!(body.contains("sagjan"), "{body}");
            }
            c if c.starts_with("deregister") => {
                assert_eq!(code, 200, "{v}");
                let r = client().get(sy.url("/api/comments/abc123")).send().unwrap();
                assert_eq!(r.status(), 404, "deregistered: the route is gone");
            }
            other => panic!("no expectation for README's comment {other:?} on {cmd}"),
        }
    }
}
