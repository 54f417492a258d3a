"""The chaos scenarios, each a function that runs one attack and returns a :class:`Result`.

Sizes are parameters: the tests in ``test_chaos.py`` run a short version of each in the normal
suite and the full version under ``-m chaos`` (``make chaos``). Scenario functions assert
the invariants that must hold (0 lost, clear errors); the figures go in the Result either way.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

from calmq import JobState
from tests.chaos import jobs
from tests.chaos.harness import (
    QUEUE,
    Fleet,
    Result,
    Target,
    check,
    fleet,
    job_ids,
    produce,
    sampling,
    wait_done,
    wait_until,
)
from tests.freezing import freeze_between_writes


def _finish(result: Result, started: float, ok: bool) -> Result:
    result.seconds = time.monotonic() - started
    result.passed = ok
    return result


# ----------------------------------------------------------------------------- 1. load
def load(target: Target, work: Path, n: int, *, processes: int = 4,
         concurrency: int = 16) -> Result:  # fmt: skip
    """n jobs through ``processes`` worker processes while producers enqueue at full speed."""
    started = time.monotonic()
    logs = work / "logs"
    logs.mkdir()
    ids = job_ids("load", n)
    app = target.app()
    try:
        with sampling(target) as sampler, fleet(
            target, work / "worker.log", "--processes", str(processes),
            "--concurrency", str(concurrency), "--lease", "10",
        ):  # fmt: skip
            t0 = time.monotonic()
            produced = produce(app, ids, logs, threads=4, batch=20, deadline=max(120, n / 200))
            enqueue_s = time.monotonic() - t0
            wait_done(logs, produced.acked, timeout=max(120, n / 150))
            drain_s = time.monotonic() - t0
            peak = sampler.peak if sampler else None
            c = check(target, logs, produced.acked)  # workers still up: expired leases rescued
    finally:
        app.close()
    result = Result("1 load", target.kind, n, len(c.lost), c.duplicates, c.stuck, peak,
                    notes=f"{n / drain_s:.0f} jobs/s end to end; enqueue {n / enqueue_s:.0f}/s;"
                    f" refusals {dict(produced.errors) or 0}")  # fmt: skip
    result.extra = {"enqueue_s": enqueue_s, "drain_s": drain_s, "errors": dict(produced.errors)}
    assert len(produced.acked) == n, f"producers gave up on {n - len(produced.acked)} jobs"
    assert not c.lost, f"lost {len(c.lost)}: {sorted(c.lost)[:5]}"
    return _finish(result, started, not c.lost and c.stuck == 0)


# ----------------------------------------------------------------------------- 2. SIGKILL
def sigkill(target: Target, work: Path, n: int, *, max_kills: int = 1000,
            processes: int = 4, job_seconds: float = 0.0) -> Result:  # fmt: skip
    """SIGKILL a random worker process every 1-3 s while n jobs run under a supervisor."""
    started = time.monotonic()
    logs = work / "logs"
    logs.mkdir()
    ids = job_ids("kill", n)
    app = target.app()
    rng = random.Random(7)
    kills = 0
    try:
        with sampling(target) as sampler, fleet(
            target, work / "worker.log", "--processes", str(processes), "--concurrency", "8",
            "--lease", "2",
        ) as f:  # fmt: skip
            wait_until(lambda: len(f.workers()) == processes, 30, "worker processes")
            done = threading.Event()
            producer = threading.Thread(
                target=lambda: (
                    produced_box.append(
                        produce(app, ids, logs, threads=2, batch=10, deadline=300,
                                sleep=job_seconds)
                    ),
                    done.set(),
                ),
                daemon=True,
            )  # fmt: skip
            produced_box: list = []
            producer.start()
            want = set(ids)
            deadline = time.monotonic() + max(180, n / 50)
            next_kill = time.monotonic() + rng.uniform(1, 3)
            while time.monotonic() < deadline:
                if done.is_set() and want <= set(jobs.read_ids(logs)):
                    break
                if time.monotonic() >= next_kill and kills < max_kills:
                    victims = f.workers()
                    if victims:
                        with contextlib.suppress(psutil.Error):
                            rng.choice(victims).kill()
                            kills += 1
                    next_kill = time.monotonic() + rng.uniform(1, 3)
                time.sleep(0.1)
            producer.join(timeout=60)
            produced = produced_box[0]
            wait_done(logs, produced.acked, timeout=60)
            peak = sampler.peak if sampler else None
            restarts = f.output().count("restarting in")
            c = check(target, logs, produced.acked, settle=30)
    finally:
        app.close()
    result = Result("2 SIGKILL workers", target.kind, n, len(c.lost), c.duplicates, c.stuck,
                    peak, notes=f"{kills} SIGKILLs, {restarts} supervisor restarts,"
                    " lease 2 s")  # fmt: skip
    result.extra = {"kills": kills, "restarts": restarts}
    assert not c.lost, f"lost {len(c.lost)}"
    return _finish(result, started, not c.lost and c.stuck == 0)


# ----------------------------------------------------------------------------- 3. SIGSTOP
def sigstop(target: Target, work: Path, *, rounds: int = 1, background: int = 200) -> Result:
    """Freeze a worker past its lease mid-job, let another worker rescue and finish the job,
    then SIGCONT the frozen one: its completion must be refused (fencing)."""
    started = time.monotonic()
    logs = work / "logs"
    logs.mkdir()
    app = target.app()
    refused = 0
    recoveries: list[float] = []
    acked: set[str] = set()
    try:
        with sampling(target) as sampler:
            for r in range(rounds):
                jid = f"stop-{r}"
                app.tasks["chaos.work"].options(job_id=jid).enqueue(str(logs), jid, 1.5)
                acked.add(jid)
                stale = Fleet(target, work / f"stale-{r}.log", "--lease", "1", "--concurrency", "1")
                fresh: Fleet | None = None
                try:
                    wait_until(lambda: jid in jobs.read_by_pid(logs, "attempts").get(stale.pid, []),  # noqa: B023
                               30, "the job to start on the soon-frozen worker")  # fmt: skip
                    freeze_between_writes(stale.proc, target.url)
                    frozen_at = time.monotonic()
                    fresh = Fleet(target, work / f"fresh-{r}.log", "--lease", "10")
                    bg = job_ids(f"bg{r}", background)
                    acked |= produce(app, bg, logs, threads=2, batch=10).acked
                    wait_until(lambda: jid in jobs.read_by_pid(logs).get(fresh.pid, []), 30,  # noqa: B023
                               "the new owner to finish the rescued job")  # fmt: skip
                    recoveries.append(time.monotonic() - frozen_at)
                    wait_until(
                        lambda: _state(app, jid) == JobState.SUCCEEDED,  # noqa: B023
                        10,
                        "new owner's ack",
                    )
                    stale.proc.send_signal(signal.SIGCONT)
                    wait_until(lambda: "no longer ours" in stale.output()  # noqa: B023
                               or "was lost" in stale.output(), 30,  # noqa: B023
                               "the stale worker to notice its lease is gone")  # fmt: skip
                    refused += 1
                    assert _state(app, jid) == JobState.SUCCEEDED
                    wait_done(logs, acked, 60)
                finally:
                    stale.stop()
                    if fresh is not None:
                        fresh.stop()
            peak = sampler.peak if sampler else None
        c = check(target, logs, acked)
    finally:
        app.close()
    result = Result("3 SIGSTOP past lease (fencing)", target.kind, len(acked), len(c.lost),
                    c.duplicates, c.stuck, peak, max(recoveries),
                    notes=f"{rounds} freezes, {refused} stale acks refused; lease 1 s")  # fmt: skip
    assert not c.lost
    return _finish(result, started, not c.lost and c.stuck == 0 and refused == rounds)


def _state(app, jid: str) -> JobState | None:  # type: ignore[no-untyped-def]
    info = app.store.get_job(QUEUE, jid)
    return info.state if info else None


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


# ----------------------------------------------------------------------------- 4. Redis crash
def redis_crash(work: Path, n: int, *, fsync: str, outage: float = 1.0) -> Result:
    """kill -9 Redis once a third of n jobs were acknowledged, restart it on the same port
    after ``outage`` s. ``fsync`` is 'everysec', 'always' or 'off' (no persistence: the run
    must show loss, which proves the checker sees it)."""
    started = time.monotonic()
    args = () if fsync == "off" else ("--appendonly", "yes", "--appendfsync", fsync)
    target = Target("redis", work, redis_args=args)
    assert target.server is not None
    logs = work / "logs"
    logs.mkdir()
    ids = job_ids("crash", n)
    app = target.app()
    from tests.chaos.harness import Produced

    out = Produced()
    marks: dict[str, float] = {}
    try:
        with sampling(target) as sampler, fleet(
            target, work / "worker.log", "--processes", "2", "--concurrency", "4", "--lease", "2",
        ):  # fmt: skip
            producer = threading.Thread(
                target=produce, args=(app, ids, logs),
                kwargs={"threads": 4, "batch": 1, "deadline": 120, "out": out, "sleep": 0.005},
                daemon=True,
            )  # fmt: skip
            producer.start()
            wait_until(lambda: len(out.acked) >= n // 3, 120, "a third of the jobs acknowledged")
            target.server.kill()
            marks["killed"] = time.monotonic()
            done_at_kill = len(jobs.read_ids(logs))
            time.sleep(outage)  # the outage itself: nothing to poll for
            target.server.start()
            marks["restarted"] = time.monotonic()
            done_now = lambda: len(jobs.read_ids(logs))  # noqa: E731
            worker_rec = wait_until(lambda: done_now() > done_at_kill + 10, 60,
                                    "workers to complete jobs after the restart")  # fmt: skip
            producer.join(timeout=180)
            assert not producer.is_alive(), "producers did not finish"
            ok_after = [s + d for s, d, ok in out.latencies if ok and s >= marks["restarted"]]
            producer_rec = (min(ok_after) - marks["restarted"]) if ok_after else None
            if fsync != "off":
                wait_done(logs, out.acked, 120)
            # Off: the backlog died with the server; let the workers drain what survived.
            c = check(target, logs, out.acked, settle=120)
            peak = sampler.peak if sampler else None
    finally:
        app.close()
        target.close()
    recovery = max(worker_rec, producer_rec or 0.0)
    refusals = dict(out.errors)
    result = Result(f"4 Redis kill -9 (AOF {fsync})", "redis", len(out.acked), len(c.lost),
                    c.duplicates, c.stuck, peak, recovery,
                    notes=f"outage {outage:.0f} s; producers refused {sum(refusals.values())}x"
                    f" {refusals} and retried with the same ids; worker recovery"
                    f" {worker_rec:.2f} s, producer {producer_rec or 0:.2f} s")  # fmt: skip
    result.extra = {"refusals": refusals, "gave_up": out.gave_up}
    assert refusals, "producers never saw QueueUnavailable during the outage"
    assert out.gave_up == 0
    if fsync == "off":
        assert c.lost, "persistence off must lose the backlog: the checker failed to see loss"
        return _finish(result, started, bool(c.lost))
    assert not c.lost, f"lost {len(c.lost)} acknowledged jobs with AOF {fsync}"
    return _finish(result, started, not c.lost and c.stuck == 0)


# ----------------------------------------------------------------------------- 5. overload
class _Hammer:
    """Producer threads enqueueing fresh ids as fast as they can until stopped; a refused id
    is retried (same id) once the trouble is over. Records every call's latency and result."""

    def __init__(self, app, log_dir: Path, threads: int) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.log_dir = str(log_dir)
        self.calls: list[tuple[float, float, str]] = []  # start, seconds, "ok"/"new"/reason
        self.pending: list[str] = []
        self.acked: dict[str, bool] = {}  # id -> created on the acknowledged call
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.counter = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _next_id(self) -> str:
        with self.lock:
            self.counter += 1
            return f"ham-{self.counter:07d}"

    def _run(self) -> None:
        from calmq import QueueUnavailable

        task = self.app.tasks["chaos.record"]
        for _ in range(200_000):  # bounded
            if self.stop.is_set():
                return
            jid = self._next_id()
            t0 = time.monotonic()
            try:
                job = task.options(job_id=jid).enqueue(self.log_dir, jid)
                outcome = "ok"
                with self.lock:
                    self.acked[jid] = job.created
            except QueueUnavailable as exc:
                outcome = exc.reason
                with self.lock:
                    self.pending.append(jid)
            with self.lock:
                self.calls.append((t0, time.monotonic() - t0, outcome))
            time.sleep(0.002)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> int:
        """Stop, then retry every refused id with the same id; return how many of those the
        store already had (the ambiguous timeouts that had been applied)."""
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        task = self.app.tasks["chaos.record"]
        already = 0
        for jid in self.pending:
            job = task.options(job_id=jid).enqueue(self.log_dir, jid)
            self.acked[jid] = job.created
            already += not job.created
        return already


