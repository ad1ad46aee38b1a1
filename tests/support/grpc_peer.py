"""A real grpcio server and client for tests/grpc.rs, with raw-bytes (de)serializers (generic
handlers: no generated stubs, no protoc).

  grpc_peer.py server [cert key]  -- serves test.Echo and grpc.health.v1.Health on 127.0.0.1:0
                                     (TLS with cert/key when given); prints {"port": N}, then
                                     answers JSON commands on stdin: {"op": "events"},
                                     {"op": "serving", "value": bool}
  grpc_peer.py client JSON        -- runs one call (see `call`), prints its outcome as JSON
"""
import json
import sys
import threading
import time
from concurrent import futures

try:
    import grpc
except ImportError:
    print(json.dumps({"error": "the grpcio package is missing: run scripts/test.sh"}), flush=True)
    sys.exit(0)

EVENTS = []
LOCK = threading.Lock()
SERVING = [True]


def event(e):
    with LOCK:
        EVENTS.append(e)


def metadata(ctx):
    return {k: (v if isinstance(v, str) else v.hex()) for k, v in ctx.invocation_metadata()}


def unary(req, ctx):
    event({"m": "unary", "md": metadata(ctx), "len": len(req)})
    ctx.set_trailing_metadata((("x-trailer", "t-%d" % len(req)),))
    if req.startswith(b"big:"):
        return b"B" * int(req[4:])
    return b"echo:" + req


def server_stream(req, ctx):
    n, size = (int(x) for x in req.decode().split(":"))
    for i in range(n):
        yield (b"%06d" % i) + b"x" * max(0, size - 6)
    ctx.set_trailing_metadata((("x-count", str(n)),))


def bidi(it, ctx):
    n = 0
    for m in it:
        n += 1
        yield b"re:" + m
    event({"m": "bidi", "n": n})


def slow(req, ctx):
    event({"m": "slow", "time_remaining": ctx.time_remaining(), "tag": req.decode()})
    t0 = time.time()
    while ctx.is_active() and time.time() - t0 < 10:
        time.sleep(0.02)
    event({"m": "slow_end", "tag": req.decode(), "active": ctx.is_active(),
           "elapsed": time.time() - t0})
    return b"late"


def health(req, ctx):
    event({"m": "health", "req": req.hex()})
    return b"\x08\x01" if SERVING[0] else b"\x08\x02"


HANDLERS = {
    "/test.Echo/Unary": grpc.unary_unary_rpc_method_handler(unary),
    "/test.Echo/ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    "/test.Echo/Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    "/test.Echo/Slow": grpc.unary_unary_rpc_method_handler(slow),
    "/grpc.health.v1.Health/Check": grpc.unary_unary_rpc_method_handler(health),
}


class Generic(grpc.GenericRpcHandler):
    def service(self, details):
        return HANDLERS.get(details.method)


def serve(args):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), handlers=[Generic()])
    if len(args) >= 2:
        creds = grpc.ssl_server_credentials([(open(args[1], "rb").read(), open(args[0], "rb").read())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"port": port}), flush=True)
    for line in sys.stdin:
        c = json.loads(line)
        if c["op"] == "events":
            with LOCK:
                out = {"events": list(EVENTS)}
        elif c["op"] == "serving":
            SERVING[0] = bool(c["value"])
            out = {"ok": True}
        else:
            out = {"error": "unknown op"}
        print(json.dumps(out), flush=True)
    server.stop(0)


def outcome(e):
    return {"code": e.code().name, "details": e.details(),
            "trailing": {k: v for k, v in (e.trailing_metadata() or ())
                         if isinstance(v, str)}}


def call(c):
    if c.get("ca"):
        creds = grpc.ssl_channel_credentials(open(c["ca"], "rb").read())
        ch = grpc.secure_channel(c["target"], creds,
                                 options=[("grpc.ssl_target_name_override", c["name"])])
    else:
        ch = grpc.insecure_channel(c["target"])
    md = [tuple(x) for x in c.get("metadata", [])]
    timeout = c.get("timeout")
    kind = c["kind"]
    method = c["method"]
    try:
        if kind == "unary":
            f = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
            resp, call_ = f.with_call(c["data"].encode(), metadata=md, timeout=timeout)
            return {"code": "OK", "len": len(resp), "head": resp[:64].decode("latin1"),
                    "trailing": {k: v for k, v in call_.trailing_metadata()}}
        if kind == "server_stream":
            f = ch.unary_stream(method, request_serializer=None, response_deserializer=None)
            it = f(c["data"].encode(), metadata=md, timeout=timeout)
            msgs = [m for m in it]
            ok = all(m[:6] == b"%06d" % i for i, m in enumerate(msgs))
            return {"code": "OK", "n": len(msgs), "bytes": sum(len(m) for m in msgs),
                    "in_order": ok, "trailing": {k: v for k, v in it.trailing_metadata()}}
        if kind == "bidi":
            f = ch.stream_stream(method, request_serializer=None, response_deserializer=None)
            n, size = c["n"], c.get("size", 8)
            sent = []
            got = []
            cond = threading.Condition()

            def gen():
                # Lock step: each message waits for the answer to the one before, so
                # the exchange is truly interleaved (a buffering proxy would hang here).
                for i in range(n):
                    m = (b"%06d" % i) + b"y" * max(0, size - 6)
                    sent.append(m)
                    yield m
                    with cond:
                        if not cond.wait_for(lambda: len(got) > i, timeout=10):
                            return

            it = f(gen(), metadata=md, timeout=timeout)
            for m in it:
                with cond:
                    got.append(m)
                    cond.notify_all()
            ok = len(got) == n and all(g == b"re:" + s for g, s in zip(got, sent))
            return {"code": "OK", "n": len(got), "echoed": ok}
        if kind == "cancel":
            f = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
            fut = f.future(c["data"].encode(), metadata=md)
            time.sleep(c.get("after", 0.5))
            fut.cancel()
            return {"code": "CANCELLED" if fut.cancelled() else "NOT_CANCELLED"}
        return {"error": "unknown kind"}
    except grpc.RpcError as e:
        return outcome(e)
    finally:
        ch.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2:])
    else:
        try:
            print(json.dumps(call(json.loads(sys.argv[2]))), flush=True)
        except Exception as e:  # a failure of the test client itself
            print(json.dumps({"error": type(e).__name__ + ": " + str(e)}), flush=True)
