# A raw HTTP/2 client for the tests (the Python `h2` package, an implementation independent
# of the Rust `h2` crate switchyard uses), plus hand-made frames for the flood tests. One JSON
# command in argv[1], one JSON result on stdout. Every socket has a timeout.
import json, socket, ssl, struct, sys, time

try:
    import h2.config, h2.connection, h2.events, h2.settings, h2.errors
except ImportError:
    print(json.dumps({"error": "the python h2 package is missing: run scripts/test.sh (SWITCHYARD_PYTHON)"}))
    sys.exit(3)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def fnv(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def connect(c):
    s = socket.create_connection(("127.0.0.1", c["port"]), timeout=c.get("timeout", 10))
    if c.get("tls"):
        x = ssl.create_default_context()
        x.check_hostname = False
        x.verify_mode = ssl.CERT_NONE
        x.set_alpn_protocols(["h2"])
        s = x.wrap_socket(s, server_hostname="localhost")
    return s


def frame(kind, flags, stream, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, kind, flags, stream) + payload


def read_frames(s, until):
    """Frames (type, flags, stream, payload) until EOF or the timeout (`until` is unused:
    the close after a GOAWAY is part of what the tests check)."""
    buf, out = b"", []
    try:
        while True:
            d = s.recv(65536)
            if not d:
                out.append(("eof",))
                return out
            buf += d
            while len(buf) >= 9:
                n = (buf[0] << 16) | (buf[1] << 8) | buf[2]
                if len(buf) < 9 + n:
                    break
                f = (buf[3], buf[4], struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF, buf[9:9 + n])
                buf = buf[9 + n:]
                out.append(f)
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        out.append(("eof",))
        return out


def goaway_of(frames):
    for f in frames:
        if f[0] == 7:
            return struct.unpack(">I", f[3][4:8])[0]
    return None


def requests(c):
    """Several requests on one connection, concurrently; bodies sent as the window allows."""
    s = connect(c)
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=cfg)
    conn.initiate_connection()
    if c.get("window"):
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: c["window"]})
    s.sendall(conn.data_to_send())
    reqs = c["requests"]
    state = {}
    for r in reqs:
        sid = conn.get_next_available_stream_id()
        body = bytes((i * 31 + 7) % 251 for i in range(r.get("body_len", 0)))
        hdrs = [(":method", r.get("method", "GET")), (":path", r["path"]),
                (":scheme", "https" if c.get("tls") else "http"),
                (":authority", r.get("authority", "localhost"))] + [tuple(h) for h in r.get("headers", [])]
        conn.send_headers(sid, hdrs, end_stream=not body and not r.get("open"))
        state[sid] = {"req": r, "body": body, "sent": 0, "resp": b"", "headers": None,
                      "trailers": None, "done": False, "reset": None}
    s.sendall(conn.data_to_send())
    slow = c.get("slow_reader", 0)
    deadline = time.time() + c.get("timeout", 10)
    while not all(v["done"] for v in state.values()) and time.time() < deadline:
        for sid, v in state.items():
            while v["sent"] < len(v["body"]) and not v["done"]:
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0:
                    break
                chunk = v["body"][v["sent"]:v["sent"] + room]
                v["sent"] += len(chunk)
                conn.send_data(sid, chunk, end_stream=v["sent"] == len(v["body"]))
        s.sendall(conn.data_to_send())
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        for ev in conn.receive_data(d):
            if isinstance(ev, h2.events.ResponseReceived):
                state[ev.stream_id]["headers"] = dict(ev.headers)
                state[ev.stream_id]["header_list"] = ev.headers
            elif isinstance(ev, h2.events.TrailersReceived):
                state[ev.stream_id]["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                state[ev.stream_id]["resp"] += ev.data
                if slow:
                    time.sleep(slow)
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                state[ev.stream_id]["done"] = True
            elif isinstance(ev, h2.events.StreamReset):
                state[ev.stream_id]["done"] = True
                state[ev.stream_id]["reset"] = int(ev.error_code)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                for v in state.values():
                    v["done"] = True
        s.sendall(conn.data_to_send())
    out = []
    for sid, v in state.items():
        h = v["headers"] or {}
        body = v["resp"]
        out.append({"status": int(h.get(":status", 0)), "headers": h, "trailers": v["trailers"],
                    "len": len(body), "fnv": str(fnv(body)), "reset": v["reset"],
                    "done": v["done"], "sent_fnv": str(fnv(v["body"])),
                    "text": body[:4000].decode("utf-8", "replace")})
    s.close()
    return {"responses": out}


def rapid_reset(c):
    """Opens and at once resets `n` streams, in batches; reports the GOAWAY it gets."""
    s = connect(c)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    sent = 0
    try:
        for i in range(c["n"]):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "GET"), (":path", c.get("path", "/")),
                                    (":scheme", "http"), (":authority", "localhost")])
            conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
            sent += 1
            if i % 50 == 49:
                s.sendall(conn.data_to_send())
        s.sendall(conn.data_to_send())
    except (BrokenPipeError, ConnectionResetError, h2.exceptions.ProtocolError):
        pass
    frames = read_frames(s, lambda f: f[0] == 7)
    return {"sent": sent, "goaway": goaway_of(frames), "eof": any(f[0] == "eof" for f in frames)}


