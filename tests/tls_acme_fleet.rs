//! ACME in a fleet (SPEC §9 with `[store] kind = "etcd"`): two switchyard replicas on one real
//! etcd, a real pebble + pebble-challtestsrv on loopback. One replica orders, the other picks
//! the certificate up through its watch; Python `ssl`, trusting only pebble's root, sees the
//! same leaf on both. Pebble's own log counts the orders it accepted (`Added order`, one line
//! per stored newOrder) and the certificates it issued. pebble validates http-01 on one plain
//! port only (replica A's), so an order placed by replica B succeeds only if A answers B's
//! challenge from etcd — the second test makes that happen for certain.
mod support;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::etcd::Etcd;
use support::pebble::{free_tcp_port, Pebble};
use support::tls::{https_port, PyClient};
use support::*;

const PREFIX: &str = "/switchyard/";

fn fleet_config(
    http_port: u16,
    directory: &str,
    ca: &str,
    etcd: &str,
    b: &Backend,
    dom: &str,
) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{http_port}\"\naccess_log = false\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{}\n\
[tls]\nlisten = \"127.0.0.1:0\"\n\n\
[tls.acme]\ndirectory = \"{directory}\"\nemail = \"ops@fleet.test\"\ndomains = [\"{dom}\"]\nca = \"{ca}\"\n\n\
[store]\nkind = \"etcd\"\nendpoints = [\"{etcd}\"]\nprefix = \"{PREFIX}\"\nfull_refresh_interval = 1\n",
        targets_toml(&[b.address()]),
    )
}

