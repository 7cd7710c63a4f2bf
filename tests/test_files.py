"""Files at the edges: store file modes, plugin folder permissions, plugins that exit at import,
a corrupted or unwritable store failing with one clear line, and ``/health`` telling whether
the store can write."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon, wait_for
from wfsched.store.sqlite import SqliteStore

SPEC = 'id = "hello"\n[[triggers]]\ntype = "manual"\nrequire_confirmation = false\n'
PLUGIN = """
from wfsched import BaseTrigger, hookimpl

class Ping(BaseTrigger):
    type = "ping"

@hookimpl
def register_trigger_types(register):
    register(Ping)
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def one_error_line(stderr: str) -> str:
    """The CLI's whole complaint: exactly one line, no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


# store files ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_database_wal_and_shm_are_created_0600_under_umask_022(tmp_path: Path) -> None:
    db = tmp_path / "data" / "wfsched.db"
    db.parent.mkdir()  # the store refuses a missing folder rather than create it
    with umask(0o022):
        store = SqliteStore(f"sqlite:///{db}")
        await store.open()
        try:
            await store.set_cursors([])
            await store.check_writable()
            modes = {p.name: mode(p) for p in db.parent.iterdir() if p.name.startswith("wfsched")}
        finally:
            await store.close()
    assert {"wfsched.db", "wfsched.db-wal", "wfsched.db-shm"} <= modes.keys()
    assert all(m == 0o600 for m in modes.values()), {k: oct(v) for k, v in modes.items()}


@pytest.mark.anyio
async def test_an_existing_world_readable_database_is_tightened_at_open(tmp_path: Path) -> None:
    db = tmp_path / "wfsched.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (a)")
    wal = Path(f"{db}-wal")
    for path in (db, wal, Path(f"{db}-shm")):
        path.chmod(0o644)
    store = SqliteStore(f"sqlite:///{db}")
    await store.open()
    try:
        assert mode(db) == 0o600 and mode(wal) == 0o600
    finally:
        await store.close()
        conn.close()


def serve(d: Daemon) -> subprocess.CompletedProcess[str]:
    """``wfsched serve`` expected to exit by itself (killed after 30 s if it does not)."""
    return subprocess.run(
        [sys.executable, "-m", "wfsched", "serve"],
        check=False,
        cwd=d.workdir,
        env=d.env,
        capture_output=True,
        text=True,
        timeout=30,
    )


# plugins -------------------------------------------------------------------------------------


def plugin_daemon(tmp_path: Path) -> tuple[Daemon, Path]:
    d = Daemon(tmp_path / "w")
    folder = d.workdir / "plugins"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    (folder / "ping.py").write_text(PLUGIN)
    (folder / "ping.py").chmod(0o644)
    return d, folder


def test_a_safe_plugins_folder_loads(tmp_path: Path) -> None:
    d, _ = plugin_daemon(tmp_path)
    assert "ping" in {row["type"] for row in d.cli_json("plugins")}


@pytest.mark.parametrize("target", ["folder", "file"])
def test_a_plugins_folder_or_file_writable_by_others_is_refused(
    tmp_path: Path, target: str
) -> None:
    d, folder = plugin_daemon(tmp_path)
    path = folder if target == "folder" else folder / "ping.py"
    path.chmod(mode(path) | stat.S_IWOTH)
    for command in ("plugins", "list"):
        result = d.cli(command, check=False)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result.stderr)
        assert str(path) in line and f"chmod go-w {path}" in line


def test_serve_refuses_a_group_writable_plugin_file_with_exit_2(tmp_path: Path) -> None:
    d, folder = plugin_daemon(tmp_path)
    (folder / "ping.py").chmod(0o664)
    result = serve(d)
    assert result.returncode == 2, result
    line = one_error_line(result.stderr)
    assert f"chmod go-w {folder / 'ping.py'}" in line


@pytest.mark.parametrize("code", ["sys.exit(0)", "sys.exit(3)", "raise SystemExit"])
def test_a_plugin_exiting_at_import_is_a_load_error_naming_it(tmp_path: Path, code: str) -> None:
    d, folder = plugin_daemon(tmp_path)
    (folder / "quits.py").write_text(f"import sys\n{code}\n")
    result = d.cli("plugins", check=False)
    assert result.returncode == 2, result
    line = one_error_line(result.stderr)
    assert str(folder / "quits.py") in line and "SystemExit" in line
    result = serve(d)
    assert result.returncode == 2, result
    assert str(folder / "quits.py") in one_error_line(result.stderr)


# a broken store ------------------------------------------------------------------------------


def serve_fails_with_one_line(d: Daemon, *needles: str) -> None:
    result = serve(d)
    assert result.returncode == 1, result
    line = one_error_line(result.stderr + result.stdout)
    for needle in needles:
        assert needle in line, line


def check_fails_naming_the_store(d: Daemon, *needles: str) -> None:
    result = d.cli("check", "--json", check=False)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    [store] = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "store"]
    assert store["ok"] is False
    for needle in needles:
        assert needle in store["detail"], store


def test_a_database_of_garbage_fails_serve_and_check_with_one_line(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "w")
    db = d.workdir / "wfsched.db"
    db.write_bytes(os.urandom(64 * 1024))
    serve_fails_with_one_line(d, str(db), "not a database")
    check_fails_naming_the_store(d, str(db), "not a database")


def test_a_truncated_database_fails_serve_and_check_with_one_line(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "w")
    spec = d.workdir / "hello.toml"
    spec.write_text(SPEC)
    d.cli("deploy", str(spec))
    db = d.workdir / "wfsched.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    # Losing only the last page leaves the schema readable: SQLite itself would notice only
    # when a query reaches that page.
    with db.open("r+b") as handle:
        handle.truncate(db.stat().st_size - 4096)
    serve_fails_with_one_line(d, str(db), "truncated")
    check_fails_naming_the_store(d, str(db), "truncated")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a file unwritable even for root (the immutable flag), else by its mode."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("root without chattr cannot make a file read-only")
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        old = mode(path)
        path.chmod(0o400)
        try:
            yield
        finally:
            path.chmod(old)


def test_a_read_only_database_fails_serve_and_check_with_one_line(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "w")
    spec = d.workdir / "hello.toml"
    spec.write_text(SPEC)
    d.cli("deploy", str(spec))
    db = d.workdir / "wfsched.db"
    with read_only(db):
        serve_fails_with_one_line(d, str(db))
        check_fails_naming_the_store(d, str(db))


@pytest.mark.slow
def test_health_is_503_while_the_store_cannot_write_and_200_again_after(tmp_path: Path) -> None:
    with Daemon(tmp_path / "w") as d:
        assert d.proc is not None
        soft, hard = resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE)
        # A file size limit of 0 makes every write of the daemon fail as on a full disk.
        resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (0, hard))
        try:
            unhealthy = wait_for(
                lambda: (r := d.get("/health")).status_code == 503 and r,
                10,
                message="/health 503",
            )
            assert unhealthy.json()["store"] == "unwritable"
            assert str(d.workdir / "wfsched.db") in unhealthy.json()["detail"]
        finally:
            resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
        wait_for(lambda: d.get("/health").status_code == 200, 10, message="/health 200 again")
        assert d.stop() == 0


@pytest.mark.anyio
async def test_postgres_check_writable_passes_on_a_primary(pg_url: str) -> None:
    from wfsched.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    await store.open()
    try:
        await store.check_writable()
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_read_only_postgres_session_cannot_open_or_write(pg_url: str) -> None:
    from wfsched.errors import StoreError
    from wfsched.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    await store.open()  # migrated while writable
    await store.close()
    read_only = pg_url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20")
    store = PostgresStore(read_only)
    with pytest.raises(StoreError, match="read-only"):
        try:
            await store.open()
            await store.check_writable()
        finally:
            await store.close()
