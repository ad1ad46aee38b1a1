//! switchyard's own etcd v3 client against a real etcd, checked through etcdctl (an independent
//! implementation of the same protocol): prefix ranges, guarded transactions, watches from a
//! revision, leases with keep-alive and expiry, and the lease-backed lock.
mod support;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::etcd::Etcd;
use support::{dead_port, wait_until};
use switchyard::etcd::client::{compare_mod_revision, prefix_end, put_op};
use switchyard::etcd::pb::etcdserverpb::compare::CompareResult;
use switchyard::etcd::pb::etcdserverpb::WatchResponse;
use switchyard::etcd::pb::mvccpb::event::EventType;
use switchyard::etcd::{Client, ConnectOptions, Error};

const OPTS: ConnectOptions = ConnectOptions {
    connect_timeout: Duration::from_secs(1),
    op_timeout: Duration::from_secs(2),
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn client(e: &Etcd) -> Client {
    Client::connect(&[e.endpoint()], OPTS).unwrap()
}

/// etcdctl's value for `key`, None if absent.
fn ctl_get(e: &Etcd, key: &str) -> Option<String> {
    let out = e.ctl(&["get", key, "--print-value-only"]).unwrap();
    let v = out.trim_end_matches('\n');
    (!out.is_empty()).then(|| v.to_string())
}

fn ctl_keys(e: &Etcd, prefix: &str) -> Vec<String> {
    let out = e.ctl(&["get", prefix, "--prefix", "--keys-only"]).unwrap();
    out.lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

async fn next(w: &mut switchyard::etcd::Watch) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), w.message())
        .await
        .expect("no watch response within 5 s")
        .expect("watch failed")
        .expect("watch closed")
}