fn health(sy: &Switchyard) -> Value {
    client()
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn ready(sy: &Switchyard) -> bool {
    client()
        .get(sy.admin_url("/ready"))
        .send()
        .map(|r| r.status() == 200)
        .unwrap_or(false)
}

fn keys(e: &Etcd, prefix: &str) -> Vec<String> {
    e.ctl(&["get", prefix, "--prefix", "--keys-only"])
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn installed(sy: &Switchyard, dom: &str, pebble: &Pebble) {
    // Matches "installed" (the orderer) and "installed from etcd" / "from the store".
    assert!(
        sy.wait_log(
            &format!("acme: certificate for {dom} installed"),
            Duration::from_secs(90)
        ),
        "{}\n--- pebble:\n{}",
        sy.log_text(),
        pebble.log()
    );
}

/// The leaves the replicas serve for `dom`, verified against pebble's root.
fn leaves(py: &mut PyClient, rs: &[&Switchyard], dom: &str, root: &str) -> Vec<Value> {
    rs.iter()
        .map(|sy| {
            let r =
                py.call(json!({"op": "handshake", "port": https_port(sy), "sni": dom, "ca": root}));
            assert_eq!(r["ok"], true, "{dom}: {r}");
            r
        })
        .collect()
}

/// Waits until every replica serves one leaf other than `old`; returns it.
fn all_move_on(py: &mut PyClient, rs: &[&Switchyard], dom: &str, root: &str, old: &Value) -> Value {
    let mut seen = Vec::new();
    let moved = wait_until(Duration::from_secs(30), || {
        seen = leaves(py, rs, dom, root);
        seen.iter()
            .all(|l| l["sha256"] == seen[0]["sha256"] && l["sha256"] != old["sha256"])
    });
    assert!(moved, "{seen:?}");
    seen.remove(0)
}

/// The leaf both replicas serve for `dom`, verified against pebble's root: (sha256, serial).
fn same_leaf_on_both(py: &mut PyClient, rs: [&Switchyard; 2], dom: &str, root: &str) -> Value {
    let mut seen = Vec::new();
    for sy in rs {
        let r = py.call(json!({"op": "handshake", "port": https_port(sy), "sni": dom, "ca": root}));
        assert_eq!(r["ok"], true, "{dom}: {r}");
        seen.push(r);
    }
    assert_eq!(seen[0]["sha256"], seen[1]["sha256"], "{seen:?}");
    seen.remove(0)
}

fn serial_of(leaf: &Value) -> String {
    leaf["serial"]
        .as_str()
        .unwrap()
        .trim_start_matches('0')
        .to_lowercase()
}

fn check_health(sy: &Switchyard, dom: &str) {
    let h = health(sy);
    let certs = h["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{h}");
    assert_eq!(certs[0]["source"], "acme", "{h}");
    assert_eq!(certs[0]["hosts"], json!([dom]), "{h}");
}

#[test]
fn two_replicas_on_one_etcd_serve_the_certificate_of_a_single_order() {
    let mut e = Etcd::start();
    let pd = TempDir::new("pebble-fleet");
    let a_port = free_tcp_port();
    let pebble = Pebble::start(&pd.0, a_port, None);
    let b = Backend::start("one");
    let dom = "fleet-a.test";
    let endpoint = e.endpoint();
    let cfg = |port| fleet_config(port, &pebble.directory, &pebble.ca_file, &endpoint, &b, dom);
    let a = Switchyard::start(&cfg(a_port));
    let bb = Switchyard::start(&cfg(0));
    assert!(wait_until(Duration::from_secs(10), || ready(&a) && ready(&bb)));
    installed(&a, dom, &pebble);
    installed(&bb, dom, &pebble);

    let root = pebble.root(&pd.0);
    let mut py = PyClient::start();
    let leaf = same_leaf_on_both(&mut py, [&a, &bb], dom, &root);
    // Give a second orderer every chance to show up before counting.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    assert_eq!(
        pebble.issued_serials(),
        [serial_of(&leaf)],
        "{}",
        pebble.log()
    );
    let orderers: Vec<usize> = [&a, &bb]
        .iter()
        .map(|sy| sy.log_text().matches("acme: ordering").count())
        .collect();
    assert_eq!(orderers.iter().sum::<usize>(), 1, "{orderers:?}");
    eprintln!(
        "ordered by replica {} (pebble validates on replica A's port)",
        if orderers[0] == 1 { "A" } else { "B" }
    );
    check_health(&a, dom);
    check_health(&bb, dom);

    // The store: one sealed certificate, one account; no lock or challenge left behind.
    assert_eq!(
        keys(&e, &format!("{PREFIX}acme/certificates/")),
        [format!("{PREFIX}acme/certificates/{dom}")]
    );
    assert_eq!(keys(&e, &format!("{PREFIX}acme/accounts/")).len(), 1);
    assert!(wait_until(Duration::from_secs(5), || keys(
        &e,
        &format!("{PREFIX}acme/locks/")
    )
    .is_empty()));
    assert!(keys(&e, &format!("{PREFIX}acme/challenges/")).is_empty());

    // etcd away: both replicas keep serving the certificate they have.
    e.stop();
    std::thread::sleep(Duration::from_secs(2));
    let again = same_leaf_on_both(&mut py, [&a, &bb], dom, &root);
    assert_eq!(again["sha256"], leaf["sha256"]);
    check_health(&a, dom);
    e.resume();

    // A third replica started later serves the stored certificate without ordering.
    let c = Switchyard::start(&cfg(0));
    installed(&c, dom, &pebble);
    let r = py.call(json!({"op": "handshake", "port": https_port(&c), "sni": dom, "ca": root}));
    assert_eq!(r["sha256"], leaf["sha256"], "{r}");
    assert!(!c.log_text().contains("acme: ordering"), "{}", c.log_text());
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());

    // An operator forces a new certificate by deleting the key: the replicas keep serving
    // the old leaf until the new one is there (an order takes over a second: the challenge
    // is given CHALLENGE_PROPAGATION to reach every replica), and one of the three orders it.
    e.ctl(&["del", &format!("{PREFIX}acme/certificates/{dom}")])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for sy in [&a, &bb, &c] {
        let r = py.call(json!({"op": "handshake", "port": https_port(sy), "sni": dom, "ca": root}));
        assert_eq!(r["sha256"], leaf["sha256"], "{r}");
    }
    all_move_on(&mut py, &[&a, &bb, &c], dom, &root, &leaf);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pebble.orders(), 2, "{}", pebble.log());
    let ours: usize = [&a, &bb, &c]
        .iter()
        .map(|sy| sy.log_text().matches("acme: ordering").count())
        .sum();
    assert_eq!(ours, 2);
}

