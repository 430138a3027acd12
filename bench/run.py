"""Run the whole benchmark: machine facts, single-node suites, replication, profile.

Writes bench/results.json (every raw number) and bench/tables.md (the tables),
and prints the tables. Every server it starts is stopped by its own pid.

  python3 bench/run.py                 # everything (about 7 minutes)
  python3 bench/run.py --only agenda   # one part (repeatable): agenda redis etcd
                                       #   etcd-grpc redis-benchmark replication
                                       #   profile ablation fsync
  BENCH_DURATION=2 python3 bench/run.py  # shorter measurements
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench import procs  # noqa: E402
from bench.procs import AgendaNode, Etcd, LineClient, Redis, wait_for  # noqa: E402

DURATION = float(os.environ.get("BENCH_DURATION", "4"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "1"))
CONFIGS = [(1, 1), (1, 32), (16, 1), (16, 32), (64, 1), (64, 32)]
PRELOAD = 10_000
CATCHUP_OPS = 50_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadgen(
    proto: str,
    port: int,
    *args: str,
    server_pid: int | None = None,
    timeout: float = 300,
) -> dict:
    cmd = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        "--proto",
        proto,
        "--port",
        str(port),
        *args,
    ]
    if server_pid:
        cmd += ["--server-pid", str(server_pid)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not r.stdout.strip():
        raise RuntimeError(f"loadgen failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- machine ------------------------------------------------------------------


def fsync_rate(folder: str, seconds: float = 1.0, rounds: int = 3) -> dict:
    """Appending 100-byte lines, fsync after each: calls per second (per round)."""
    path = os.path.join(folder, "fsync-probe")
    out = {}
    for call in ("fsync", "fdatasync"):
        rates = []
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
        try:
            for _ in range(rounds):
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    os.write(fd, b"x" * 99 + b"\n")
                    getattr(os, call)(fd)
                    n += 1
                rates.append(round(n / (time.perf_counter() - t0)))
        finally:
            os.close(fd)
            os.unlink(path)
        out[call] = rates
    return out


def machine_info(tmp: str) -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split(":")[1].strip()
    fs = subprocess.run(["df", "-hT", tmp], capture_output=True, text=True).stdout
    versions = {
        "python": platform.python_version(),
        "redis": _version(["redis-server", "--version"]),
        "etcd": _version(["etcd", "--version"]).splitlines()[0]
        if shutil.which("etcd")
        else "",
    }
    try:
        import twisted

        versions["twisted"] = twisted.__version__
    except ImportError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem": mem,
        "kernel": platform.release(),
        "filesystem": fs.strip().splitlines()[-1],
        "fsync_per_s": fsync_rate(tmp),
        "loadavg": os.getloadavg(),
        "versions": versions,
    }


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError as e:
        return f"not available: {e}"


# -- single node --------------------------------------------------------------


def single_node(system: str, tmp: str) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{system}-", dir=tmp))
    if system == "agenda":
        server, proto = AgendaNode(run_dir, "n1"), "agenda"
    elif system == "redis":
        server, proto = Redis(run_dir), "resp"
    elif system == "etcd":
        server, proto = Etcd(run_dir), "etcd"
    elif system == "etcd-grpc":
        server, proto = Etcd(run_dir), "etcd-grpc"
    else:
        raise ValueError(system)
    out: dict = {"system": system, "writes": [], "reads": []}
    try:
        server.start().wait_ready()
    except Exception as e:
        out["error"] = f"could not start {system}: {e}"
        log(out["error"])
        return out
    try:
        log(f"{system}: preloading {PRELOAD} contacts")
        out["preload"] = loadgen(
            proto,
            server.port,
            "--op",
            "load",
            "--count",
            str(PRELOAD),
            "-c",
            "16",
            "-w",
            "32",
        )
        for c, w in CONFIGS:
            r = loadgen(
                proto,
                server.port,
                "--op",
                "write",
                "-c",
                str(c),
                "-w",
                str(w),
                "-d",
                str(DURATION),
                "--warmup",
                str(WARMUP),
                server_pid=server.pid,
            )
            log(
                f"{system} write C={c} W={w}: {r['ops_per_s']:.0f} ops/s "
                f"p50={r['p50_ms']}ms p99={r['p99_ms']}ms errors={r['errors']}"
            )
            out["writes"].append(r)
        for c, w in CONFIGS:
            r = loadgen(
                proto,
                server.port,
                "--op",
                "read",
                "--keys",
                str(PRELOAD),
                "-c",
                str(c),
                "-w",
                str(w),
                "-d",
                str(DURATION),
                "--warmup",
                str(WARMUP),
                server_pid=server.pid,
            )
            log(
                f"{system} read  C={c} W={w}: {r['ops_per_s']:.0f} ops/s "
                f"p50={r['p50_ms']}ms p99={r['p99_ms']}ms errors={r['errors']}"
            )
            out["reads"].append(r)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"{system} failed: {out['error']}")
    finally:
        out["exit_code"] = server.stop()
    return out


# -- replication ----------------------------------------------------------------


class Poller(threading.Thread):
    """Samples the vv of every node (for origin n1) as fast as STATUS allows."""

    def __init__(
        self, nodes: list[AgendaNode], origin: str = "n1", interval: float = 0.02
    ) -> None:
        super().__init__(daemon=True)
        self.nodes = nodes
        self.origin = origin
        self.interval = interval
        self.samples: dict[str, list[tuple[float, int]]] = {n.name: [] for n in nodes}
        self.stop_flag = threading.Event()
        self.clients: dict[str, LineClient] = {}

    def sample(self, node: AgendaNode) -> int:
        client = self.clients.get(node.name)
        if client is None:
            client = self.clients[node.name] = node.client()
        seq = client.vv().get(self.origin, 0)
        self.samples[node.name].append((time.monotonic(), seq))
        return seq

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for node in self.nodes:
                try:
                    self.sample(node)
                except OSError:
                    self.clients.pop(node.name, None)
            time.sleep(self.interval)

    def stop(self) -> None:
        self.stop_flag.set()
        self.join()
        for c in self.clients.values():
            c.close()


def time_lags(
    leader: list[tuple[float, int]],
    follower: list[tuple[float, int]],
    since: float,
    until: float,
) -> list[float]:
    """For each follower sample: now minus when the leader first had that seq."""
    lags = []
    for t, seq in follower:
        if t < since or t > until:
            continue
        first = next((lt for lt, ls in leader if ls >= seq), None)
        if first is not None:
            lags.append(max(0.0, t - first))
    return lags


def replication(tmp: str) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix="repl-", dir=tmp))
    nodes = [AgendaNode(run_dir, f"n{i}") for i in (1, 2, 3)]
    for n in nodes:
        n.peers = [m.sync_address for m in nodes if m is not n]
    out: dict = {}
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            n.wait_ready()

        def meshed():
            for n in nodes:
                with n.client() as c:
                    lines = c.request("STATUS")
                if sum("state=connected" in ln for ln in lines) < 2:
                    return False
            return True

        wait_for(meshed, 30, 0.05, "cluster did not connect")
        n1, n2, n3 = nodes

        # 1. Live replication under write load on n1.
        c, w = 16, 32
        log(f"replication: writing on n1 C={c} W={w} for {DURATION * 1.5}s")
        poller = Poller(nodes)
        poller.start()
        t_start = time.monotonic()
        r = loadgen(
            "agenda",
            n1.port,
            "--op",
            "write",
            "-c",
            str(c),
            "-w",
            str(w),
            "-d",
            str(DURATION * 1.5),
            "--warmup",
            str(WARMUP),
            server_pid=n1.pid,
        )
        t_end = time.monotonic()
        final = n1.vv()["n1"]
        drained = {}
        for n in (n2, n3):
            wait_for(
                lambda n=n: n.vv().get("n1", 0) >= final,
                120,
                0.01,
                f"{n.name} did not catch up",
            )
            drained[n.name] = time.monotonic() - t_end
        poller.stop()
        leader = poller.samples["n1"]
        live = {}
        for n in (n2, n3):
            lags = sorted(time_lags(leader, poller.samples[n.name], t_start, t_end))
            behind = []
            for t, seq in poller.samples[n.name]:
                if t_start <= t <= t_end:
                    lead = max((ls for lt, ls in leader if lt <= t), default=0)
                    behind.append(max(0, lead - seq))
            live[n.name] = {
                "lag_ms_p50": round(statistics.median(lags) * 1000, 1)
                if lags
                else None,
                "lag_ms_p99": round(lags[int(0.99 * (len(lags) - 1))] * 1000, 1)
                if lags
                else None,
                "lag_ms_max": round(lags[-1] * 1000, 1) if lags else None,
                "ops_behind_mean": round(statistics.mean(behind)) if behind else None,
                "ops_behind_max": max(behind) if behind else None,
                "samples": len(lags),
                "drain_after_load_s": round(drained[n.name], 3),
            }
        out["live"] = {
            "load": r,
            "ops_total": final,
            "load_seconds": round(t_end - t_start, 2),
            "followers": live,
            "replicated_ops_per_s": round(
                final / (t_end - t_start + max(drained.values()))
            ),
        }
        log(f"replication: n1 {r['ops_per_s']:.0f} ops/s; followers {live}")

        # 2. Catch-up: n3 down while 50,000 ops are written, then restarted.
        n3.stop()
        before = n1.vv()["n1"]
        log(f"catch-up: n3 stopped at n1:{before}; writing {CATCHUP_OPS} ops on n1")
        lr = loadgen(
            "agenda",
            n1.port,
            "--op",
            "load",
            "--count",
            str(CATCHUP_OPS),
            "-c",
            "16",
            "-w",
            "32",
        )
        target = n1.vv()["n1"]
        t0 = time.monotonic()
        wait_for(lambda: n2.vv().get("n1", 0) >= target, 120, 0.01, "n2 behind")
        n2_after = time.monotonic() - t0
        t0 = time.monotonic()
        n3.start()
        n3.wait_ready(60)
        t_ready = time.monotonic() - t0
        progress = []

        def caught_up():
            seq = n3.vv().get("n1", 0)
            progress.append((round(time.monotonic() - t0, 3), seq))
            return seq >= target

        wait_for(caught_up, 300, 0.02, "n3 did not catch up")
        t_caught = time.monotonic() - t0
        first_gain = next((t for t, s in progress if s > before), None)
        n3log = (run_dir / "n3.log").read_text(errors="replace")
        out["catchup"] = {
            "ops_written": target - before,
            "write": lr,
            "n2_lag_after_write_s": round(n2_after, 3),
            "n3_start_to_greeting_s": round(t_ready, 3),
            "n3_start_to_first_new_op_s": first_gain,
            "n3_start_to_caught_up_s": round(t_caught, 3),
            "n3_transfer_s": round(t_caught - (first_gain or t_ready), 3),
            "via_snapshot": "merged a snapshot" in n3log,
            "progress": progress[:: max(1, len(progress) // 40)],
        }
        log(f"catch-up: {out['catchup']}")

        # 3. Where the leader's time goes when it also feeds two peers.
        if shutil.which("py-spy"):
            raw = BENCH / "profile-leader.collapsed.txt"
            lg = subprocess.Popen(
                [
                    sys.executable,
                    str(BENCH / "loadgen.py"),
                    "--proto",
                    "agenda",
                    "--port",
                    str(n1.port),
                    "--op",
                    "write",
                    "-c",
                    "16",
                    "-w",
                    "32",
                    "-d",
                    "9",
                    "--warmup",
                    "0.5",
                    "--server-pid",
                    str(n1.pid),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.5)
            log("replication: py-spy record --native on n1 (writes, 2 peers)")
            pyspy_record(n1.pid, 6, "raw", raw)
            load = json.loads(lg.communicate(timeout=120)[0].strip().splitlines()[-1])
            out["leader_profile"] = {"load": load, **parse_raw_profile(raw)}
            compress(raw)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"replication failed: {out['error']}")
    finally:
        for n in nodes:
            n.stop()
    return out


# -- profile --------------------------------------------------------------------


IDLE_PY = ("Condition.wait (threading.py)", "Queue.get (queue.py)")


def _is_native(frame: str) -> bool:
    return ".py)" not in frame and "<attrs generated" not in frame


def classify(frames: list[str]) -> str | None:
    """Why a sample is not CPU work of ours: None, or what it waits on."""
    py = [f for f in frames if not _is_native(f)]
    if py and py[-1].startswith(IDLE_PY):
        return "writer thread waiting for work (Queue.get)"
    if py and py[-1].startswith("EPollReactor.doPoll") and _is_native(frames[-1]):
        return "reactor waiting in epoll_wait"
    if py and py[-1].startswith("Journal._write") and _is_native(frames[-1]):
        return "writer thread in write/fsync syscalls"
    return None


#: (component, frame-name patterns) -- each busy sample goes to the first
#: component matching a frame, walking from the leaf towards the root.
COMPONENTS = [
    ("cyclic GC (gc_collect_main)", (r"^gc_collect_main ",)),
    (
        "phone check + normalize (phone.py, phonenumbers)",
        (r"\(twisted_agenda/phone\.py\)", r"phonenumbers/", r"^clean_phone "),
    ),
    (
        "field validation (model.clean_fields: name/email/note)",
        (r"^clean_(fields|name|email|note)", r"^_has_control", r"^contact_key "),
    ),
    (
        "op JSON encode/decode (crdt.Op.make/_encode/decode)",
        (r"^Op\.(make|decode) ", r"^_encode \(twisted_agenda/crdt"),
    ),
    (
        "CRDT apply + Record.contact rebuilds (crdt.py)",
        (r"^Replica\.", r"^Record\.", r"crdt\.Op>\)$", r"model\.Contact>\)$"),
    ),
    (
        "reply formatting/queueing (lineproto _reply/_fill/_send, quote)",
        (
            r"^AgendaLineProtocol\._(reply|fill|send) ",
            r"^contact_line ",
            r"^quote ",
            r"^quote\.",
        ),
    ),
    (
        "request parsing (quoting.split, parse_fields)",
        (r"^split \(twisted_agenda/quoting", r"^parse_fields ", r"^shlex\."),
    ),
    (
        "replication (peerproto, antientropy, cluster, AMP)",
        (r"twisted_agenda/(peerproto|antientropy|cluster)\.py", r"protocols/amp\.py"),
    ),
    (
        "journal + Deferred plumbing (journal.py, node._journal, defer.py)",
        (
            r"twisted_agenda/journal\.py",
            r"^Node\._(journal|announce|fanout) ",
            r"internet/defer\.py",
        ),
    ),
    (
        "line protocol framing/dispatch (lineproto dataReceived/_line/_dispatch/do_*)",
        (r"twisted_agenda/lineproto\.py",),
    ),
    ("node logic (node.py add/_write/get)", (r"twisted_agenda/node\.py",)),
    (
        "socket I/O + reactor (tcp, epoll, send/recv)",
        (r"internet/(tcp|abstract|epollreactor|posixbase|base)\.py", r"^(send|recv) "),
    ),
]


def component_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, patterns in COMPONENTS:
            if any(re.search(p, frame) for p in patterns):
                return name
    return "other"


def parse_raw_profile(path: Path) -> dict:
    """py-spy --native --format raw (collapsed stacks) -> self/total per function.

    Percentages are of the samples where the node did work; waits (epoll,
    the writer thread idle or in fsync) are counted apart. With --native the
    cyclic garbage collector shows as its own C frame (gc_collect_main)
    instead of being charged to whatever Python line allocated.
    """
    roots = {str(BENCH.parent) + "/", str(procs.CODE_ROOT) + "/"}

    def short(f: str) -> str:
        for root in roots:
            f = f.replace(root, "")
        return re.sub(r"\(/[^)]*/(site-packages|lib/python3\.\d+)/", "(", f)

    self_t: collections.Counter = collections.Counter()
    total_t: collections.Counter = collections.Counter()
    waits: collections.Counter = collections.Counter()
    parts: collections.Counter = collections.Counter()
    samples = busy = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        why = classify(frames)
        if why:
            waits[why] += n
            continue
        busy += n
        parts[component_of([short(f) for f in frames])] += n
        leaf = frames[-1]
        if re.match(r"0x[0-9a-f]+ ", leaf):  # unsymbolised libc: name the caller
            caller = next((f for f in reversed(frames) if not _is_native(f)), "?")
            leaf = f"libc, called from {caller}"
        self_t[leaf] += n
        for f in set(frames):
            total_t[f] += n
    busy = busy or 1
    return {
        "samples": samples,
        "busy_samples": busy,
        "waits": {k: round(100 * v / samples, 1) for k, v in waits.items()},
        "components": [(k, round(100 * v / busy, 1)) for k, v in parts.most_common()],
        "self": [
            (short(f), n, round(100 * n / busy, 1)) for f, n in self_t.most_common(30)
        ],
        "total": [
            (short(f), n, round(100 * n / busy, 1))
            for f, n in total_t.most_common(80)
            if not _is_native(f)
        ],
    }


def compress(path: Path) -> None:
    """Keep the collapsed stacks (for re-analysis) as .gz next to the svg."""
    with open(path, "rb") as src, gzip.open(str(path) + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()


def pyspy_record(pid: int, seconds: float, fmt: str, dest: Path) -> None:
    subprocess.run(
        [
            shutil.which("py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--native",
            "--format",
            fmt,
            "-o",
            str(dest),
        ],
        capture_output=True,
        text=True,
        check=True,
    )


def profile(tmp: str) -> dict:
    if not shutil.which("py-spy"):
        return {"error": "py-spy not installed (pip install py-spy)"}
    run_dir = Path(tempfile.mkdtemp(prefix="profile-", dir=tmp))
    node = AgendaNode(run_dir, "n1")
    out: dict = {}
    try:
        node.start().wait_ready()
        loadgen(
            "agenda",
            node.port,
            "--op",
            "load",
            "--count",
            str(PRELOAD),
            "-c",
            "16",
            "-w",
            "32",
        )
        for op, seconds in (("write", 8), ("read", 6)):
            raw = BENCH / f"profile-{op}.collapsed.txt"
            svg = BENCH / f"profile-{op}.svg"
            total = 2 * seconds + 4
            lg = subprocess.Popen(
                [
                    sys.executable,
                    str(BENCH / "loadgen.py"),
                    "--proto",
                    "agenda",
                    "--port",
                    str(node.port),
                    "--op",
                    op,
                    "-c",
                    "64",
                    "-w",
                    "32",
                    "--keys",
                    str(PRELOAD),
                    "-d",
                    str(total),
                    "--warmup",
                    "0.5",
                    "--server-pid",
                    str(node.pid),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.5)
            log(
                f"profile: py-spy record --native {op} "
                f"({seconds}s raw + {seconds}s svg)"
            )
            pyspy_record(node.pid, seconds, "raw", raw)
            pyspy_record(node.pid, seconds, "flamegraph", svg)
            load = json.loads(lg.communicate(timeout=120)[0].strip().splitlines()[-1])
            out[op] = {"load": load, **parse_raw_profile(raw), "svg": svg.name}
            compress(raw)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"profile failed: {out['error']}")
    finally:
        node.stop()
    return out


# -- ablation: the same node, one thing changed (no server code edited) ----------

ABLATIONS = {
    "baseline": ("", []),
    "phones sent as '(11) 9xxxx-xxxx' (load change: phonenumbers.parse skipped)": (
        "",
        [],
        ["--local-phones"],
    ),
    "gc disabled (upper bound of GC cost)": ("import gc; gc.disable(); ", []),
    "gc.set_threshold(50_000, 20, 100)": (
        "import gc; gc.set_threshold(50_000, 20, 100); ",
        [],
    ),
    "no compaction (--compact-min-ops 10^9)": ("", ["--compact-min-ops", "1000000000"]),
}


def ablation(tmp: str) -> dict:
    out = {}
    for name, (prelude, extra, *lg_args) in ABLATIONS.items():
        lg_extra = lg_args[0] if lg_args else []
        run_dir = Path(tempfile.mkdtemp(prefix="ablation-", dir=tmp))
        node = AgendaNode(run_dir, "n1", prelude=prelude, extra=extra)
        try:
            node.start().wait_ready()
            loadgen(
                "agenda",
                node.port,
                "--op",
                "load",
                "--count",
                str(PRELOAD),
                "-c",
                "16",
                "-w",
                "32",
            )
            r = loadgen(
                "agenda",
                node.port,
                "--op",
                "write",
                "-c",
                "64",
                "-w",
                "32",
                "-d",
                str(DURATION * 1.5),
                "--warmup",
                str(WARMUP),
                *lg_extra,
                server_pid=node.pid,
            )
            out[name] = r
            log(
                f"ablation {name}: {r['ops_per_s']:.0f} ops/s, "
                f"{per_core(r)} ops per node CPU-second"
            )
        except Exception as e:
            out[name] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            node.stop()
    return out


def per_core(r: dict) -> int | None:
    cpu = r.get("server_cpu") or 0
    return round(r["ops_per_s"] / cpu) if cpu > 0.05 else None


def redis_benchmark(tmp: str) -> dict:
    """Cross-check with redis's own C client: is our Python loadgen the limit?"""
    exe = shutil.which("redis-benchmark")
    if not exe:
        return {"error": "redis-benchmark not installed"}
    run_dir = Path(tempfile.mkdtemp(prefix="redis-bench-", dir=tmp))
    server = Redis(run_dir)
    out = {}
    try:
        server.start().wait_ready()
        for c, w in CONFIGS:
            n = max(2000, int(c * w * 1500 * DURATION / 4))
            n = min(n, 600_000)
            r = subprocess.run(
                [
                    exe,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(server.port),
                    "-c",
                    str(c),
                    "-P",
                    str(w),
                    "-n",
                    str(n),
                    "-t",
                    "hset",
                    "-r",
                    "1000000",
                    "--csv",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            row = r.stdout.strip().splitlines()[-1].replace('"', "").split(",")
            out[f"{c}x{w}"] = {
                "conns": c,
                "window": w,
                "requests": n,
                "ops_per_s": float(row[1]),
                "p50_ms": float(row[4]),
                "p99_ms": float(row[6]),
            }
            log(f"redis-benchmark HSET C={c} P={w}: {row[1]} ops/s")
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        server.stop()
    return out


# -- tables ---------------------------------------------------------------------


def f0(x) -> str:
    return "-" if x is None else f"{x:,.0f}"


def f2(x) -> str:
    return "-" if x is None else (f"{x:.2f}" if x < 100 else f"{x:.0f}")


def tables(res: dict) -> str:
    out = []
    code = res.get("code")
    if code:
        out.append(
            f"agenda code: commit {code['commit'][:10]} ({code['subject']}), "
            f"mode {code['mode']}"
        )
    m = res.get("machine", {})
    if m:
        out.append(
            f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem']}, "
            f"kernel {m['kernel']}; fs {m['filesystem']}"
        )
        out.append(f"fsync/s (100-byte appends, 1 s rounds): {m['fsync_per_s']}")
        if "fsync_per_s_end" in res:
            out.append(f"fsync/s at the end: {res['fsync_per_s_end']}")
        out.append("")
    systems = [s for s in res.get("single", []) if s.get("writes") or s.get("error")]
    for op in ("writes", "reads"):
        if not systems:
            break
        out.append(f"### {op}: ops/s (p50 / p99 ms)\n")
        names = [s["system"] for s in systems]
        out.append("| C | W | in flight | " + " | ".join(names) + " |")
        out.append("|---|---|---|" + "---|" * len(names))
        for c, w in CONFIGS:
            cells = []
            for s in systems:
                r = next(
                    (r for r in s.get(op, []) if r["conns"] == c and r["window"] == w),
                    None,
                )
                if r is None:
                    cells.append("-")
                else:
                    err = f" **{r['errors']} err**" if r["errors"] else ""
                    cells.append(
                        f"{f0(r['ops_per_s'])} ({f2(r['p50_ms'])} / "
                        f"{f2(r['p99_ms'])}){err}"
                    )
            out.append(f"| {c} | {w} | {c * w} | " + " | ".join(cells) + " |")
        out.append("")
    if systems:
        out.append("### CPU during each measurement (cores; 2 = whole machine)\n")
        out.append(
            "| system | op | C | W | ops/s | server CPU | ops per server "
            "CPU-s | loadgen CPU | other CPU (not ours) | max ms | longest "
            "no-reply gap ms |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for s in systems:
            for op in ("writes", "reads"):
                for r in s.get(op, []):
                    out.append(
                        f"| {s['system']} | {op[:-1]} | {r['conns']} | "
                        f"{r['window']} | {f0(r['ops_per_s'])} | "
                        f"{r['server_cpu']} | {f0(per_core(r))} | "
                        f"{r['client_cpu']} | {r['other_cpu']} | "
                        f"{f2(r['max_ms'])} | {f2(r.get('max_gap_ms'))} |"
                    )
        out.append("")
        for s in systems:
            if s.get("error"):
                out.append(f"- {s['system']}: **{s['error']}**")
    rb = res.get("redis_benchmark")
    if rb:
        out.append("### redis-benchmark (C client) HSET, same redis config\n")
        out.append("| C | pipeline | ops/s | p50 ms | p99 ms |")
        out.append("|---|---|---|---|---|")
        for k, r in rb.items():
            if k != "error":
                out.append(
                    f"| {r['conns']} | {r['window']} | {f0(r['ops_per_s'])} | "
                    f"{r['p50_ms']} | {r['p99_ms']} |"
                )
        if rb.get("error"):
            out.append(f"- redis-benchmark: **{rb['error']}**")
        out.append("")
    ab = res.get("ablation")
    if ab:
        out.append("### ablation: agenda node, writes C=64 W=32, one thing changed\n")
        out.append(
            "| variant | ops/s | server CPU | ops per server CPU-s | p50 ms | "
            "p99 ms | other CPU |"
        )
        out.append("|---|---|---|---|---|---|---|")
        for name, r in ab.items():
            if "error" in r:
                out.append(f"| {name} | **{r['error']}** | | | | | |")
            else:
                out.append(
                    f"| {name} | {f0(r['ops_per_s'])} | {r['server_cpu']} | "
                    f"{f0(per_core(r))} | {f2(r['p50_ms'])} | "
                    f"{f2(r['p99_ms'])} | {r['other_cpu']} |"
                )
        out.append("")
    rep = res.get("replication")
    if rep:
        out.append("### replication (3 nodes on loopback, writes on n1)\n")
        if "live" in rep:
            lv = rep["live"]
            ld = lv["load"]
            out.append(
                f"n1 write load C={ld['conns']} W={ld['window']}: "
                f"{f0(ld['ops_per_s'])} acked ops/s (p50 {ld['p50_ms']} ms, "
                f"p99 {ld['p99_ms']} ms), {lv['ops_total']:,} ops in "
                f"{lv['load_seconds']} s; end-to-end replicated "
                f"{f0(lv['replicated_ops_per_s'])} ops/s\n"
            )
            out.append(
                "| follower | lag p50 ms | lag p99 ms | lag max ms | "
                "ops behind mean | ops behind max | all ops this long after "
                "load ended |"
            )
            out.append("|---|---|---|---|---|---|---|")
            for name, f in lv["followers"].items():
                out.append(
                    f"| {name} | {f['lag_ms_p50']} | {f['lag_ms_p99']} | "
                    f"{f['lag_ms_max']} | {f0(f['ops_behind_mean'])} | "
                    f"{f0(f['ops_behind_max'])} | {f['drain_after_load_s']} s |"
                )
            out.append("")
        if "catchup" in rep:
            cu = rep["catchup"]
            out.append(
                f"catch-up: n3 stopped, {cu['ops_written']:,} ops written on n1 "
                f"({f0(cu['write']['ops_per_s'])} ops/s; n2 had them all "
                f"{cu['n2_lag_after_write_s']} s after the last ack); n3 started: "
                f"greeting after {cu['n3_start_to_greeting_s']} s, first new op "
                f"after {cu['n3_start_to_first_new_op_s']} s, all ops after "
                f"**{cu['n3_start_to_caught_up_s']} s** (transfer "
                f"{cu['n3_transfer_s']} s; via snapshot: {cu['via_snapshot']})\n"
            )
        if rep.get("error"):
            out.append(f"- replication: **{rep['error']}**\n")
    profs = dict(res.get("profile") or {})
    if rep and rep.get("leader_profile"):
        profs["leader"] = rep["leader_profile"]
    titles = {
        "write": "single node, writes C=64 W=32",
        "read": "single node, reads (GET) C=64 W=32",
        "leader": "n1 of the 3-node cluster, writes C=16 W=32",
    }
    for op in ("write", "read", "leader"):
        p = profs.get(op)
        if not p:
            continue
        ld = p["load"]
        waits = ", ".join(f"{k} {v}%" for k, v in p["waits"].items())
        out.append(
            f"### profile: {titles[op]} ({f0(ld['ops_per_s'])} ops/s, node CPU "
            f"{ld['server_cpu']}); {p['busy_samples']} busy samples of "
            f"{p['samples']} (waits: {waits})\n"
        )
        out.append("| # | self % | function (file) |")
        out.append("|---|---|---|")
        for i, (fn, _, pc) in enumerate(p["self"][:15], 1):
            out.append(f"| {i} | {pc} | `{fn}` |")
        out.append("")
        if p.get("components"):
            out.append("| component (each busy sample counted once) | % |")
            out.append("|---|---|")
            for name, pc in p["components"]:
                out.append(f"| {name} | {pc} |")
            out.append("")
        out.append(
            "inclusive (Python frames, % of busy samples): "
            + "; ".join(
                f"`{fn}` {pc}"
                for fn, _, pc in p["total"]
                if "twisted_agenda" in fn or "shlex" in fn or "json" in fn
            )[:3000]
        )
        out.append("")
    if profs.get("error"):
        out.append(f"- profile: **{profs['error']}**\n")
    return "\n".join(out)


def prepare_code(tmp: str) -> dict:
    """Export the committed HEAD (default) so the nodes run a known version.

    BENCH_CODE=worktree runs the working tree as it is instead (uncommitted
    edits included). Either way the commit and the dirty files are recorded.
    """
    repo = str(BENCH.parent)

    def git(*a):
        return subprocess.run(
            ["git", "-C", repo, *a],
            capture_output=True,
            text=True,
        ).stdout.rstrip("\n")

    head = git("rev-parse", "HEAD")
    dirty = [
        ln[3:]
        for ln in git(
            "status", "--porcelain", "--", "twisted_agenda", "twisted"
        ).splitlines()
    ]
    mode = os.environ.get("BENCH_CODE", "head")
    info = {
        "commit": head,
        "subject": git("log", "-1", "--format=%s"),
        "mode": mode,
        "uncommitted_server_files": dirty,
    }
    if mode == "head" and head:
        dest = Path(tmp) / "code"
        dest.mkdir()
        archive = subprocess.run(
            ["git", "-C", repo, "archive", "HEAD", "twisted_agenda", "twisted"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        procs.CODE_ROOT = dest
        info["uncommitted_server_files_ignored"] = True
    else:
        procs.CODE_ROOT = Path(repo)
    info["root"] = str(procs.CODE_ROOT)
    return info


def tables_path(out: str) -> Path:
    """bench/tables.md for the default results file, else <out>.md beside it."""
    if Path(out).resolve() == (BENCH / "results.json").resolve():
        return BENCH / "tables.md"
    return Path(out).with_suffix(".md")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help="agenda redis etcd etcd-grpc redis-benchmark replication "
        "profile ablation fsync",
    )
    ap.add_argument("--out", default=str(BENCH / "results.json"))
    ap.add_argument(
        "--render",
        action="store_true",
        help="only rebuild bench/tables.md from --out and the "
        "profile-*.collapsed.txt.gz files",
    )
    args = ap.parse_args()
    if args.render:
        res = json.loads(Path(args.out).read_text())
        for op, holder in (
            ("write", res.get("profile")),
            ("read", res.get("profile")),
            ("leader", res.get("replication")),
        ):
            key = "leader_profile" if op == "leader" else op
            gz = BENCH / f"profile-{op}.collapsed.txt.gz"
            if holder and holder.get(key) and gz.exists():
                tmp_raw = Path(tempfile.mkdtemp()) / "raw.txt"
                with gzip.open(gz) as f:
                    tmp_raw.write_bytes(f.read())
                holder[key].update(parse_raw_profile(tmp_raw))
        Path(args.out).write_text(json.dumps(res, indent=1))
        text = tables(res)
        tables_path(args.out).write_text(text + "\n")
        print(text)
        return 0
    want = set(args.only) or {
        "fsync",
        "agenda",
        "redis",
        "etcd",
        "etcd-grpc",
        "redis-benchmark",
        "replication",
        "profile",
        "ablation",
    }
    tmp = tempfile.mkdtemp(prefix="agenda-bench-", dir=os.environ.get("BENCH_TMP"))
    res: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "duration_s": DURATION,
        "warmup_s": WARMUP,
    }
    t0 = time.monotonic()
    res["code"] = prepare_code(tmp)
    log(f"agenda code under test: {res['code']}")
    try:
        if "fsync" in want:
            res["machine"] = machine_info(tmp)
            log(f"machine: {res['machine']}")
        res["single"] = []
        for system in ("agenda", "redis", "etcd", "etcd-grpc"):
            if system in want:
                if system.startswith("etcd") and not shutil.which("etcd"):
                    res["single"].append(
                        {"system": system, "error": "etcd not installed"}
                    )
                    continue
                res["single"].append(single_node(system, tmp))
        if "replication" in want:
            res["replication"] = replication(tmp)
        if "redis-benchmark" in want and shutil.which("redis-server"):
            res["redis_benchmark"] = redis_benchmark(tmp)
        if "profile" in want:
            res["profile"] = profile(tmp)
        if "ablation" in want:
            res["ablation"] = ablation(tmp)
        if "fsync" in want:
            res["fsync_per_s_end"] = fsync_rate(tmp)
    finally:
        res["elapsed_s"] = round(time.monotonic() - t0, 1)
        shutil.rmtree(tmp, ignore_errors=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
        text = tables(res)
        tables_path(args.out).write_text(text + "\n")
        print(text)
        log(f"done in {res['elapsed_s']} s; raw numbers in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
