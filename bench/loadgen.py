"""Closed-loop pipelined load generator for agenda, redis (RESP) and etcd (HTTP).

Opens C connections; each keeps W requests outstanding (a new request is
sent as soon as a reply arrives), for a warm-up and then a measured window.
Throughput counts replies completed inside the window; latency is from the
moment a request was written to the socket until its reply was parsed.
Only acknowledged writes count: agenda answers OK only after fsync, redis
with ``appendfsync always`` only after the AOF fsync, etcd only after its
WAL fsync (raft commit).

Protocols and operations (same logical record everywhere: a name and a phone):

- agenda  write: ``ADD "<name>" "+55 11 9xxxx-xxxx"``      read: ``GET "<name>"``
- resp    write: ``HSET contact:<name> name <name> phone <phone>``
          read:  ``HGETALL contact:<name>``
- etcd    write: ``POST /v3/kv/put``
          {key: contact/<name>, value: {"name","phone"} JSON}
          read:  ``POST /v3/kv/range`` {key, serializable: true}
          HTTP/1.1 over etcd's grpc-gateway. Go's HTTP/1.1 server answers the
          requests of one connection strictly one after the other, so a
          window of W on one connection would mean W=1; instead, for etcd
          ``C`` connections x window ``W`` are opened as C*W connections with
          one request outstanding each (the same number in flight).

- etcd-grpc  the same Put / Range (serializable) on etcd's native gRPC API
          (grpcio, asyncio; protobuf messages hand-encoded, they are two
          fields): C channels, each its own HTTP/2 connection, with W calls
          in flight on each (HTTP/2 multiplexes, so W is real here).

Reads pick a uniformly random name among ``--keys`` preloaded contacts
(``--op load`` writes them: names ``Contact load n<k>``).

Usage (prints one JSON object):
  python bench/loadgen.py --proto agenda --port 9010 --op write -c 16 -w 32 -d 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import sys
import time
from collections import deque

# -- request builders --------------------------------------------------------


LOCAL_PHONES = False  # --local-phones: "(11) 9xxxx-xxxx", no country code


def phone_for(i: int) -> str:
    """A distinct phone for each i < 10**8 (7919 is coprime with 10**8).

    Callers pass a number unique per contact (a run-wide counter plus a
    random per-run offset), so no two contacts of a run share a phone: a
    server-side cache of phone formatting gets no unrealistic hits.
    """
    n = (i * 7919) % 100_000_000
    if LOCAL_PHONES:
        return f"(11) 9{n // 10000:04d}-{n % 10000:04d}"
    return f"+55 11 9{n // 10000:04d}-{n % 10000:04d}"


def agenda_write(name: str, phone: str) -> bytes:
    return f'ADD "{name}" "{phone}"\n'.encode()


def agenda_read(name: str) -> bytes:
    return f'GET "{name}"\n'.encode()


def _resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n"]
    for a in args:
        b = a.encode()
        out.append(f"${len(b)}\r\n{a}\r\n")
    return "".join(out).encode()


def resp_write(name: str, phone: str) -> bytes:
    return _resp("HSET", f"contact:{name.casefold()}", "name", name, "phone", phone)


def resp_read(name: str) -> bytes:
    return _resp("HGETALL", f"contact:{name.casefold()}")


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _http_post(path: str, body: dict, host: str) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def etcd_write(name: str, phone: str, host: str) -> bytes:
    value = json.dumps({"name": name, "phone": phone}, separators=(",", ":"))
    body = {"key": _b64(f"contact/{name.casefold()}"), "value": _b64(value)}
    return _http_post("/v3/kv/put", body, host)


def etcd_read(name: str, host: str) -> bytes:
    body = {"key": _b64(f"contact/{name.casefold()}"), "serializable": True}
    return _http_post("/v3/kv/range", body, host)


# -- incremental reply parsers: (replies, consumed, errors, first_error) ------


def parse_agenda(buf: bytes) -> tuple[int, int, int, bytes | None]:
    """Replies end at a line starting with OK or ERR (CONTACT lines precede)."""
    pos = done = errors = 0
    first = None
    end = len(buf)
    consumed = 0
    while pos < end:
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            break
        c = buf[pos]
        if c == 79 and buf.startswith(b"OK", pos):  # 'O'
            done += 1
            consumed = nl + 2
        elif c == 69 and buf.startswith(b"ERR", pos):  # 'E'
            done += 1
            errors += 1
            if first is None:
                first = buf[pos:nl]
            consumed = nl + 2
        pos = nl + 2
    return done, consumed, errors, first


def _resp_one(buf: bytes, pos: int) -> int:
    """End position of one RESP value starting at pos, or -1 if incomplete."""
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return -1
    t = buf[pos]
    if t in (43, 45, 58):  # + - :
        return nl + 2
    n = int(buf[pos + 1 : nl])
    if t == 36:  # $ bulk
        if n < 0:
            return nl + 2
        stop = nl + 2 + n + 2
        return stop if stop <= len(buf) else -1
    if t == 42:  # * array
        p = nl + 2
        for _ in range(max(n, 0)):
            p = _resp_one(buf, p)
            if p < 0:
                return -1
        return p
    raise ValueError(f"bad RESP type byte {t!r}")


def parse_resp(buf: bytes) -> tuple[int, int, int, bytes | None]:
    pos = done = errors = 0
    first = None
    while pos < len(buf):
        stop = _resp_one(buf, pos)
        if stop < 0:
            break
        if buf[pos] == 45:  # '-'
            errors += 1
            if first is None:
                first = buf[pos:stop]
        if buf[pos] == 42 and buf.startswith(b"*0\r\n", pos):  # empty HGETALL
            errors += 1
            if first is None:
                first = b"HGETALL: no such key"
        done += 1
        pos = stop
    return done, pos, errors, first


def parse_http(
    buf: bytes, require_kvs: bool = False
) -> tuple[int, int, int, bytes | None]:
    pos = done = errors = 0
    first = None
    while True:
        hend = buf.find(b"\r\n\r\n", pos)
        if hend < 0:
            break
        head = buf[pos:hend].lower()
        body_start = hend + 4
        i = head.find(b"content-length:")
        if i >= 0:
            j = head.find(b"\r\n", i)
            length = int(head[i + 15 : j if j >= 0 else len(head)])
            stop = body_start + length
            if stop > len(buf):
                break
            body = buf[body_start:stop]
        elif b"chunked" in head:
            p = body_start
            body = b""
            complete = False
            while True:
                nl = buf.find(b"\r\n", p)
                if nl < 0:
                    break
                size = int(buf[p:nl].split(b";")[0], 16)
                if nl + 2 + size + 2 > len(buf):
                    break
                body += buf[nl + 2 : nl + 2 + size]
                p = nl + 2 + size + 2
                if size == 0:
                    complete = True
                    break
            if not complete:
                break
            stop = p
        else:
            stop, body = body_start, b""
        status = head[9:12]
        bad = status != b"200" or b'"code":' in body
        if not bad and require_kvs and b'"kvs"' not in body:
            bad = True  # a range that found nothing: the read missed
        if bad:
            errors += 1
            if first is None:
                first = buf[pos:stop][-300:]
        done += 1
        pos = stop
    return done, pos, errors, first


# -- the connection ----------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.measuring = False
        self.done = 0
        self.errors = 0
        self.first_error: bytes | None = None
        self.latencies: list[float] = []
        self.sent = 0
        self.server_cpu = 0.0
        self.last_reply = 0.0
        self.max_gap = 0.0  # longest time with no reply on any connection
        self.machine_cpu = 0.0


class Conn(asyncio.Protocol):
    def __init__(self, run: Run, index: int, window: int) -> None:
        self.run = run
        self.index = index
        self.window = window
        self.buf = b""
        self.inflight: deque[float] = deque()
        self.greeted = not run.greeting
        self.transport = None
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.drained = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.greeted:
            self.ready.set_result(None)

    def start(self) -> None:
        self._send(self.window)

    def _send(self, n: int) -> None:
        run = self.run
        if not run.sending or n <= 0:
            return
        reqs = [run.next_request(self.index) for _ in range(n)]
        now = time.perf_counter()
        self.inflight.extend([now] * n)
        run.stats.sent += n
        self.transport.write(b"".join(reqs))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.greeted:
            nl = buf.find(b"\r\n")
            if nl < 0:
                self.buf = buf
                return
            self.greeted = True
            buf = buf[nl + 2 :]
            self.ready.set_result(None)
        done, consumed, errors, first = self.run.parse(buf)
        self.buf = buf[consumed:]
        if not done:
            return
        now = time.perf_counter()
        stats = self.run.stats
        inflight = self.inflight
        if stats.measuring:
            if stats.last_reply and now - stats.last_reply > stats.max_gap:
                stats.max_gap = now - stats.last_reply
            stats.last_reply = now
            lat = stats.latencies
            for _ in range(done):
                lat.append(now - inflight.popleft())
            stats.done += done
            stats.errors += errors
            if first is not None and stats.first_error is None:
                stats.first_error = first
        else:
            for _ in range(done):
                inflight.popleft()
            if first is not None and stats.first_error is None:
                stats.first_error = first
        if self.run.sending:
            self._send(done)
        elif not inflight and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before greeting"))
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        if not self.closed.done():
            self.closed.set_result(exc)


class Run:
    def __init__(self, args) -> None:
        self.args = args
        self.stats = Stats()
        self.sending = True
        self.tag = args.tag or f"r{os.getpid() % 100000}x{random.randrange(10**6)}"
        self.greeting = args.proto == "agenda"
        self.counters: dict[int, int] = {}
        self.load_next = 0
        self.rng = random.Random(1)
        #: Phones: one run-wide counter from a random start (see phone_for).
        self.phone_next = random.randrange(100_000_000)
        host = f"{args.host}:{args.port}"
        if args.proto == "agenda":
            self.parse = parse_agenda
            self.w, self.r = agenda_write, agenda_read
        elif args.proto == "resp":
            self.parse = parse_resp
            self.w, self.r = resp_write, resp_read
        elif args.proto == "etcd":
            if args.op == "read":
                self.parse = lambda buf: parse_http(buf, True)
            else:
                self.parse = parse_http
            self.w = lambda n, p: etcd_write(n, p, host)
            self.r = lambda n: etcd_read(n, host)
        else:
            raise SystemExit(f"unknown proto {args.proto}")

    def next_request(self, conn: int) -> bytes:
        op = self.args.op
        if op == "read":
            k = self.rng.randrange(self.args.keys)
            return self.r(f"Contact load n{k}")
        if op == "load":
            k = self.load_next
            self.load_next += 1
            if self.load_next >= self.args.count:
                self.sending = False
            return self.w(f"Contact load n{k}", self._phone())
        i = self.counters.get(conn, 0)
        self.counters[conn] = i + 1
        return self.w(f"Contact {self.tag} c{conn} n{i}", self._phone())

    def _phone(self) -> str:
        self.phone_next += 1
        return phone_for(self.phone_next)


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) used so far by process pid."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle so far (all cores)."""
    try:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