/// `etcdctl lock` holds the domain's lock the way a replica does (etcd's lock service, a
/// session lease with a TTL), then dies by SIGKILL without unlocking: the replicas wait,
/// then order once its lease runs out. Replica A cannot reach the CA (its directory is a
/// dead port), so replica B orders, and pebble, validating on A's plain port only, gets the
/// answer from A — which has it only through etcd.
#[test]
fn a_dead_holders_lock_runs_out_and_the_order_is_validated_through_the_other_replica() {
    let e = Etcd::start();
    let pd = TempDir::new("pebble-dead");
    let a_port = free_tcp_port();
    let pebble = Pebble::start(&pd.0, a_port, None);
    let b = Backend::start("one");
    let dom = "fleet-d.test";
    let lock = format!("{PREFIX}acme/locks/{dom}");
    let mut holder = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &e.endpoint(), "lock", "--ttl", "3", &lock])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl (apt-get install etcd-client)");
    // It prints the lock's key once it holds the lock.
    assert!(wait_until(Duration::from_secs(10), || keys(&e, &lock)
        .len()
        == 1));

    let dead_directory = format!("https://127.0.0.1:{}/dir", dead_port());
    let a = Switchyard::start(&fleet_config(
        a_port,
        &dead_directory,
        &pebble.ca_file,
        &e.endpoint(),
        &b,
        dom,
    ));
    let bb = Switchyard::start(&fleet_config(
        0,
        &pebble.directory,
        &pebble.ca_file,
        &e.endpoint(),
        &b,
        dom,
    ));
    assert!(wait_until(Duration::from_secs(10), || ready(&a) && ready(&bb)));
    // Both wait in the lock queue behind the holder.
    assert!(wait_until(Duration::from_secs(10), || keys(&e, &lock)
        .len()
        == 3));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pebble.orders(), 0, "ordered while the lock was held");
    assert!(!bb.log_text().contains("acme: ordering"));

    let _ = holder.kill();
    let _ = holder.wait();
    let killed = Instant::now();
    installed(&bb, dom, &pebble);
    let took = killed.elapsed();
    // The holder's lease (3 s) had to run out first; then no LOCK_WAIT round was lost.
    assert!(took < Duration::from_secs(20), "{took:?}");
    installed(&a, dom, &pebble);
    assert!(
        bb.log_text().contains("acme: ordering"),
        "{}",
        bb.log_text()
    );
    assert!(!a.log_text().contains("acme: ordering"), "{}", a.log_text());

    let root = pebble.root(&pd.0);
    let mut py = PyClient::start();
    let leaf = same_leaf_on_both(&mut py, [&a, &bb], dom, &root);
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    assert_eq!(
        pebble.issued_serials(),
        [serial_of(&leaf)],
        "{}",
        pebble.log()
    );
    check_health(&a, dom);
    check_health(&bb, dom);
}

