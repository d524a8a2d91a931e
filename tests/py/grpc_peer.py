#!/usr/bin/env python3
"""gRPC (PyPI `grpcio`) echo peers for ringway's integration tests; raw bytes, no protoc.

  grpc_peer.py server [max_seconds]
      Listens on 127.0.0.1:0 (cleartext HTTP/2), prints "PORT <n>" on stdout, and serves
      ringway.test.Echo with the same methods and x-* metadata as the Rust peer
      (bench/src/grpc_echo.rs). Exits on stdin EOF, SIGTERM, or after max_seconds (600).

  grpc_peer.py client <host:port> <case>
      Runs one check against an Echo server and prints "OK <details>" (exit 0) or
      "FAIL <why>" (exit 1). Cases: unary server_stream client_stream bidi metadata deadline
      status large concurrent.
"""
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "ringway.test.Echo"
MAX_MESSAGE = 16 << 20
# No HTTP proxy from the environment: the peers talk to 127.0.0.1 only.
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.enable_http_proxy", 0),
]
MAX_DELAY_MS = 60_000
MAX_COUNT = 100_000
MAX_STREAM_MESSAGES = 1_000_000
WAIT = 10.0  # seconds: the bound on every client wait
SLEEP_STEP = 0.01  # seconds: how often a delayed handler looks for cancellation


def pattern(n):
    """The x-size reply: 0, 1, ..., 250, 0, 1, ... (as the Rust peer)."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


# --- server -------------------------------------------------------------------------------

class Options:
    """The x-* request metadata of one call."""

    def __init__(self, context):
        md = {}
        self.echo = []
        for key, value in context.invocation_metadata():
            md[key] = value
            if key.startswith("x-echo-"):
                self.echo.append((key, value))

        def number(key, limit):
            if key not in md:
                return None
            try:
                n = int(md[key])
            except ValueError:
                n = -1
            if not 0 <= n <= limit:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{key}: {md[key]!r} is not a number up to {limit}")
            return n

        self.delay = number("x-delay-ms", MAX_DELAY_MS)
        self.status = number("x-status", 16)
        self.message = md.get("x-message", "")
        self.count = number("x-count", MAX_COUNT)
        self.interval = number("x-interval-ms", MAX_DELAY_MS)
        self.reply_count = md.get("x-reply") == "count"
        self.size = number("x-size", MAX_MESSAGE)

    def wait(self, context, ms):
        """Sleeps `ms` unless the call ends first; False if it did."""
        end = time.monotonic() + (ms or 0) / 1000
        while time.monotonic() < end:
            if not context.is_active():
                return False
            time.sleep(min(SLEEP_STEP, max(0.0, end - time.monotonic())))
        return context.is_active()

    def reply(self, msg):
        return pattern(self.size) if self.size is not None else msg

    def headers(self, context):
        """x-echo-* as initial metadata (never for a trailers-only reply)."""
        if self.echo:
            context.send_initial_metadata(self.echo)

    def trailers(self, context):
        if self.echo:
            context.set_trailing_metadata(self.echo)

    def answer(self, context, msg):
        """A unary-reply method's end: the delay, the asked-for status, metadata, the reply."""
        if not self.wait(context, self.delay):
            return b""
        if self.status is not None:
            self.abort(context)
        self.headers(context)
        self.trailers(context)
        return self.reply(msg)

    def abort(self, context):
        """Ends the call with x-status/x-message; trailers-only if nothing was sent yet, with
        x-echo-* in that one header block."""
        self.trailers(context)
        code = next(c for c in grpc.StatusCode if c.value[0] == self.status)
        context.abort(code, self.message)


def unary(request, context):
    return Options(context).answer(context, request)


def server_stream(request, context):
    opts = Options(context)
    if not opts.wait(context, opts.delay):
        return
    if opts.status is not None and opts.count is None:
        opts.abort(context)
    opts.headers(context)
    msg = opts.reply(request)
    n = opts.count if opts.count is not None else 3
    for i in range(n):
        if i > 0 and opts.interval and not opts.wait(context, opts.interval):
            return
        yield msg
    if opts.status is not None:
        opts.abort(context)
    opts.trailers(context)


def client_stream(request_iterator, context):
    opts = Options(context)
    parts, n = [], 0
    for msg in request_iterator:
        n += 1
        if n > MAX_STREAM_MESSAGES:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "request stream too long")
        parts.append(msg)
    return opts.answer(context, str(n).encode() if opts.reply_count else b"".join(parts))


def bidi(request_iterator, context):
    opts = Options(context)
    if not opts.wait(context, opts.delay):
        return
    if opts.status is not None:
        for n, _ in enumerate(request_iterator):
            if n >= MAX_STREAM_MESSAGES:
                break
        opts.abort(context)
    opts.headers(context)
    for n, msg in enumerate(request_iterator):
        if n >= MAX_STREAM_MESSAGES:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "request stream too long")
        yield opts.reply(msg)
    opts.trailers(context)


def serve(max_seconds):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=OPTIONS)
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    # Also bounded in time, should the parent forget us.
    stop.wait(max_seconds)
    server.stop(grace=1.0).wait(5.0)
    # os._exit: a normal exit would wait on the stdin thread, still blocked in read().
    sys.stdout.flush()
    os._exit(0)


# --- client -------------------------------------------------------------------------------

