"""Private PostgreSQL and Redis servers on free ports, for tests that stop, kill or freeze them.

The shared services on the standard ports are never touched. Binaries missing: the test is
skipped locally and fails under CI=true (``tests.conftest.backend_missing``)::

    with PgServer() as pg, RedisServer() as redis:
        url = pg.url
        pg.stop(mode="immediate")   # crash: no checkpoint, WAL replay at the next start
        pg.start()
        redis.shutdown_nosave()     # forget every key, as a Redis without persistence does
        redis.start()
        redis.freeze(); redis.thaw()

PostgreSQL refuses to run as root: as root, its data directory belongs to the ``postgres``
system user and every PostgreSQL command runs through ``runuser -u postgres --``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Self

from tests.conftest import backend_missing
from tests.daemon_proc import free_port, wait_for

PG_BIN = Path(os.environ.get("WFSCHED_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = os.environ.get("WFSCHED_TEST_REDIS_SERVER", "redis-server")


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class PgServer:
    """A PostgreSQL 15 cluster in a temp dir, trust auth, listening on 127.0.0.1:port."""

    def __init__(
        self,
        port: int | None = None,
        *,
        durable: bool = False,
        settings: dict[str, str] | None = None,
    ) -> None:
        """:param durable: keep fsync on (benchmarks); tests trade it for speed.
        :param settings: extra server settings, passed as ``-c name=value``."""
        if not (PG_BIN / "initdb").exists():
            backend_missing(f"PostgreSQL binaries in {PG_BIN}")
        self.port = port or free_port()
        self.settings = {"listen_addresses": "127.0.0.1", "max_connections": "200"}
        if not durable:
            # Survives a killed server (the kernel keeps the WAL), not a killed machine.
            self.settings |= {"fsync": "off", "full_page_writes": "off"}
        self.settings |= settings or {}
        self.as_root = os.geteuid() == 0
        if self.as_root and shutil.which("runuser") is None:
            backend_missing("runuser (to run PostgreSQL as the postgres user)")
        self.dir = Path(tempfile.mkdtemp(prefix="wfsched-pg-"))
        self.data = self.dir / "data"
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._pg(
            [
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, args: list[str], timeout: float = 60) -> str:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{self.logs()[-3000:]}"
            )
        return result.stdout

    def logs(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Self:
        """Start (after a crash: recover first) and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.dir} " + " ".join(
            f"-c {name}={value}" for name, value in self.settings.items()
        )
        self._pg(
            [
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            timeout=90,
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: ``immediate`` is a crash (no shutdown checkpoint)."""
        if self.pid() is not None:
            self._pg(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def pid(self) -> int | None:
        """The postmaster's pid, or None when the server is not running."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def signal_all(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the postmaster and every backend (SIGSTOP freezes the server)."""
        pid = self.pid()
        if pid is None:
            raise RuntimeError("PostgreSQL is not running")
        for target in [pid, *_children(pid)]:
            try:
                os.kill(target, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (then ``start`` recovers)."""
        pid = self.pid()
        if pid is None:
            return
        self.signal_all(signal.SIGKILL)
        wait_for(lambda: self.pid() is None, 30, message="PostgreSQL to die")

    def close(self) -> None:
        try:
            if self.pid() is not None:
                self.signal_all(signal.SIGCONT)
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisServer:
    """A ``redis-server`` child without persistence on 127.0.0.1:port."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which(REDIS_SERVER)
        if binary is None:
            backend_missing(f"{REDIS_SERVER} binary")
        self.binary = str(binary)
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wfsched-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        """Start on the same port as before and wait until it answers PING."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def ping() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"redis-server exited {self.proc.returncode}:\n"
                    + (self.dir / "redis.log").read_text(errors="replace")
                )
            # No retries: redis-py's default backoff would sleep past the server's start.
            client = redis.Redis(
                port=self.port,
                socket_timeout=1,
                socket_connect_timeout=1,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                return bool(client.ping())
            finally:
                client.close()

        wait_for(ping, 20, interval=0.02, message=f"redis-server on port {self.port}")
        return self

    def shutdown_nosave(self) -> None:
        """``SHUTDOWN NOSAVE``: the server exits and forgets every key."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        finally:
            client.close()
        self._wait_exit()

    def _wait_exit(self) -> None:
        if self.proc is not None:
            self.proc.wait(30)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL the server."""
        if self.proc is not None:
            self.proc.kill()
            self._wait_exit()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        try:
            if self.proc is not None:
                self.proc.send_signal(signal.SIGCONT)
                self.kill()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