async def main_async(args) -> dict:
    loop = asyncio.get_running_loop()
    run = Run(args)
    conns_n, window = args.conns, args.window
    if args.proto == "etcd":  # see the module docstring
        conns_n, window = args.conns * args.window, 1
    if args.op == "load":
        window = max(window, 1)
    conns: list[Conn] = []
    # Open connections in modest batches (thousands for etcd).
    for start in range(0, conns_n, 256):
        batch = []
        for i in range(start, min(conns_n, start + 256)):
            c = Conn(run, i, window)
            batch.append(loop.create_connection(lambda c=c: c, args.host, args.port))
            conns.append(c)
        await asyncio.gather(*batch)
    await asyncio.gather(*(c.ready for c in conns))

    stats = run.stats
    if args.op == "load":
        t0 = time.perf_counter()
        stats.measuring = True
        for c in conns:
            c.drained = loop.create_future()
            c.start()
        await asyncio.gather(*(c.drained for c in conns))
        elapsed = time.perf_counter() - t0
        for c in conns:
            c.transport.close()
        return {
            "proto": args.proto,
            "op": "load",
            "count": args.count,
            "acked": stats.done,
            "errors": stats.errors,
            "seconds": elapsed,
            "ops_per_s": stats.done / elapsed if elapsed else 0.0,
            "first_error": stats.first_error.decode("utf-8", "replace")
            if stats.first_error
            else None,
        }

    for c in conns:
        c.start()
    await asyncio.sleep(args.warmup)
    stats.measuring = True
    cpu0, scpu0 = time.process_time(), proc_cpu(args.server_pid)
    busy0 = machine_busy()
    t0 = time.perf_counter()
    await asyncio.sleep(args.duration)
    stats.measuring = False
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stats.server_cpu = (proc_cpu(args.server_pid) - scpu0) / elapsed
    stats.machine_cpu = (machine_busy() - busy0) / elapsed
    run.sending = False
    for c in conns:
        c.drained = loop.create_future()
        if not c.inflight:
            c.drained.set_result(None)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.drained for c in conns)), 30)
    for c in conns:
        c.transport.close()
    return summary(args, stats, elapsed, cpu, conns_n, run.tag)