def _bound_check(hammer: _Hammer, bound: float, tolerance: float = 0.25) -> tuple[float, int]:
    worst = max((d for _, d, _ in hammer.calls), default=0.0)
    refused = sum(1 for *_, o in hammer.calls if o != "ok")
    assert worst <= bound + tolerance, f"an enqueue took {worst:.3f}s, over the bound {bound}s"
    return worst, refused


def _drain_and_check(target: Target, work: Path, logs: Path, acked: set[str]):  # type: ignore[no-untyped-def]
    with fleet(target, work / "drain.log", "--burst", "--concurrency", "32") as f:
        f.proc.wait(timeout=120)
    return check(target, logs, acked)


def overload(work: Path, kind: str, *, fault_seconds: float = 2.0, threads: int = 8) -> Result:
    """Redis at maxclients, asleep (DEBUG SLEEP) or paused (CLIENT PAUSE WRITE); or the SQLite
    file locked by another writer. Producers must get QueueUnavailable within the bound, the
    server's connections must return to the baseline, and no job id may be stored twice."""
    started = time.monotonic()
    store = "sqlite" if kind == "sqlite-locked" else "redis"
    target = Target(store, work, redis_args=("--enable-debug-command", "local"))
    logs = work / "logs"
    logs.mkdir()
    held: list = []
    try:
        baseline = target.connected_clients()
        app = target.app()
        bound = app.settings.enqueue_bound
        if store == "sqlite":
            bound = max(bound, app.settings.sqlite_busy_timeout)
        hammer = _Hammer(app, logs, threads)
        with sampling(target) as sampler:
            app.tasks["chaos.record"].options(job_id="warm").enqueue(str(logs), "warm")
            if kind == "maxclients":
                # Fill the server first: connections the pool already holds keep working, so
                # the producers must need new ones to meet the limit.
                t_fault = time.monotonic()
                fault = _start_fault(target, kind, fault_seconds, held)
            hammer.start()
            wait_until(lambda: len(hammer.calls) > 50, 10, "producers running")
            if kind != "maxclients":
                t_fault = time.monotonic()
                fault = _start_fault(target, kind, fault_seconds, held)
            wait_until(lambda: time.monotonic() - t_fault >= fault_seconds, fault_seconds + 1,
                       "the fault period")  # fmt: skip
            _end_fault(kind, fault, held)
            t_end = time.monotonic()
            wait_until(lambda: any(s > t_end and o == "ok" for s, _, o in list(hammer.calls)),
                       10, "an enqueue to succeed after the fault")  # fmt: skip
            recovery = (
                min(s + d for s, d, o in list(hammer.calls) if s > t_end and o == "ok") - t_end
            )
            already = hammer.finish()
            worst, refused = _bound_check(hammer, bound)
            app.close()
            peak = sampler.peak if sampler else None
        after = None
        if baseline is not None:
            wait_until(lambda: target.connected_clients() <= baseline, 10,
                       "server connections back to the baseline")  # fmt: skip
            after = target.connected_clients()
        acked = set(hammer.acked) | {"warm"}
        c = _drain_and_check(target, work, logs, acked)
        stored_twice = c.duplicates
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
        target.close()
    reasons = sorted({o for *_, o in hammer.calls if o != "ok"})
    result = Result(f"5 {kind}", store, len(acked), len(c.lost), c.duplicates, c.stuck, peak,
                    recovery, notes=f"{refused} enqueues refused ({', '.join(reasons)}), slowest"
                    f" call {worst:.3f} s (bound {bound} s); {already} timed-out enqueues had been"
                    f" applied and the same-id retry was a no-op; connections"
                    f" {baseline} -> peak {peak} -> {after}")  # fmt: skip
    result.extra = {"worst_s": worst, "refused": refused, "reasons": reasons, "baseline": baseline}
    assert refused > 0, "the fault never reached the producers"
    assert not c.lost and stored_twice == 0
    return _finish(result, started, not c.lost and c.stuck == 0)


