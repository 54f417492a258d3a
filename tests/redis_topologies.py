"""Real Redis topologies for tests: a 6-node Cluster, a Sentinel group, a TLS server.

Every process listens on 127.0.0.1 only, on a free port, and is stopped by ``cleanup()``.
Waits are polls with a deadline, never blind sleeps.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.redis_server import RedisServer, free_port

#: Failure detection on the test cluster and sentinels: short, so failover tests are quick.
NODE_TIMEOUT_MS = 1000


def poll_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` every 50 ms until it is true; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _client(port: int, **kwargs: object) -> redis.Redis:
    return redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=5, **kwargs)  # type: ignore[arg-type]


class RedisClusterProcesses:
    """3 primaries + 3 replicas on free ports, created with ``redis-cli --cluster create``."""

    def __init__(self, primaries: int = 3, replicas: int = 1) -> None:
        self.nodes = [RedisServer(*self.node_args()) for _ in range(primaries * (1 + replicas))]
        self.replicas = replicas

    @staticmethod
    def node_args() -> list[str]:
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # An explicit bus port: the default (port + 10000) may be taken or too high.
            "--cluster-port", str(free_port()),
            # A replica may be promoted even if it lost contact a while ago: the test kills a
            # primary on purpose, and availability is what it measures.
            "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])
        return f"redis+cluster://{seeds}"

    def start(self) -> RedisClusterProcesses:
        try:
            for node in self.nodes:
                node.start()
            cli = shutil.which("redis-cli")
            if cli is None:
                raise RuntimeError("redis-cli is not installed")
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                [cli, "--cluster", "create", *addresses,
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.cleanup()
            raise
        return self

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Every live node says ``cluster_state:ok`` and agrees every slot is served."""

        def ok() -> bool:
            for node in self.live_nodes():
                with _client(node.port) as c:
                    info = c.execute_command("CLUSTER INFO")  # parsed into a dict
                    if info["cluster_state"] != "ok" or info["cluster_slots_ok"] != "16384":
                        return False
            return True

        poll_until(ok, "cluster_state:ok", timeout)

    def live_nodes(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def node_for_slot(self, slot: int) -> RedisServer:
        """The live node that is primary for ``slot`` right now."""
        for node in self.live_nodes():
            with _client(node.port) as c:
                role = c.execute_command("ROLE")[0]
                if role != b"master":
                    continue
                for start, end, owner, *_ in c.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end and int(owner[1]) == node.port:
                        return node
        raise RuntimeError(f"no live primary for slot {slot}")

    def primaries(self) -> list[RedisServer]:
        found = []
        for node in self.live_nodes():
            with _client(node.port) as c:
                if c.execute_command("ROLE")[0] == b"master":
                    found.append(node)
        return found

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class SentinelServer:
    """One ``redis-server --sentinel`` process monitoring ``master_name``."""

    def __init__(self, master_port: int, master_name: str = "calmq", quorum: int = 2) -> None:
        binary = shutil.which("redis-sentinel") or shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="calmq-sentinel-"))
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"logfile {self.dir / 'sentinel.log'}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {master_name} {NODE_TIMEOUT_MS}\n"
            f"sentinel failover-timeout {master_name} 5000\n"
            f"sentinel parallel-syncs {master_name} 1\n"
        )
        self.args = [binary, str(conf), "--sentinel"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelServer:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        poll_until(lambda: bool(_client(self.port).ping()), f"sentinel on {self.port}", 15)
        return self

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelGroup:
    """1 primary + 1 replica + 3 sentinels (quorum 2)."""

    master_name = "calmq"

    def __init__(self) -> None:
        self.primary = RedisServer()
        self.replica = RedisServer("--replicaof", "127.0.0.1", str(self.primary.port))
        self.sentinels = [SentinelServer(self.primary.port, self.master_name) for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def start(self) -> SentinelGroup:
        try:
            self.primary.start()
            self.replica.start()
            poll_until(self._replica_synced, "replica in sync", 30)
            for sentinel in self.sentinels:
                sentinel.start()
            poll_until(self._sentinels_agree, "sentinels see each other and the replica", 30)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _replica_synced(self) -> bool:
        info = _client(self.replica.port).info("replication")
        return bool(info.get("master_link_status") == "up")

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            state = _client(sentinel.port).sentinel_master(self.master_name)
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    def master_port(self) -> int:
        """The primary port the first live sentinel reports."""
        for sentinel in self.sentinels:
            try:
                _host, port = _client(sentinel.port).sentinel_get_master_addr_by_name(
                    self.master_name
                )
                return int(port)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answered")

    def cleanup(self) -> None:
        for sentinel in self.sentinels:
            sentinel.cleanup()
        self.replica.cleanup()
        self.primary.cleanup()


class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1, made with ``openssl``."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.dir = directory
        self.ca_cert = directory / f"{name}.crt"
        self.ca_key = directory / f"{name}.key"
        self.server_cert = directory / f"{name}-server.crt"
        self.server_key = directory / f"{name}-server.key"

    def create(self) -> TlsFiles:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("openssl is not installed")
        ext = self.dir / "san.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        csr = self.dir / "server.csr"
        steps = [
            ["req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "2",
             "-subj", "/CN=calmq test CA", "-keyout", self.ca_key, "-out", self.ca_cert],
            ["req", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", "/CN=127.0.0.1",
             "-keyout", self.server_key, "-out", csr],
            ["x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
             "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", self.server_cert],
        ]  # fmt: skip
        for step in steps:
            subprocess.run([openssl, *map(str, step)], check=True, capture_output=True, timeout=60)
        return self


def tls_server(files: TlsFiles) -> RedisServer:
    """A TLS-only redis-server (``--port 0``) that does not ask clients for certificates."""
    server = RedisServer(
        "--tls-port", "0",  # replaced below
        "--port", "0",
        "--tls-cert-file", str(files.server_cert),
        "--tls-key-file", str(files.server_key),
        "--tls-ca-cert-file", str(files.ca_cert),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    tls_port = server.port
    # RedisServer put "--port <free port>" first; ours (--port 0) comes later and wins.
    server.args[server.args.index("--tls-port") + 1] = str(tls_port)
    return server


def start_tls_server(server: RedisServer, files: TlsFiles, timeout: float = 10.0) -> None:
    """Start ``server`` and wait until it answers a TLS PING."""
    server.proc = subprocess.Popen(
        server.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def up() -> bool:
        with redis.Redis(
            port=server.port, ssl=True, ssl_ca_certs=str(files.ca_cert), socket_timeout=1
        ) as c:
            return bool(c.ping())

    try:
        poll_until(up, "TLS redis-server", timeout)
    except RuntimeError:
        log = (server.dir / "redis.log").read_text(errors="replace")[-2000:]
        server.kill()
        raise RuntimeError(f"TLS redis-server did not start: {log}") from None