# -- etcd over native gRPC -----------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_bytes(field_no: int, value: bytes) -> bytes:
    return _varint(field_no << 3 | 2) + _varint(len(value)) + value


def grpc_put(name: str, phone: str) -> bytes:
    # etcdserverpb.PutRequest: key = 1, value = 2
    value = json.dumps({"name": name, "phone": phone}, separators=(",", ":"))
    return _pb_bytes(1, f"contact/{name.casefold()}".encode()) + _pb_bytes(
        2, value.encode()
    )


def grpc_range(name: str) -> bytes:
    # etcdserverpb.RangeRequest: key = 1, serializable = 7 (bool)
    return _pb_bytes(1, f"contact/{name.casefold()}".encode()) + b"\x38\x01"


def grpc_range_found(reply: bytes) -> bool:
    # RangeResponse: header = 1, kvs = 2 (repeated): look for a top-level kvs.
    pos = 0
    while pos < len(reply):
        tag, pos = _read_varint(reply, pos)
        if tag & 7 == 2:
            length, pos = _read_varint(reply, pos)
            if tag >> 3 == 2:
                return True
            pos += length
        elif tag & 7 == 0:
            _, pos = _read_varint(reply, pos)
        else:
            return False
    return False


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7


async def main_grpc(args) -> dict:
    import grpc

    target = f"{args.host}:{args.port}"
    ident = lambda b: b  # noqa: E731 - raw bytes in and out
    channels, puts, ranges = [], [], []
    for _ in range(args.conns):
        ch = grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        channels.append(ch)
        puts.append(ch.unary_unary("/etcdserverpb.KV/Put", ident, ident))
        ranges.append(ch.unary_unary("/etcdserverpb.KV/Range", ident, ident))
    await asyncio.gather(*(ch.channel_ready() for ch in channels))
    stats = Stats()
    state = {"sending": True, "load_next": 0}
    tag = args.tag or f"r{os.getpid() % 100000}x{random.randrange(10**6)}"
    rng = random.Random(1)
    phones = iter(range(random.randrange(100_000_000), 1 << 62))

    async def worker(conn: int, slot: int) -> None:
        put, rng_call = puts[conn], ranges[conn]
        i = 0
        while state["sending"]:
            if args.op == "read":
                k = rng.randrange(args.keys)
                call, req = rng_call, grpc_range(f"Contact load n{k}")
            elif args.op == "load":
                k = state["load_next"]
                if k >= args.count:
                    return
                state["load_next"] = k + 1
                call, req = put, grpc_put(f"Contact load n{k}", phone_for(next(phones)))
            else:
                call = put
                req = grpc_put(
                    f"Contact {tag} c{conn} s{slot} n{i}", phone_for(next(phones))
                )
                i += 1
            t0 = time.perf_counter()
            try:
                reply = await call(req)
                bad = args.op == "read" and not grpc_range_found(reply)
                err = b"range found nothing" if bad else None
            except grpc.aio.AioRpcError as e:
                bad, err = True, f"{e.code()}: {e.details()}".encode()
            if stats.measuring:
                now = time.perf_counter()
                if stats.last_reply and now - stats.last_reply > stats.max_gap:
                    stats.max_gap = now - stats.last_reply
                stats.last_reply = now
                stats.latencies.append(now - t0)
                stats.done += 1
                stats.errors += bad
            if bad and stats.first_error is None:
                stats.first_error = err

    window = args.window
    tasks = [
        asyncio.ensure_future(worker(c, s))
        for c in range(args.conns)
        for s in range(window)
    ]
    if args.op == "load":
        stats.measuring = True
        t0 = time.perf_counter()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        for ch in channels:
            await ch.close()
        return {
            "proto": args.proto,
            "op": "load",
            "count": args.count,
            "acked": stats.done,
            "errors": stats.errors,
            "seconds": elapsed,
            "ops_per_s": stats.done / elapsed,
            "first_error": stats.first_error.decode("utf-8", "replace")
            if stats.first_error
            else None,
        }
    await asyncio.sleep(args.warmup)
    stats.measuring = True
    cpu0, scpu0 = time.process_time(), proc_cpu(args.server_pid)
    busy0 = machine_busy()
    t0 = time.perf_counter()
    await asyncio.sleep(args.duration)
    stats.measuring = False
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stats.server_cpu = (proc_cpu(args.server_pid) - scpu0) / elapsed
    stats.machine_cpu = (machine_busy() - busy0) / elapsed
    state["sending"] = False
    await asyncio.wait(tasks, timeout=30)
    for ch in channels:
        await ch.close()
    return summary(args, stats, elapsed, cpu, args.conns, tag)