/// Seconds of the day of each `Added order` line in pebble's log (`Pebble YYYY/MM/DD HH:MM:SS`).
fn order_times(pebble: &Pebble) -> Vec<u32> {
    pebble
        .log()
        .lines()
        .filter(|l| l.contains("Added order "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|t| {
            let p: Vec<u32> = t.split(':').filter_map(|x| x.parse().ok()).collect();
            (p.len() == 3).then(|| p[0] * 3600 + p[1] * 60 + p[2])
        })
        .collect()
}

/// Twenty-second certificates are renewed at half their life (10 s). Both replicas are due
/// at the same moment; one renews, the other finds the fresh certificate under the lock, and
/// both swap the renewed leaf in without a restart. A replica that ordered without looking
/// again under the lock would place its order right after the other one's (an order takes
/// 1–3 s here), so orders closer than 6 s would be duplicates.
#[test]
fn renewals_in_the_fleet_are_ordered_once_and_reach_every_replica() {
    let e = Etcd::start();
    let pd = TempDir::new("pebble-renew");
    let a_port = free_tcp_port();
    let pebble = Pebble::start(&pd.0, a_port, Some(20));
    let b = Backend::start("one");
    let dom = "fleet-r.test";
    let endpoint = e.endpoint();
    let cfg = |port| fleet_config(port, &pebble.directory, &pebble.ca_file, &endpoint, &b, dom);
    let a = Switchyard::start(&cfg(a_port));
    let bb = Switchyard::start(&cfg(0));
    installed(&a, dom, &pebble);
    installed(&bb, dom, &pebble);
    let root = pebble.root(&pd.0);
    let mut py = PyClient::start();
    let first = same_leaf_on_both(&mut py, [&a, &bb], dom, &root);
    assert!(
        wait_until(Duration::from_secs(40), || pebble.issued_serials().len()
            >= 2),
        "{}",
        pebble.log()
    );
    // Room for a duplicate order to show up.
    std::thread::sleep(Duration::from_secs(4));
    // Both replicas serve the renewed leaf, the same one.
    let last = all_move_on(&mut py, &[&a, &bb], dom, &root, &first);
    let serials = pebble.issued_serials();
    assert_eq!(serials.len(), 2, "{}", pebble.log());
    assert_eq!(serials[1], serial_of(&last));
    let times = order_times(&pebble);
    assert_eq!(times.len(), 2, "{}", pebble.log());
    assert!(
        times[1] >= times[0] + 6,
        "two orders closer than half a lifetime: {times:?}\n{}",
        pebble.log()
    );
    let ours: usize = [&a, &bb]
        .iter()
        .map(|sy| sy.log_text().matches("acme: ordering").count())
        .sum();
    assert_eq!(ours, 2);
}

/// etcd is down when the replicas start: nobody orders (no lock, no order), and once etcd is
/// back the domain is ordered within seconds (the store has its own retry schedule, not the
/// CA's 10 s doubling backoff, which would be at its third step by then), once.
#[test]
fn replicas_started_while_etcd_is_down_order_once_it_is_back() {
    let mut e = Etcd::on_port_not_started(dead_port());
    let pd = TempDir::new("pebble-late-etcd");
    let a_port = free_tcp_port();
    let pebble = Pebble::start(&pd.0, a_port, None);
    let b = Backend::start("one");
    let dom = "fleet-l.test";
    let endpoint = e.endpoint();
    let cfg = |port| fleet_config(port, &pebble.directory, &pebble.ca_file, &endpoint, &b, dom);
    let a = Switchyard::start(&cfg(a_port));
    let bb = Switchyard::start(&cfg(0));
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(pebble.orders(), 0, "ordered without the lock");
    assert!(
        a.log_text()
            .contains(&format!("acme: cannot order {dom} now")),
        "{}",
        a.log_text()
    );
    e.resume();
    let back = Instant::now();
    installed(&a, dom, &pebble);
    installed(&bb, dom, &pebble);
    assert!(
        back.elapsed() < Duration::from_secs(10),
        "{:?}",
        back.elapsed()
    );
    let root = pebble.root(&pd.0);
    let mut py = PyClient::start();
    same_leaf_on_both(&mut py, [&a, &bb], dom, &root);
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
}

/// pebble validates on a port nobody listens on, so every order fails. The replica whose
/// order failed writes the fleet's backoff (10 s after the first failure) under the lock; the
/// other one finds it under the lock and waits too, instead of trying the CA again at once.
#[test]
fn a_failed_order_backs_the_whole_fleet_off() {
    let e = Etcd::start();
    let pd = TempDir::new("pebble-fail");
    let pebble = Pebble::start(&pd.0, dead_port(), None);
    let b = Backend::start("one");
    let dom = "fleet-f.test";
    let endpoint = e.endpoint();
    let cfg = fleet_config(0, &pebble.directory, &pebble.ca_file, &endpoint, &b, dom);
    let a = Switchyard::start(&cfg);
    let bb = Switchyard::start(&cfg);
    let failed = format!("acme: order for {dom} failed");
    assert!(
        wait_until(Duration::from_secs(30), || a.log_text().contains(&failed)
            || bb.log_text().contains(&failed)),
        "{}\n{}",
        a.log_text(),
        pebble.log()
    );
    let (failer, other) = if a.log_text().contains(&failed) {
        (&a, &bb)
    } else {
        (&bb, &a)
    };
    assert!(
        other.wait_log(
            &format!("acme: an order for {dom} failed in the fleet; the next attempt is in"),
            Duration::from_secs(15)
        ),
        "{}",
        other.log_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    assert!(!other.log_text().contains("acme: ordering"));
    assert!(failer.log_text().contains("the fleet retries in 10s"));
    let retry = e
        .ctl(&[
            "get",
            &format!("{PREFIX}acme/retry/{dom}"),
            "--print-value-only",
        ])
        .unwrap();
    assert!(retry.contains("failures"), "{retry}");
    assert!(keys(&e, &format!("{PREFIX}acme/certificates/")).is_empty());
}