def _start_fault(target: Target, kind: str, seconds: float, held: list):  # type: ignore[no-untyped-def]
    import socket
    import sqlite3

    if kind == "maxclients":
        admin = target.admin()  # kept open: a new connection could not get in to restore
        now = admin.info("clients")["connected_clients"]
        admin.config_set("maxclients", str(now + 6))
        assert target.server is not None
        for _ in range(200):  # fill every remaining slot with idle connections
            sock = socket.create_connection(("127.0.0.1", target.server.port), timeout=2)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(100)
            held.append(sock)
            if reply.startswith(b"-ERR max"):
                break

        def restore() -> None:
            admin.config_set("maxclients", "10000")
            admin.close()

        return restore
    if kind in ("debug-sleep", "client-pause"):
        admin = target.admin()
        if kind == "client-pause":
            admin.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "WRITE")
            admin.close()
            return None

        def sleep() -> None:
            try:
                admin.execute_command("DEBUG", "SLEEP", seconds)
            finally:
                admin.close()

        thread = threading.Thread(target=sleep, daemon=True)
        thread.start()
        return thread
    assert kind == "sqlite-locked"
    conn = sqlite3.connect(target.url.split("///", 1)[1], isolation_level=None, timeout=5)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def _end_fault(kind: str, fault, held: list) -> None:  # type: ignore[no-untyped-def]
    if kind == "maxclients":
        for sock in held:
            sock.close()
        held.clear()
        fault()  # maxclients back to the default
    elif kind == "debug-sleep":
        fault.join(timeout=10)
    elif kind == "sqlite-locked":
        fault.execute("ROLLBACK")
        fault.close()