def summary(args, stats: Stats, elapsed: float, cpu: float, tcp: int, tag: str) -> dict:
    lat = sorted(stats.latencies)
    ms = 1000.0
    return {
        "proto": args.proto,
        "op": args.op,
        "conns": args.conns,
        "window": args.window,
        "tcp_connections": tcp,
        "seconds": round(elapsed, 3),
        "ops": stats.done,
        "ops_per_s": round(stats.done / elapsed, 1),
        "errors": stats.errors,
        "first_error": stats.first_error.decode("utf-8", "replace")
        if stats.first_error
        else None,
        "p50_ms": round(pct(lat, 50) * ms, 3),
        "p99_ms": round(pct(lat, 99) * ms, 3),
        "p999_ms": round(pct(lat, 99.9) * ms, 3),
        "max_ms": round(lat[-1] * ms, 3) if lat else None,
        "max_gap_ms": round(stats.max_gap * ms, 1),
        "client_cpu": round(cpu / elapsed, 2),
        "server_cpu": round(stats.server_cpu, 2),
        # Busy CPU of the whole machine minus ours: other load (noise).
        "other_cpu": round(
            max(0.0, stats.machine_cpu - stats.server_cpu - cpu / elapsed), 2
        ),
        "loadavg": os.getloadavg()[0],
        "tag": tag,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--proto", choices=("agenda", "resp", "etcd", "etcd-grpc"), default="agenda"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--op", choices=("write", "read", "load"), default="write")
    p.add_argument("-c", "--conns", type=int, default=1)
    p.add_argument("-w", "--window", type=int, default=1)
    p.add_argument("-d", "--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--keys", type=int, default=10_000, help="read: preloaded names")
    p.add_argument("--count", type=int, default=10_000, help="load: names to write")
    p.add_argument(
        "--server-pid",
        type=int,
        default=0,
        help="report this process's CPU use (cores) over the window",
    )
    p.add_argument("--tag", default="", help="write: name prefix (unique per run)")
    p.add_argument(
        "--local-phones",
        action="store_true",
        help="phones without +country (the node then skips phonenumbers)",
    )
    args = p.parse_args(argv)
    global LOCAL_PHONES
    LOCAL_PHONES = args.local_phones
    runner = main_grpc if args.proto == "etcd-grpc" else main_async
    result = asyncio.run(runner(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