/// (type, key, value) of each event in a watch response.
fn events(r: &WatchResponse) -> Vec<(EventType, String, String)> {
    r.events
        .iter()
        .map(|ev| {
            let kv = ev.kv.clone().unwrap_or_default();
            (
                EventType::try_from(ev.r#type).unwrap(),
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

#[test]
fn range_put_delete_and_guarded_transactions() {
    let e = Etcd::start();
    for (k, v) in [("/t/a", "1"), ("/t/b", "2"), ("/t", "no"), ("/t0", "no")] {
        e.ctl(&["put", k, v]).unwrap();
    }
    rt().block_on(async {
        let c = client(&e);
        let r = c.range_prefix(b"/t/").await.unwrap();
        let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(
            keys,
            [&b"/t/a"[..], b"/t/b"],
            "only the keys under the prefix"
        );
        assert_eq!(r.kvs[1].value, b"2");
        let rev = r.header.unwrap().revision;
        assert_eq!(rev, 5, "four puts after the initial revision 1");

        c.put(b"/t/c", b"3", 0).await.unwrap();
        assert_eq!(ctl_get(&e, "/t/c").as_deref(), Some("3"));

        // Read at `rev`; a write outside the prefix then does not break a guard on it...
        let p = b"/t/";
        let rev = c.range_prefix(p).await.unwrap().header.unwrap().revision;
        e.ctl(&["put", "/t0", "changed"]).unwrap();
        let guard = || compare_mod_revision(p, &prefix_end(p), CompareResult::Less, rev + 1);
        let ok = c
            .txn(vec![guard()], vec![put_op(b"/t/d", b"4")], Vec::new())
            .await
            .unwrap();
        assert!(
            ok.succeeded,
            "nothing under /t/ changed since revision {rev}"
        );
        assert_eq!(ctl_get(&e, "/t/d").as_deref(), Some("4"));
        // ...and a write inside it does: the same guard now fails and runs the failure branch.
        let stale = c
            .txn(
                vec![guard()],
                vec![put_op(b"/t/e", b"lost")],
                vec![put_op(b"/t-failed", b"yes")],
            )
            .await
            .unwrap();
        assert!(!stale.succeeded);
        assert_eq!(ctl_get(&e, "/t/e"), None);
        assert_eq!(ctl_get(&e, "/t-failed").as_deref(), Some("yes"));

        assert_eq!(c.delete(b"/t/a").await.unwrap().deleted, 1);
        assert_eq!(ctl_get(&e, "/t/a"), None);
        assert_eq!(c.delete(b"/t/a").await.unwrap().deleted, 0);
    });
}

#[test]
fn watch_a_prefix_from_a_revision_and_see_compaction() {
    let e = Etcd::start();
    e.ctl(&["put", "/w/a", "1"]).unwrap(); // revision 2
    e.ctl(&["put", "/x", "elsewhere"]).unwrap();
    rt().block_on(async {
        let c = client(&e);
        let mut w = c.watch_prefix(b"/w/", 2).await.unwrap();
        // History from revision 2 first.
        assert_eq!(
            events(&next(&mut w).await),
            [(EventType::Put, "/w/a".into(), "1".into())]
        );
        e.ctl(&["put", "/y", "elsewhere"]).unwrap();
        e.ctl(&["put", "/w/b", "2"]).unwrap();
        let r = next(&mut w).await;
        assert_eq!(events(&r), [(EventType::Put, "/w/b".into(), "2".into())]);
        let rev_b = r.header.unwrap().revision;
        e.ctl(&["del", "/w/a"]).unwrap();
        let r = next(&mut w).await;
        assert_eq!(events(&r), [(EventType::Delete, "/w/a".into(), "".into())]);
        assert!(r.header.unwrap().revision > rev_b);

        // Watching from a revision compacted away: etcd cancels and names the compaction.
        e.ctl(&["compact", &rev_b.to_string()]).unwrap();
        let mut old = c.watch_prefix(b"/w/", 2).await.unwrap();
        let r = next(&mut old).await;
        assert!(r.canceled, "{r:?}");
        assert_eq!(r.compact_revision, rev_b);
    });
}

#[test]
fn a_lease_kept_alive_holds_its_key_and_expiry_or_revoke_deletes_it() {
    let e = Etcd::start();
    rt().block_on(async {
        let c = client(&e);
        let lease = c.lease_grant(Duration::from_secs(2)).await.unwrap();
        assert!(lease.ttl >= 2, "{lease:?}");
        c.put(b"/l/kept", b"v", lease.id).await.unwrap();
        let mut ka = c.lease_keep_alive(lease.id).await.unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(lease.ttl as u64 * 2) {
            assert!(ka.renew().await.unwrap() >= 2);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(
            ctl_get(&e, "/l/kept").as_deref(),
            Some("v"),
            "alive after twice its TTL"
        );
        assert!(c.lease_ttl(lease.id).await.unwrap().is_some());

        // Stop renewing: etcd deletes the key once the TTL is over.
        let gone = Instant::now();
        let ok = wait_until(Duration::from_secs(10), || ctl_get(&e, "/l/kept").is_none());
        assert!(ok, "key outlived its lease");
        assert!(
            gone.elapsed() >= Duration::from_millis(500),
            "expired too early"
        );
        assert_eq!(c.lease_ttl(lease.id).await.unwrap(), None);
        assert!(matches!(ka.renew().await, Err(Error::LeaseExpired(id)) if id == lease.id));

        let long = c.lease_grant(Duration::from_secs(60)).await.unwrap();
        c.put(b"/l/revoked", b"v", long.id).await.unwrap();
        c.lease_revoke(long.id).await.unwrap();
        assert_eq!(ctl_get(&e, "/l/revoked"), None, "revoke deletes at once");
    });
}

#[test]
fn the_lock_is_exclusive_waits_are_bounded_and_release_hands_it_over() {
    let e = Etcd::start();
    let name = b"/locks/acme/example.com";
    rt().block_on(async {
        let (c1, c2) = (client(&e), client(&e));
        let ttl = Duration::from_secs(3);
        let a = c1.acquire(name, ttl, Duration::from_secs(2)).await.unwrap();
        assert!(a.key().starts_with(name));
        assert_eq!(
            ctl_keys(&e, "/locks/acme/example.com"),
            [String::from_utf8_lossy(a.key())]
        );

        let t0 = Instant::now();
        let b = c2.acquire(name, ttl, Duration::from_millis(500)).await;
        assert!(matches!(b, Err(Error::Timeout("lock"))), "second holder");
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(500) && waited < Duration::from_secs(3));
        // The failed waiter left nothing behind in the queue.
        assert!(wait_until(Duration::from_secs(3), || ctl_keys(
            &e,
            "/locks/acme/example.com"
        )
        .len()
            == 1));

        // Held past its TTL thanks to the keep-alive task.
        tokio::time::sleep(ttl * 2).await;
        assert!(a.is_held());
        assert_eq!(ctl_keys(&e, "/locks/acme/example.com").len(), 1);

        // Fencing: a write guarded by still_held succeeds only while the lock is held.
        let guard = a.still_held();
        let w = c1
            .txn(
                vec![guard.clone()],
                vec![put_op(b"/acme/order", b"1")],
                vec![],
            )
            .await
            .unwrap();
        assert!(w.succeeded);

        // A waiter blocked in Lock gets it as soon as the holder releases.
        let waiter = tokio::spawn({
            let c2 = c2.clone();
            async move { c2.acquire(name, ttl, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "got the lock while it was held");
        let released = Instant::now();
        a.release().await.unwrap();
        let b = waiter.await.unwrap().unwrap();
        assert!(released.elapsed() < Duration::from_secs(2));
        assert_ne!(b.key(), guard.key.as_slice());

        let late = c1
            .txn(vec![guard], vec![put_op(b"/acme/order", b"2")], vec![])
            .await
            .unwrap();
        assert!(!late.succeeded, "the old holder's guard must fail");
        assert_eq!(ctl_get(&e, "/acme/order").as_deref(), Some("1"));
        b.release().await.unwrap();
        assert!(ctl_keys(&e, "/locks/").is_empty());
    });
}

#[test]
fn a_dead_holders_lock_frees_when_its_lease_runs_out() {
    let e = Etcd::start();
    let name = b"/locks/crashed";
    rt().block_on(async {
        let c = client(&e);
        // A holder that dies: its lease is never renewed.
        let lease = c.lease_grant(Duration::from_secs(2)).await.unwrap();
        let key = c
            .lock(name, lease.id, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(key.starts_with(name));
        let t0 = Instant::now();
        let next = c
            .acquire(name, Duration::from_secs(5), Duration::from_secs(15))
            .await
            .unwrap();
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(500),
            "did not wait: {waited:?}"
        );
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        assert_eq!(
            ctl_keys(&e, "/locks/crashed"),
            [String::from_utf8_lossy(next.key())]
        );
        // Dropping a guard without release revokes its lease in the background.
        drop(next);
        assert!(wait_until(Duration::from_secs(5), || ctl_keys(
            &e,
            "/locks/crashed"
        )
        .is_empty()));
    });
}

#[test]
fn concurrent_holders_never_overlap() {
    let e = Etcd::start();
    rt().block_on(async {
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (c, inside, most) = (client(&e), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..3 {
                    let g = c
                        .acquire(
                            b"/locks/one",
                            Duration::from_secs(5),
                            Duration::from_secs(20),
                        )
                        .await
                        .unwrap();
                    let n = inside.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(n, SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    inside.fetch_sub(1, SeqCst);
                    g.release().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(SeqCst), 1, "two holders at once");
    });
}

#[test]
fn an_unreachable_etcd_answers_errors_within_the_op_timeout() {
    rt().block_on(async {
        let c = Client::connect(&[format!("http://127.0.0.1:{}", dead_port())], OPTS).unwrap();
        let t0 = Instant::now();
        let r = c.range_prefix(b"/").await;
        assert!(r.is_err());
        assert!(c.put(b"k", b"v", 0).await.is_err());
        assert!(c.watch_prefix(b"/", 0).await.is_err());
        assert!(c
            .acquire(b"/l", Duration::from_secs(2), Duration::from_secs(1))
            .await
            .is_err());
        assert!(t0.elapsed() < OPTS.op_timeout * 4 + Duration::from_secs(1));
    });
}

#[test]
fn with_several_endpoints_calls_reach_a_live_member() {
    let e = Etcd::start();
    e.ctl(&["put", "/m/k", "v"]).unwrap();
    rt().block_on(async {
        let dead = format!("http://127.0.0.1:{}", dead_port());
        let c = Client::connect(&[dead, e.endpoint()], OPTS).unwrap();
        // The first member is down: that call fails (it is not retried behind the caller's
        // back), and the client moves on to the next member for good.
        assert_eq!(c.current_endpoint(), 0);
        let t0 = Instant::now();
        assert!(c.range_prefix(b"/m/").await.is_err());
        assert!(t0.elapsed() < OPTS.op_timeout + Duration::from_millis(500));
        assert_eq!(c.current_endpoint(), 1);
        for _ in 0..5 {
            let r = c.range_prefix(b"/m/").await.unwrap();
            assert_eq!(r.kvs.len(), 1);
        }
        let mut w = c.watch_prefix(b"/m/", 0).await.unwrap();
        e.ctl(&["put", "/m/k", "w"]).unwrap();
        assert_eq!(
            events(&next(&mut w).await),
            [(EventType::Put, "/m/k".into(), "w".into())]
        );
        assert_eq!(c.current_endpoint(), 1, "a live member is kept");
    });
}