# ----------------------------------------------------------------------------- 6. partition
class Netns:
    """A network namespace joined to the root namespace by a veth pair with link-local
    addresses of our own (169.254.N.1 here, 169.254.N.2 inside). Removed in close()."""

    def __init__(self) -> None:
        n = random.randrange(100, 250)
        self.name = f"calmqchaos{n}"
        self.root_if, self.ns_if = f"cqc{n}a", f"cqc{n}b"
        self.root_ip, self.ns_ip = f"169.254.{n}.1", f"169.254.{n}.2"
        try:
            _sh("ip", "netns", "add", self.name)
            _sh("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", self.ns_if)
            _sh("ip", "link", "set", self.ns_if, "netns", self.name)
            _sh("ip", "addr", "add", f"{self.root_ip}/30", "dev", self.root_if)
            _sh("ip", "link", "set", self.root_if, "up")
            self.exec("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            self.exec("ip", "link", "set", self.ns_if, "up")
            self.exec("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.name)

    def exec(self, *cmd: str) -> None:
        _sh(*self.prefix, *cmd)

    def cut(self, mode: str) -> None:
        if mode == "link-down":
            _sh("ip", "link", "set", self.root_if, "down")
        else:  # one-way: everything the worker sends towards Redis is dropped
            self.exec("tc", "qdisc", "add", "dev", self.ns_if, "root", "pfifo", "limit", "0")

    def heal(self, mode: str) -> None:
        if mode == "link-down":
            _sh("ip", "link", "set", self.root_if, "up")
        else:
            self.exec("tc", "qdisc", "del", "dev", self.ns_if, "root")

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.root_if], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=20)