def raw_flood(c):
    """Preface, SETTINGS, then a flood of hand-made frames; reports the GOAWAY it gets."""
    s = connect(c)
    s.sendall(PREFACE + frame(4, 0, 0))
    kind = c["kind"]
    if kind == "continuation":
        # `:method GET` indexed (0x82), then a header block that never ends.
        flood = frame(1, 0, 1, b"\x82\x84\x86") + frame(9, 0, 1) * c["n"]
    elif kind == "ping":
        flood = frame(6, 0, 0, b"\x00" * 8) * c["n"]
    elif kind == "settings":
        flood = frame(4, 0, 0) * c["n"]
    else:
        raise ValueError(kind)
    try:
        for i in range(0, len(flood), 9 * 1000):
            s.sendall(flood[i:i + 9 * 1000])
    except (BrokenPipeError, ConnectionResetError):
        pass
    frames = read_frames(s, lambda f: f[0] == 7)
    return {"goaway": goaway_of(frames), "eof": any(f[0] == "eof" for f in frames)}


def idle(c):
    """One GET at each time of `at` (seconds from the start, each answered before the next),
    then nothing: reports the statuses and when the GOAWAY and the close came."""
    s = connect(c)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    start = time.time()
    statuses, goaway, eof = [], None, None

    def pump(until_done=None):
        nonlocal goaway, eof
        try:
            d = s.recv(65536)
        except socket.timeout:
            d = b""
        if not d:
            eof = time.time() - start
            return
        if goaway is not None:
            # The state machine is closed; what follows the GOAWAY (a PING) is not its business.
            return until_done
        try:
            events = conn.receive_data(d)
        except h2.exceptions.ProtocolError:
            # A frame after the GOAWAY in the same read (a PING): the connection is closed.
            if conn.state_machine.state != h2.connection.ConnectionState.CLOSED:
                raise
            goaway = time.time() - start
            return until_done
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived):
                statuses.append(int(dict(ev.headers)[b":status"]))
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == until_done:
                until_done = None
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.ConnectionTerminated) and goaway is None:
                goaway = time.time() - start
        s.sendall(conn.data_to_send())
        return until_done

    for at in c["at"]:
        time.sleep(max(0, start + at - time.time()))
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                (":authority", "localhost")], end_stream=True)
        s.sendall(conn.data_to_send())
        while sid is not None and eof is None:
            sid = pump(sid)
    while eof is None:
        pump()
    s.close()
    return {"statuses": statuses, "goaway": goaway, "eof": eof}


cmd = json.loads(sys.argv[1])
op = {"requests": requests, "rapid_reset": rapid_reset, "raw_flood": raw_flood,
      "idle": idle}[cmd["op"]]
print(json.dumps(op(cmd)))
