"""Start and stop private redis-server processes for tests (never the machine's own Redis)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()
_picker = random.Random()


def free_port() -> int:
    """A TCP port nobody listens on right now, never handed out twice in this process.

    Not the OS's pick (``bind(0)``): that comes from the ephemeral range, where any outgoing
    connection's source port may land on it before the server we start for it binds (CI once
    failed so). Ports below the ephemeral range are only taken by listeners, and the bind test
    skips those.
    """
    low, _ = _ephemeral_range()
    first, last = (20000, low - 1) if low > 21000 else (low - 1000, low - 1)
    for _ in range(1000):
        port = _picker.randint(first, last)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port between {first} and {last}")


class PortTaken(RuntimeError):
    """redis-server could not bind its port (or cluster bus port)."""


class RedisServer:
    """One redis-server process on a free loopback port, persistence off unless asked."""

    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.auto_port = port is None
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="calmq-redis-"))
        self.args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            *extra_args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        for _ in range(3):
            try:
                return self._start_once(timeout)
            except PortTaken:
                if not self.auto_port:
                    raise
                self._move_ports()  # someone else bound it between the pick and the start
        return self._start_once(timeout)

    def _move_ports(self) -> None:
        self.port = free_port()
        for flag in ("--port", "--cluster-port"):
            if flag in self.args:
                self.args[self.args.index(flag) + 1] = str(
                    self.port if flag == "--port" else free_port()
                )

    def _start_once(self, timeout: float) -> RedisServer:
        (self.dir / "redis.log").unlink(missing_ok=True)  # judge this attempt's log only
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.AuthenticationError:
                    return self  # up, and asking for a password as configured
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                        self.kill()  # never leave a half-started server behind
                        if "Address already in use" in log:
                            raise PortTaken(log) from None
                        raise RuntimeError(f"redis-server did not start: {log}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


def unique_prefix(name: str) -> str:
    """A key prefix no other test uses (pid + counter + test name, no braces)."""
    unique_prefix.counter += 1  # type: ignore[attr-defined]
    safe = "".join(c if c.isalnum() else "-" for c in name)[-40:]
    return f"t{os.getpid()}-{unique_prefix.counter}-{safe}"  # type: ignore[attr-defined]


unique_prefix.counter = 0  # type: ignore[attr-defined]