def netns_available() -> str | None:
    """None when namespaces and veth pairs can be made here, else the reason they cannot."""
    import os
    import shutil

    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        Netns().close()
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace and veth pair: {exc}"
    return None


def partition(work: Path, *, mode: str = "link-down", background: int = 50) -> Result:
    """A worker in a network namespace loses Redis while running a job: another worker must
    rescue the job after the lease, the partitioned one must stop claiming, and it must work
    normally again once the link is back."""
    started = time.monotonic()
    ns = Netns()
    target: Target | None = None
    a = b = None
    app = None
    try:
        target = Target("redis", work, bind=(ns.root_ip,),
                        redis_args=("--tcp-keepalive", "5", "--protected-mode", "no"))  # fmt: skip
        assert target.server is not None
        logs = work / "logs"
        logs.mkdir()
        app = target.app()
        sampler_cm = sampling(target)
        sampler = sampler_cm.__enter__()
        a = Fleet(target, work / "partitioned.log", "--lease", "2", "--concurrency", "4",
                  prefix=ns.prefix, url=f"redis://{ns.root_ip}:{target.server.port}/0")  # fmt: skip
        wait_until(lambda: "started" in a.output(), 30, "the namespaced worker to start")
        app.tasks["chaos.work"].options(job_id="victim").enqueue(str(logs), "victim", 3.0)
        acked = {"victim"}
        wait_until(lambda: "victim" in jobs.read_by_pid(logs, "attempts").get(a.pid, []), 30,
                   "the victim job to start in the namespace")  # fmt: skip
        ns.cut(mode)
        cut_at = time.monotonic()
        b = Fleet(target, work / "rescuer.log", "--lease", "10", "--concurrency", "8")
        during = job_ids("during", background)
        acked |= produce(app, during, logs, threads=2, batch=5).acked
        wait_until(lambda: "victim" in jobs.read_by_pid(logs).get(b.pid, []), 30,
                   "another worker to rescue and finish the victim")  # fmt: skip
        rescue_s = time.monotonic() - cut_at
        wait_done(logs, acked, 30)
        claimed_while_cut = set(jobs.read_by_pid(logs).get(a.pid, [])) & set(during)
        b.stop()
        b = None
        ns.heal(mode)
        healed_at = time.monotonic()
        after = job_ids("after", background)
        acked |= produce(app, after, logs, threads=2, batch=5).acked
        wait_done(logs, acked, 60)
        wait_until(lambda: bool(set(jobs.read_by_pid(logs).get(a.pid, [])) & set(after)),
                   60, "the partitioned worker to serve again")  # fmt: skip
        recover_s = time.monotonic() - healed_at
        first_after = _first_done_after(logs, a.pid, set(after))
        sampler_cm.__exit__(None, None, None)
        peak = sampler.peak if sampler else None
        c = check(target, logs, acked)
        victim = app.store.get_job(QUEUE, "victim")
        stale_refused = ("no longer ours" in a.output()) or ("was lost" in a.output())
    finally:
        for f in (a, b):
            if f is not None:
                f.stop()
        if app is not None:
            app.close()
        if target is not None:
            target.close()
        ns.close()
    result = Result(f"6 partition ({mode})", "redis", len(acked), len(c.lost), c.duplicates,
                    c.stuck, peak, rescue_s,
                    notes=f"victim rescued and finished by another worker {rescue_s:.1f} s after"
                    f" the cut (lease 2 s); partitioned worker claimed {len(claimed_while_cut)}"
                    f" jobs while cut; served {first_after} of {len(after)} jobs after the link"
                    f" came back (first within {recover_s:.1f} s of it); stale ack"
                    f" refused/abandoned: {stale_refused}")  # fmt: skip
    result.extra = {"healed_at": healed_at, "recover_s": recover_s}
    assert victim is not None and victim.state == JobState.SUCCEEDED
    if mode == "link-down":
        assert not claimed_while_cut, "the partitioned worker completed jobs it could not claim"
    else:
        # One-way, Redis's replies still arrive: the wait the worker sent before the cut is
        # armed at Redis with its claim behind it (Store.wait_then_claim, as BullMQ's BLMOVE
        # and Sidekiq's BRPOPLPUSH), so one claim's worth of jobs (its 3 free slots beside
        # the victim) can still be leased to it and run there, unacknowledged. Nothing
        # beyond that claim (its next waits never reach Redis), and none of them lost.
        assert len(claimed_while_cut) <= 3, (
            f"the partitioned worker completed {len(claimed_while_cut)} jobs: more than the"
            " one claim its wait had armed before the cut"
        )
    assert first_after > 0, "the partitioned worker did not come back"
    assert not c.lost
    return _finish(result, started, not c.lost and c.stuck == 0)


def _first_done_after(logs: Path, pid: int, ids: set[str]) -> int:
    return len(set(jobs.read_by_pid(logs).get(pid, [])) & ids)


# ----------------------------------------------------------------------------- 7. disk full
class Tmpfs:
    def __init__(self, path: Path, size: str) -> None:
        path.mkdir()
        self.path = path
        _sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))

    def fill(self, leave: int) -> Path:
        """Write a ballast file that leaves about ``leave`` bytes free."""
        import os

        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        ballast = self.path / "ballast"
        with open(ballast, "wb") as f:
            f.write(b"\0" * max(0, free - leave))
        return ballast

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=20)


