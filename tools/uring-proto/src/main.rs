//! The same minimal L4 proxy twice, for issue 17's runtime question: `tokio` (epoll readiness,
//! a task per connection, `copy_bidirectional`; what switchyard's `[[tcp]]` copy loop is built
//! on) and `uring` (one io_uring per thread: accept, socket, connect, recv, send, shutdown and
//! close all submitted as completions, many per `io_uring_enter`). Both run on one thread,
//! accept on `listen`, connect to `backend`, copy both ways with half-closes passed on, and
//! close when both directions ended.
//!
//! Usage: uring-proto tokio|uring LISTEN BACKEND     (e.g. 127.0.0.1:19320 127.0.0.1:19301)
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: uring-proto tokio|uring LISTEN BACKEND";
    let (mode, listen, backend) = match &args[..] {
        [m, l, b] => (
            m.as_str(),
            l.parse::<SocketAddr>().expect(usage),
            b.parse::<SocketAddr>().expect(usage),
        ),
        _ => panic!("{usage}"),
    };
    // An io_uring instance of a process that just exited is torn down by the kernel after it,
    // with its listening socket: a restart on the same port waits for that.
    let mut tries = 0;
    let l = loop {
        match std::net::TcpListener::bind(listen) {
            Ok(l) => break l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("bind {listen}: {e}"),
        }
    };
    // Accepted sockets inherit TCP_NODELAY from the listener, as in switchyard.
    set_nodelay(l.as_raw_fd());
    match mode {
        "tokio" => tokio_main(l, backend),
        "uring" => uring::run(l.into_raw_fd(), backend).expect("io_uring loop"),
        _ => panic!("{usage}"),
    }
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn tokio_main(l: std::net::TcpListener, backend: SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        l.set_nonblocking(true).expect("nonblocking");
        let l = tokio::net::TcpListener::from_std(l).expect("listener");
        loop {
            let Ok((mut client, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
}

mod uring {
    //! A completion loop: every operation carries (connection slot, kind) in its user data;
    //! each completion submits the connection's next operation, and one `submit_and_wait`
    //! hands all of them to the kernel at once.
    use io_uring::{opcode, squeue, types, IoUring};
    use std::net::SocketAddr;
    use std::os::fd::RawFd;

    const BUF: usize = 16 * 1024;
    const ACCEPT: u64 = u64::MAX;
    // Kinds, in the low 4 bits of the user data.
    const SOCKET: u64 = 1;
    const CONNECT: u64 = 2;
    const RECV: u64 = 3; // + direction (3, 4)
    const SEND: u64 = 5; // + direction (5, 6)
    const SHUT: u64 = 7;
    const CLOSE: u64 = 8;

    /// One proxied connection: side 0 the client, side 1 the backend; `buf[d]` holds what was
    /// read from side d and is being sent to the other.
    struct Conn {
        fd: [RawFd; 2],
        buf: [Box<[u8]>; 2],
        sent: [usize; 2],
        len: [usize; 2],
        eof: [bool; 2],
        in_flight: u32,
        closing: bool,
        closes_left: u32,
    }

    struct Loop {
        ring: IoUring,
        conns: Vec<Option<Conn>>,
        free: Vec<usize>,
        backend: libc::sockaddr_in,
    }

    pub fn run(listener: RawFd, backend: SocketAddr) -> std::io::Result<()> {
        let SocketAddr::V4(b) = backend else {
            return Err(std::io::Error::other("IPv4 backends only"));
        };
        let backend = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: b.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(b.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let mut lp = Loop {
            ring: IoUring::new(4096)?,
            conns: Vec::new(),
            free: Vec::new(),
            backend,
        };
        let accept = opcode::AcceptMulti::new(types::Fd(listener))
            .build()
            .user_data(ACCEPT);
        lp.push(accept);
        let mut done = Vec::with_capacity(1024);
        loop {
            match lp.ring.submit_and_wait(1) {
                Ok(_) => {}
                // A signal, or a tracer attaching (strace): nothing was lost, wait again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            done.clear();
            done.extend(
                lp.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(ud, res, flags) in &done {
                if ud == ACCEPT {
                    if res >= 0 {
                        lp.accepted(res);
                    }
                    if !io_uring::cqueue::more(flags) {
                        let a = opcode::AcceptMulti::new(types::Fd(listener))
                            .build()
                            .user_data(ACCEPT);
                        lp.push(a);
                    }
                    continue;
                }
                lp.completed((ud >> 4) as usize, ud & 15, res);
            }
        }
    }

    impl Loop {
        fn push(&mut self, e: squeue::Entry) {
            // SAFETY: every buffer and address an entry points at lives in a `Conn` (boxed,
            // so moves of the vector do not move it) or in `self`, and a `Conn` is only
            // freed once none of its operations is in flight.
            while unsafe { self.ring.submission().push(&e) }.is_err() {
                let _ = self.ring.submit();
            }
        }

        fn op(&mut self, slot: usize, kind: u64, e: squeue::Entry) {
            if let Some(c) = self.conns[slot].as_mut() {
                c.in_flight += 1;
            }
            self.push(e.user_data(((slot as u64) << 4) | kind));
        }

        fn accepted(&mut self, fd: RawFd) {
            let conn = Conn {
                fd: [fd, -1],
                buf: [vec![0; BUF].into(), vec![0; BUF].into()],
                sent: [0; 2],
                len: [0; 2],
                eof: [false; 2],
                in_flight: 0,
                closing: false,
                closes_left: 0,
            };
            let slot = match self.free.pop() {
                Some(s) => {
                    self.conns[s] = Some(conn);
                    s
                }
                None => {
                    self.conns.push(Some(conn));
                    self.conns.len() - 1
                }
            };
            let e = opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
                .build();
            self.op(slot, SOCKET, e);
        }

        fn recv(&mut self, slot: usize, d: usize) {
            let Some(c) = self.conns[slot].as_mut() else {
                return;
            };
            let e =
                opcode::Recv::new(types::Fd(c.fd[d]), c.buf[d].as_mut_ptr(), BUF as u32).build();
            self.op(slot, RECV + d as u64, e);
        }

        fn send(&mut self, slot: usize, d: usize) {
            let Some(c) = self.conns[slot].as_mut() else {
                return;
            };
            let (from, to) = (c.sent[d], c.len[d]);
            let ptr = c.buf[d][from..].as_ptr();
            let e = opcode::Send::new(types::Fd(c.fd[1 - d]), ptr, (to - from) as u32).build();
            self.op(slot, SEND + d as u64, e);
        }

        /// Both sockets shut down (pending receives end), then closed once nothing is in flight.
        fn fail(&mut self, slot: usize) {
            let Some(c) = self.conns[slot].as_mut() else {
                return;
            };
            if c.closing {
                return;
            }
            c.closing = true;
            let fds = c.fd;
            for fd in fds {
                if fd >= 0 {
                    let e = opcode::Shutdown::new(types::Fd(fd), libc::SHUT_RDWR).build();
                    self.op(slot, SHUT, e);
                }
            }
            self.maybe_close(slot);
        }

        fn maybe_close(&mut self, slot: usize) {
            let Some(c) = self.conns[slot].as_mut() else {
                return;
            };
            let ended = c.closing || (c.eof[0] && c.eof[1]);
            if !ended || c.in_flight > 0 || c.closes_left > 0 {
                return;
            }
            c.closing = true;
            let fds = c.fd;
            for fd in fds {
                if fd >= 0 {
                    c.closes_left += 1;
                }
            }
            if c.closes_left == 0 {
                self.release(slot);
                return;
            }
            for fd in fds {
                if fd >= 0 {
                    let e = opcode::Close::new(types::Fd(fd)).build();
                    self.push(e.user_data(((slot as u64) << 4) | CLOSE));
                }
            }
        }

        fn release(&mut self, slot: usize) {
            self.conns[slot] = None;
            self.free.push(slot);
        }

        fn completed(&mut self, slot: usize, kind: u64, res: i32) {
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            if kind == CLOSE {
                c.closes_left -= 1;
                if c.closes_left == 0 {
                    self.release(slot);
                }
                return;
            }
            c.in_flight -= 1;
            if c.closing {
                return self.maybe_close(slot);
            }
            match kind {
                SOCKET if res >= 0 => {
                    c.fd[1] = res;
                    super::set_nodelay(res);
                    let addr = &self.backend as *const libc::sockaddr_in as *const libc::sockaddr;
                    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                    let e = opcode::Connect::new(types::Fd(res), addr, len).build();
                    self.op(slot, CONNECT, e);
                }
                CONNECT if res == 0 => {
                    self.recv(slot, 0);
                    self.recv(slot, 1);
                }
                k if (k == RECV || k == RECV + 1) && res > 0 => {
                    let d = (k - RECV) as usize;
                    c.sent[d] = 0;
                    c.len[d] = res as usize;
                    self.send(slot, d);
                }
                k if (k == RECV || k == RECV + 1) && res == 0 => {
                    // EOF from side d: passed on as a FIN to the other side.
                    let d = (k - RECV) as usize;
                    c.eof[d] = true;
                    let e = opcode::Shutdown::new(types::Fd(c.fd[1 - d]), libc::SHUT_WR).build();
                    self.op(slot, SHUT, e);
                }
                k if (k == SEND || k == SEND + 1) && res > 0 => {
                    let d = (k - SEND) as usize;
                    c.sent[d] += res as usize;
                    if c.sent[d] < c.len[d] {
                        self.send(slot, d);
                    } else {
                        self.recv(slot, d);
                    }
                }
                // A shutdown's result does not matter (the peer may be gone already).
                SHUT => self.maybe_close(slot),
                _ => self.fail(slot),
            }
        }
    }
}
