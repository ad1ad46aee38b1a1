//! Black-box routing tests (SPEC §3): which backend the real binary sends each request to,
//! seen from the hyper backends that received it.
mod support;
use std::collections::HashMap;
use support::*;

/// Two catch-all targets, a third target that is also a path route's address, pattern routes
/// with and without methods.
struct Fleet {
    a: Backend,
    b: Backend,
    files: Backend,
    comments: Backend,
    replies: Backend,
    sy: Switchyard,
}

fn fleet() -> Fleet {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let files = Backend::start("files");
    let comments = Backend::start("comments");
    let replies = Backend::start("replies");
    let cfg = format!(
        r#"{listen}{targets}
[[path_routes]]
path = "/files"
address = "{files}"

[[backends]]
name = "comments"
addresses = ["{comments}"]

[[backends]]
name = "replies"
addresses = ["{replies}"]

[[routes]]
path = "/api/comments/*"
methods = ["GET", "PUT"]
backend = "comments"

[[routes]]
path = "/api/comments/*/reply"
methods = ["POST"]
backend = "replies"

[[routes]]
path = "/api/comments/*/reply"
backend = "comments"

[[routes]]
path = "/only-get"
methods = ["GET"]
backend = "comments"
"#,
        listen = listen_section(""),
        targets = targets_toml(&[a.address(), b.address(), files.address()]),
        files = files.address(),
        comments = comments.address(),
        replies = replies.address(),
    );
    let sy = Switchyard::start(&cfg);
    Fleet {
        a,
        b,
        files,
        comments,
        replies,
        sy,
    }
}

/// Sends a request and returns (status, name of the backend that answered, target it saw).
fn send(sy: &Switchyard, method: &str, path: &str) -> (u16, String, String) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let r = client().request(m, sy.url(path)).send().expect("request");
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().unwrap_or(serde_json::Value::Null);
    (
        status,
        v["backend"].as_str().unwrap_or("-").to_string(),
        v["target"].as_str().unwrap_or("-").to_string(),
    )
}

#[test]
fn path_route_takes_its_prefix_on_segment_boundaries_only() {
    let f = fleet();
    assert_eq!(send(&f.sy, "GET", "/files").1, "files");
    assert_eq!(send(&f.sy, "GET", "/files/").1, "files");
    assert_eq!(send(&f.sy, "GET", "/files/a/b.txt").1, "files");
    let before = f.files.hits();
    for _ in 0..4 {
        let (status, who, _) = send(&f.sy, "GET", "/filesystem");
        assert_eq!(status, 200);
        assert!(who == "a" || who == "b", "/filesystem went to {who}");
    }
    assert_eq!(
        f.files.hits(),
        before,
        "/filesystem must not reach /files' backend"
    );
}

#[test]
fn catch_all_round_robins_and_leaves_out_path_routed_addresses() {
    let f = fleet();
    let mut count: HashMap<String, usize> = HashMap::new();
    for i in 0..20 {
        let (status, who, _) = send(&f.sy, "GET", &format!("/x/{i}"));
        assert_eq!(status, 200);
        *count.entry(who).or_default() += 1;
    }
    // One sequential client: round robin alternates exactly.
    assert_eq!(count.get("a"), Some(&10), "{count:?}");
    assert_eq!(count.get("b"), Some(&10), "{count:?}");
    assert_eq!(
        f.files.hits(),
        0,
        "a path-routed address took catch-all traffic"
    );
    assert_eq!(f.a.hits() + f.b.hits(), 20);
}

#[test]
fn most_specific_pattern_wins_and_methods_count() {
    let f = fleet();
    // `*` in the middle is one segment; the POST-only route beats the any-method one.
    assert_eq!(
        send(&f.sy, "POST", "/api/comments/abc123/reply").1,
        "replies"
    );
    // Same path, other method: the any-method route of equal specificity.
    assert_eq!(
        send(&f.sy, "GET", "/api/comments/abc123/reply").1,
        "comments"
    );
    // Trailing `/*` takes one or more segments.
    assert_eq!(send(&f.sy, "GET", "/api/comments/test-post").1, "comments");
    assert_eq!(send(&f.sy, "PUT", "/api/comments/a/b/c").1, "comments");
    // `*` in the middle never spans two segments: a/b/reply is the trailing route's.
    assert_eq!(send(&f.sy, "POST", "/api/comments/a/b/reply").0, 404);
    // `/api/comments` itself matches no pattern: it falls to the catch-all.
    let (_, who, _) = send(&f.sy, "GET", "/api/comments");
    assert!(who == "a" || who == "b", "{who}");
    assert_eq!(f.replies.hits(), 1);
}

#[test]
fn query_is_ignored_for_matching_and_forwarded_unchanged() {
    let f = fleet();
    let (status, who, target) = send(&f.sy, "GET", "/api/comments/p1?sort=new&x=%2F");
    assert_eq!(status, 200);
    assert_eq!(who, "comments");
    assert_eq!(target, "/api/comments/p1?sort=new&x=%2F");
    let (_, who, target) = send(&f.sy, "GET", "/files?name=/api/comments/x");
    assert_eq!(who, "files");
    assert_eq!(target, "/files?name=/api/comments/x");
}

#[test]
fn path_matching_only_routes_for_other_methods_is_404() {
    let f = fleet();
    let r = client().post(f.sy.url("/only-get")).send().unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["error"], "no_route");
    let r = client()
        .delete(f.sy.url("/api/comments/abc"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404, "no fall-through to the catch-all");
    assert_eq!(send(&f.sy, "GET", "/only-get").1, "comments");
    assert_eq!(
        f.a.hits() + f.b.hits() + f.files.hits() + f.replies.hits(),
        0
    );
    assert_eq!(f.comments.hits(), 1);
}

#[test]
fn keep_alive_requests_are_routed_each_on_their_own() {
    let f = fleet();
    let mut c = RawConn::connect(f.sy.http);
    c.send(b"GET /files/one HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r1 = c.read_response(false).expect("first response");
    assert_eq!(r1.status, 200);
    assert_eq!(r1.json()["backend"], "files");
    c.send(b"GET /api/comments/two HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r2 = c
        .read_response(false)
        .expect("second response on the same connection");
    assert_eq!(r2.status, 200);
    assert_eq!(r2.json()["backend"], "comments");
    // Pipelined: both heads in one write, answered in order, each routed on its own.
    c.send(b"GET /api/comments/three HTTP/1.1\r\nHost: t\r\n\r\nGET /files/four HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r3 = c.read_response(false).expect("third");
    let r4 = c.read_response(false).expect("fourth");
    assert_eq!(r3.json()["target"], "/api/comments/three");
    assert_eq!(r3.json()["backend"], "comments");
    assert_eq!(r4.json()["target"], "/files/four");
    assert_eq!(r4.json()["backend"], "files");
    assert_eq!(f.files.hits(), 2);
    assert_eq!(f.comments.hits(), 2);
}