def disk_full(work: Path, store: str, n: int, *, crash_while_full: bool = False) -> Result:
    """The SQLite file, or Redis's AOF directory, on a tiny tmpfs that fills up mid-run:
    producers must get QueueUnavailable with a clear reason, nothing acknowledged may be lost,
    and the store must accept jobs again once space is freed."""
    started = time.monotonic()
    fs = Tmpfs(work / "mnt", "8m")
    target: Target | None = None
    app = None
    notes = ""
    try:
        if store == "sqlite":
            target = Target("sqlite", work, sqlite_path=fs.path / "calmq.sqlite3")
        else:
            target = Target("redis", work, redis_args=(
                "--dir", str(fs.path), "--appendonly", "yes", "--appendfsync", "everysec",
                "--enable-debug-command", "local"))  # fmt: skip
        logs = work / "logs"
        logs.mkdir()
        app = target.app()
        app.tasks["chaos.record"].options(job_id="first").enqueue(str(logs), "first")
        ballast = fs.fill(leave=192 * 1024)
        from tests.chaos.harness import Produced

        out = Produced()
        ids = job_ids("full", n)
        with fleet(target, work / "worker.log", "--concurrency", "4", "--lease", "5"):
            producer = threading.Thread(target=produce, args=(app, ids, logs), kwargs={
                "threads": 2, "batch": 1, "deadline": 120, "pad": 1024, "sleep": 0.02,
                "out": out}, daemon=True)  # fmt: skip
            producer.start()
            wait_until(lambda: sum(out.errors.values()) >= 20, 60, "the disk to fill up")
            full_at = time.monotonic()
            time.sleep(1.0)  # the fault's duration: stay full for a second
            if crash_while_full:
                assert target.server is not None
                target.server.kill()
            ballast.unlink()
            freed_at = time.monotonic()
            if crash_while_full:
                assert target.server is not None
                target.server.start()
            producer.join(timeout=150)
            assert not producer.is_alive()
            ok_after = [s + d for s, d, ok in out.latencies if ok and s >= freed_at]
            recovery = (min(ok_after) - freed_at) if ok_after else None
            try:
                wait_done(logs, out.acked | {"first"}, 20 if crash_while_full else 120)
            except AssertionError:
                if not crash_while_full:
                    raise
            c = check(target, logs, out.acked | {"first"})
        if store == "sqlite":
            import sqlite3

            conn = sqlite3.connect(str(fs.path / "calmq.sqlite3"))
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            conn.close()
            notes = f"integrity_check {integrity}"
            assert integrity == "ok"
        else:
            info = target.admin().info("persistence")
            notes = f"aof_last_write_status {info['aof_last_write_status']}"
    finally:
        if app is not None:
            app.close()
        if target is not None:
            target.close()
        fs.close()
    reasons = dict(out.errors)
    result = Result(f"7 disk full ({'SQLite file' if store == 'sqlite' else 'Redis AOF'}"
                    f"{', kill -9 while full' if crash_while_full else ''})", store,
                    len(out.acked) + 1, len(c.lost), c.duplicates, c.stuck, None, recovery,
                    notes=f"8 MiB tmpfs, 1 KiB payloads; refusals {reasons}; full for"
                    f" {freed_at - full_at:.1f} s before space was freed; {notes}")  # fmt: skip
    result.extra = {"reasons": reasons}
    # busy: SQLite writers queueing behind each other while the disk is full is fine too.
    assert set(reasons) <= {"disk_full", "misconf", "connection", "timeout", "busy"}, reasons
    assert out.gave_up == 0
    if crash_while_full:
        # Redis itself acknowledges the write that hit ENOSPC under everysec (aof.c keeps it
        # in the buffer); a crash before space returns loses it: at most one write per
        # producer thread in flight at that moment (2 here; seen: 1 and 2).
        result.notes += f"; lost ids {sorted(c.lost)} (Redis acked the writes that hit ENOSPC)"
        assert len(c.lost) <= 2, f"lost {len(c.lost)} acknowledged jobs"
        return _finish(result, started, len(c.lost) <= 2 and c.stuck == 0)
    assert not c.lost, f"lost {len(c.lost)} acknowledged jobs"
    return _finish(result, started, not c.lost and c.stuck == 0)