class Fail(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Fail(why)


def rpc(ch, kind, name):
    """A raw-bytes callable (no serializers) for /ringway.test.Echo/<name>."""
    return getattr(ch, kind)(f"/{SERVICE}/{name}")


def expect_error(fn, code):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"status {e.code()} {e.details()!r}, want {code}")
        return e
    raise Fail(f"call succeeded, want {code}")


def case_unary(ch):
    got = rpc(ch, "unary_unary", "Unary")(b"hello grpc", timeout=WAIT)
    check(got == b"hello grpc", f"echo {got!r}")
    return "unary echoed 10 bytes"


def case_server_stream(ch):
    md = [("x-count", "5"), ("x-interval-ms", "2")]
    got = list(rpc(ch, "unary_stream", "ServerStream")(b"tick", metadata=md, timeout=WAIT))
    check(got == [b"tick"] * 5, f"stream {got!r}")
    return "server_stream got 5 messages"


def case_client_stream(ch):
    call = rpc(ch, "stream_unary", "ClientStream")
    got = call(iter([b"a", b"bc", b"def"]), timeout=WAIT)
    check(got == b"abcdef", f"concatenation {got!r}")
    got = call(iter([b"x"] * 7), metadata=[("x-reply", "count")], timeout=WAIT)
    check(got == b"7", f"count {got!r}")
    return "client_stream concatenated 3 and counted 7"


def case_bidi(ch):
    msgs = [f"ping {i}".encode() for i in range(4)]
    got = list(rpc(ch, "stream_stream", "Bidi")(iter(msgs), timeout=WAIT))
    check(got == msgs, f"echoes {got!r}")
    return "bidi echoed 4 messages"


def case_metadata(ch):
    raw = bytes([0, 1, 2, 0xFE, 0xFF])
    md = [("x-echo-plain", "hello"), ("x-echo-raw-bin", raw)]
    got, call = rpc(ch, "unary_unary", "Unary").with_call(b"md", metadata=md, timeout=WAIT)
    check(got == b"md", f"echo {got!r}")
    for where, seen in (("headers", call.initial_metadata()), ("trailers", call.trailing_metadata())):
        seen = dict(seen or ())
        check(seen.get("x-echo-plain") == "hello", f"{where}: x-echo-plain {seen.get('x-echo-plain')!r}")
        check(seen.get("x-echo-raw-bin") == raw, f"{where}: x-echo-raw-bin {seen.get('x-echo-raw-bin')!r}")
    return "x-echo-plain and x-echo-raw-bin in headers and trailers"


def case_deadline(ch):
    start = time.monotonic()
    expect_error(
        lambda: rpc(ch, "unary_unary", "Unary")(b"slow", metadata=[("x-delay-ms", "3000")], timeout=0.2),
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
    took = time.monotonic() - start
    check(took < 2.0, f"deadline took {took:.2f}s")
    return f"DEADLINE_EXCEEDED after {took:.2f}s"


def case_status(ch):
    md = [("x-status", "5"), ("x-message", "no such echo"), ("x-echo-why", "status")]
    e = expect_error(lambda: rpc(ch, "unary_unary", "Unary")(b"x", metadata=md, timeout=WAIT), grpc.StatusCode.NOT_FOUND)
    check(e.details() == "no such echo", f"message {e.details()!r}")
    trailers = dict(e.trailing_metadata() or ())
    check(trailers.get("x-echo-why") == "status", f"trailers {trailers!r}")
    return "NOT_FOUND 'no such echo' with x-echo-why"


def case_large(ch):
    size = 4 << 20
    big = pattern(size)
    call = rpc(ch, "unary_unary", "Unary")
    got = call(big, timeout=WAIT)
    check(got == big, f"4 MiB echo came back as {len(got)} bytes")
    got = call(b"small", metadata=[("x-size", str(size))], timeout=WAIT)
    check(got == big, f"x-size reply of {len(got)} bytes")
    return f"{size} bytes up and down"


def case_concurrent(ch):
    n = 200
    call = rpc(ch, "unary_unary", "Unary")
    msgs = [f"{i}:".encode().ljust(64, b"z") for i in range(n)]
    futs = [call.future(m, timeout=WAIT) for m in msgs]
    ok = sum(1 for m, f in zip(msgs, futs) if f.result(timeout=WAIT) == m)
    check(ok == n, f"{ok}/{n} correct")
    return f"{n} concurrent calls on one channel"


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def client(target, case):
    if case not in CASES:
        print(f"FAIL unknown case {case!r} (cases: {' '.join(sorted(CASES))})", flush=True)
        return 1
    with grpc.insecure_channel(target, options=OPTIONS) as ch:
        try:
            grpc.channel_ready_future(ch).result(timeout=WAIT)
            print(f"OK {CASES[case](ch)}", flush=True)
            return 0
        except Fail as e:
            print(f"FAIL {case}: {e}", flush=True)
        except grpc.FutureTimeoutError:
            print(f"FAIL {case}: no answer within {WAIT}s", flush=True)
        except grpc.RpcError as e:
            print(f"FAIL {case}: {e.code()} {e.details()!r}", flush=True)
        return 1


def main():
    args = sys.argv[1:]
    if args[:1] == ["server"] and len(args) <= 2:
        return serve(float(args[1]) if len(args) == 2 else 600.0)
    if args[:1] == ["client"] and len(args) == 3:
        return client(args[1], args[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
