//! Connection limits from outside: beyond `max_connections`, a new connection waits in the
//! accept queue (it is not refused) and is served as soon as another one closes.
mod support;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::*;

#[test]
fn connections_beyond_the_limit_wait_then_get_served() {
    let b = Backend::start("one");
    let cfg = format!(
        "{}[[targets]]\naddress = \"{}\"\n",
        listen_section("max_connections = 2\nrequest_header_timeout = 30\nidle_timeout = 30"),
        b.address()
    );
    let sy = Switchyard::start(&cfg);
    let hold1 = TcpStream::connect(sy.http).unwrap();
    let hold2 = TcpStream::connect(sy.http).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(sy.http).expect("queued, not refused");
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    third
        .write_all(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        third.read(&mut buf).is_err(),
        "served while two connections hold the limit"
    );
    drop(hold1);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let _ = third.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(hold2);
}
