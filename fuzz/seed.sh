#!/usr/bin/env bash
# Writes a few valid seed inputs into fuzz/corpus/<target>/ (the corpus itself is not committed).
# Each file carries the target's leading control bytes (see the comment in each target).
set -eu
cd "$(dirname "$0")"
mkdir -p corpus/request_head corpus/chunked corpus/response_head corpus/config
s() { printf '%b' "$2" > "$1"; }
# request_head: 2 bytes split point, 1 byte flags (low 4 bits 0xf = 1024-byte limit; bits 4-5:
# underscore policy 0 drop, 1 reject, 2 allow; bit 6 key name; bit 7 shard), then the head.
s corpus/request_head/get '\x10\x00\x3fGET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: v\r\n\r\n'
s corpus/request_head/post_cl '\x05\x00\x3fPOST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello'
s corpus/request_head/post_chunked '\x20\x00\x7fPOST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n'
s corpus/request_head/http10 '\x03\x00\x3fGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'
s corpus/request_head/absolute '\x40\x00\xbfGET http://h:1/p?q HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nX-API-Key: k\r\n\r\n'
s corpus/request_head/upgrade '\x30\x00\x3fGET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nX-Request-Id: abc\r\n\r\n'
s corpus/request_head/connect '\x08\x00\x3fCONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n'
s corpus/request_head/options '\x08\x00\x3fOPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n'
s corpus/request_head/canonical '\x08\x00\x0fGET /%61dmin//x/%c3%a9/%7e?a=%2f HTTP/1.1\r\nHost: h\r\n\r\n'
s corpus/request_head/encoded_dots '\x08\x00\x0fGET /a/%2e%2E/b HTTP/1.1\r\nHost: h\r\n\r\n'
s corpus/request_head/underscore_allow '\x08\x00\x2fGET /p HTTP/1.1\r\nHost: h\r\nX_Api_Key_Name: ops\r\nX_Other: o\r\nx-forwarded-for: 1.2.3.4\r\n\r\n'
s corpus/request_head/underscore_reject '\x08\x00\x1fGET /p HTTP/1.1\r\nHost: h\r\nX_Other: o\r\n\r\n'
s corpus/request_head/via '\x08\x00\x0fGET /p HTTP/1.1\r\nHost: h\r\nVia: 1.0 a, 1.1 switchyard-fuzz\r\n\r\n'
s corpus/request_head/absolute_host '\x08\x00\x0fGET http://evil.example/p HTTP/1.1\r\nHost: good.example\r\n\r\n'
# chunked: two 2-byte split points, then the body.
s corpus/chunked/simple '\x03\x00\x09\x005\r\nhello\r\n6;x="y"\r\n world\r\n0\r\nT: v\r\n\r\nNEXT'
s corpus/chunked/hex '\x01\x00\x10\x00a\r\n0123456789\r\n1;e\r\nZ\r\n0\r\n\r\n'
s corpus/chunked/empty '\x00\x00\x02\x000\r\n\r\n'
# response_head: 1 byte flags (bit 1: client is HTTP/1.1), then the head.
s corpus/response_head/ok '\x02HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc'
s corpus/response_head/chunked '\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 5\r\n\r\n'
s corpus/response_head/until_close '\x02HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\n'
s corpus/response_head/switching '\x0aHTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'
s corpus/response_head/continue '\x02HTTP/1.1 100 Continue\r\n\r\n'
s corpus/response_head/head '\x03HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n'
# config: the repository's example config.
cp ../config.toml corpus/config/example.toml
s corpus/config/small '[server]\nlisten = "127.0.0.1:1"\nupstream_timeout = "${T:-2.5}"\ngateway_header = "g w"\n\n[[backends]]\nname = "b"\naddresses = ["[::1]:7", "h:8"]\n\n[[routes]]\npath = "/a/*"\nmethods = ["get"]\nbackend = "b"\npermission = "p"\n'
s corpus/config/bad '[server]\nmax_header_bytes = 12\nworkers = -1\n[[routes]]\npath = "x"\nbackend = "nope"\n[[targets]]\naddress = "${NOPE}"\n'