# ----------------------------------------------------------------------------- 8. poison
def poison(target: Target, work: Path, *, normal: int = 200, exit_job: bool = True) -> Result:
    """A job that segfaults its worker, one that os._exit()s it, and one that exhausts memory
    under RLIMIT_AS, among ``normal`` good jobs: the bad ones end dead after their allowed
    deliveries, the good ones all complete, the fleet stays up."""
    started = time.monotonic()
    logs = work / "logs"
    logs.mkdir()
    app = target.app()
    poison_ids = {"segv": "chaos.segfault"}
    if exit_job:
        poison_ids["exit"] = "chaos.exit"
    limit = 1536 << 20
    acked: set[str] = set()
    try:
        with sampling(target) as sampler, fleet(
            target, work / "worker.log", "--processes", "2", "--concurrency", "4", "--lease", "1",
            prefix=("prlimit", f"--as={limit}"),
        ) as f:  # fmt: skip
            # Phase 1: jobs that kill their worker. Phase 2 (separately, so the hog is not
            # taken down by a segfaulting neighbour): a job that exhausts its memory limit.
            for phase, pills in enumerate((poison_ids, {"hog": "chaos.hog"})):
                for jid, task in pills.items():
                    app.tasks[task].options(job_id=jid).enqueue(str(logs), jid)
                ids = job_ids(f"good{phase}", normal // 2)
                acked |= produce(app, ids, logs, threads=2, batch=10, sleep=0.01).acked
                wait_done(logs, acked, 120)
                wait_until(lambda: all(_state(app, j) == JobState.DEAD for j in pills), 120,  # noqa: B023
                           "every poison pill to be dead-lettered")  # fmt: skip
            poison_ids["hog"] = "chaos.hog"
            infos = {j: app.store.get_job(QUEUE, j) for j in poison_ids}
            attempts = {j: jobs.read_ids(logs, "attempts").count(j) for j in poison_ids}
            alive = f.proc.poll() is None
            restarts = f.output().count("restarting in")
            peak = sampler.peak if sampler else None
            c = check(target, logs, acked, expected_dead=len(poison_ids))
    finally:
        app.close()
    errors = {j: (i.error or "")[:60] if i else None for j, i in infos.items()}
    result = Result("8 poison pills", target.kind, len(acked) + len(poison_ids), len(c.lost),
                    c.duplicates, c.stuck, peak,
                    notes=f"deliveries {attempts}; dead reasons {errors}; {restarts} worker"
                    f" restarts; RLIMIT_AS {limit >> 20} MiB")  # fmt: skip
    assert alive, "the supervisor died"
    assert attempts["segv"] == 2 and "lease expired on attempt 2 of 2" in (errors["segv"] or "")
    if exit_job:
        assert attempts["exit"] == 3 and "attempt 3 of 3" in (errors["exit"] or "")
    assert attempts["hog"] == 2 and "MemoryError" in (errors["hog"] or "")
    assert not c.lost
    return _finish(result, started, not c.lost and c.stuck == 0)


# ----------------------------------------------------------------------------- 9. clock skew
def clock_skew(target: Target, work: Path, n: int, *, skew: float = 3600.0) -> Result:
    """Three workers on one store, one with a correct clock, one ``skew`` s ahead and one
    behind (``time.time`` offset in the worker process): nothing may be lost. Redis takes
    every deadline from its own TIME; SQLite reads the clock of the process that writes."""
    started = time.monotonic()
    logs = work / "logs"
    logs.mkdir()
    app = target.app()
    fleets: list[Fleet] = []
    try:
        for name, offset in (("ok", 0.0), ("ahead", skew), ("behind", -skew)):
            fleets.append(Fleet(target, work / f"worker-{name}.log", "--lease", "3",
                                "--concurrency", "4", hooked=True,
                                env={"CHAOS_CLOCK_OFFSET": str(offset)}))  # fmt: skip
        wait_until(lambda: all("started" in f.output() for f in fleets), 30, "three workers")
        acked = produce(app, job_ids("skew", n), logs, threads=2, batch=10, sleep=0.05).acked
        delayed = job_ids("later", 20)
        task = app.tasks["chaos.record"]
        for jid in delayed:
            task.options(job_id=jid, delay=1.0).enqueue(str(logs), jid)
        acked |= set(delayed)
        wait_done(logs, acked, 120)
        c = check(target, logs, acked)
        stale = sum(f.output().count("no longer ours") + f.output().count("was lost")
                    for f in fleets)  # fmt: skip
        rescued = sum(f.output().count("rescued expired leases") for f in fleets)
    finally:
        for f in fleets:
            f.stop()
        app.close()
    result = Result("9 clock skew ±1 h on workers", target.kind, len(acked), len(c.lost),
                    c.duplicates, c.stuck, None,
                    notes=f"3 workers (0, +{skew:.0f} s, -{skew:.0f} s); {rescued} rescue rounds,"
                    f" {stale} stale/lost-lease messages")  # fmt: skip
    assert not c.lost
    return _finish(result, started, not c.lost and c.stuck == 0)


# ----------------------------------------------------------------------------- 10. incident
def incident(
    target: Target,
    work: Path,
    *,
    rate: int,
    before: float = 3.0,
    freeze: float = 5.0,
    after: float = 3.0,
    freeze_in_claim: bool = True,
) -> Result:
    """The incident replayed: ``rate`` web requests/s, each enqueueing one job from a thread
    pool, 16 worker slots (2 processes x 8), and one worker frozen for ``freeze`` s inside a
    claim (SQLite: holding the write lock). Enqueue latency per window, errors, connections."""
    import concurrent.futures

    from calmq import QueueUnavailable

    started = time.monotonic()
    logs = work / "logs"
    logs.mkdir()
    trigger = work / "freeze-now"
    app = target.app()
    calls: list[tuple[float, float, str]] = []
    lock = threading.Lock()
    task = app.tasks["chaos.record"]
    acked: set[str] = set()

    def request(jid: str) -> None:
        t0 = time.monotonic()
        try:
            task.options(job_id=jid).enqueue(str(logs), jid)
            outcome = "ok"
        except QueueUnavailable as exc:
            outcome = exc.reason
        with lock:
            calls.append((t0, time.monotonic() - t0, outcome))
            if outcome == "ok":
                acked.add(jid)

    frozen = Fleet(target, work / "frozen.log", "--concurrency", "8", "--lease", "30",
                   hooked=True, env={"CHAOS_FREEZE_TRIGGER": str(trigger)})  # fmt: skip
    other = Fleet(target, work / "other.log", "--concurrency", "8", "--lease", "30")
    pool = concurrent.futures.ThreadPoolExecutor(64, thread_name_prefix="web")
    marks: dict[str, float] = {}
    try:
        wait_until(lambda: "started" in frozen.output() and "started" in other.output(), 30,
                   "workers")  # fmt: skip
        with sampling(target) as sampler:
            t0 = time.monotonic()
            total = before + freeze + after + 1.5
            n = 0
            while True:  # the dispatcher: one request every 1/rate s, on schedule
                due = t0 + n / rate
                now = time.monotonic()
                if due - t0 > total:
                    break
                if due > now:
                    time.sleep(due - now)
                pool.submit(request, f"web-{n:07d}")
                n += 1
                elapsed = time.monotonic() - t0
                if "freeze_req" not in marks and elapsed >= 1.0 + before:
                    marks["freeze_req"] = time.monotonic()
                    if freeze_in_claim:
                        trigger.touch()
                    else:
                        frozen.proc.send_signal(signal.SIGSTOP)
                if (
                    "freeze_req" in marks
                    and "frozen" not in marks
                    and (psutil.Process(frozen.pid).status() == psutil.STATUS_STOPPED)
                ):
                    marks["frozen"] = time.monotonic()
                if (
                    "frozen" in marks
                    and "thawed" not in marks
                    and (time.monotonic() - marks["frozen"] >= freeze)
                ):
                    frozen.proc.send_signal(signal.SIGCONT)
                    marks["thawed"] = time.monotonic()
            pool.shutdown(wait=True)
            if "thawed" not in marks:
                frozen.proc.send_signal(signal.SIGCONT)
            peak = sampler.peak if sampler else None
        wait_done(logs, acked, 120)
        c = check(target, logs, acked)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        frozen.stop()
        other.stop()
        app.close()
    assert "frozen" in marks and "thawed" in marks, f"the worker never froze: {marks}"
    win = {
        "before": (t0 + 1.0, marks["freeze_req"]),
        "during": (marks["frozen"], marks["thawed"]),
        "after": (marks["thawed"], marks["thawed"] + after),
    }
    stats = {}
    for name, (lo, hi) in win.items():
        lat = [d for s, d, o in calls if lo <= s < hi and o == "ok"]
        errs = sum(1 for s, _, o in calls if lo <= s < hi and o != "ok")
        stats[name] = {"n": len(lat), "p50_ms": 1000 * _pct(lat, 0.5),
                       "p99_ms": 1000 * _pct(lat, 0.99), "errors": errs}  # fmt: skip
    errors = sum(1 for *_, o in calls if o != "ok")
    reasons = sorted({o for *_, o in calls if o != "ok"})
    bound = app.settings.pool_size + 2 * (5 + 1)  # producers' pool + per worker pool 5 + 1
    p99b, p99d = stats["before"]["p99_ms"], stats["during"]["p99_ms"]
    ratio = p99d / p99b if p99b else float("inf")
    # A stall behind the frozen worker lasts the freeze or at least the pool timeout (0.5 s);
    # this 2-core VM's own hiccups reach 10-20 ms, which a 5 ms floor mistook for one.
    latency_ok = p99d <= max(2 * p99b, p99b + 25.0)
    conns_ok = peak is None or peak <= bound
    sent = len(calls)
    achieved = sent / (total)
    result = Result(
        f"10 incident {rate}/s, worker frozen {freeze:.0f} s"
        f" {'inside a claim' if freeze_in_claim else 'while idle'}", target.kind, sent,
        len(c.lost), c.duplicates, c.stuck, peak,
        notes=(f"enqueue p50/p99 ms before {stats['before']['p50_ms']:.2f}/{p99b:.2f}, during"
               f" {stats['during']['p50_ms']:.2f}/{p99d:.2f} (x{ratio:.1f}), after"
               f" {stats['after']['p50_ms']:.2f}/{stats['after']['p99_ms']:.2f}; errors {errors}"
               f" {reasons or ''}; conns peak {peak} (bound {bound}); {achieved:.0f} req/s sent"),
    )  # fmt: skip
    result.extra = {"windows": stats, "errors": errors, "reasons": reasons, "bound": bound}
    assert not c.lost
    return _finish(result, started, latency_ok and errors == 0 and conns_ok and not c.lost)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
