"""A private Dovecot IMAP server for tests: own config, free port, temp dir, torn down after.

Usage::

    server = Dovecot(tmp_path).start()
    user = server.add_user()                 # fresh mailbox, password "secret"
    server.save(user, message_bytes)         # doveadm save: mail without SMTP
    server.kick(user); server.restart(); server.set_uid_validity(user, 42)
    server.stop()

Runs as root with mail owned by the unprivileged system user ``wfsched-mail`` (created when
missing; Dovecot refuses uid 0 for mail), or as an ordinary user with everything owned by
that user. ``dovecot-imapd`` must be installed: a missing server skips locally and fails
under ``CI=true``.
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import backend_missing
from tests.daemon_proc import free_port, wait_for

MAIL_USER = "wfsched-mail"
PASSWORD = "secret"
_users = itertools.count(1)

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = wfsched-test-{port}
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
login_trusted_networks = 127.0.0.0/8
log_path = {root}/dovecot.log
mail_location = maildir:{root}/mail/%u/Maildir
first_valid_uid = 1
first_valid_gid = 1
mail_max_userip_connections = 50
{identity}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def _mail_identity() -> tuple[int, int, str]:
    """The uid/gid owning mail, and extra settings for running without root."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        extra = (f"default_internal_user = {me}\ndefault_internal_group = {group}\n"
                 f"default_login_user = {me}\n")
        return os.geteuid(), os.getegid(), extra
    try:
        entry = pwd.getpwnam(MAIL_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", MAIL_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid, ""


class Dovecot:
    """One Dovecot instance; every method blocks until the server has done the thing."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.config = self.root / "dovecot.conf"
        self.uid, self.gid, identity = _mail_identity()
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "mail", self.uid, self.gid)
        self.root.chmod(0o755)
        (self.root / "users").write_text("")
        self.config.write_text(CONFIG.format(root=self.root, port=self.port, uid=self.uid,
                                             gid=self.gid, identity=identity))

    # lifetime -----------------------------------------------------------------------------
    def start(self) -> Dovecot:
        subprocess.run(["dovecot", "-c", str(self.config)], check=True, capture_output=True)
        wait_for(self._listening, 10, message=f"dovecot listening on {self.port}")
        return self

    def stop(self) -> None:
        pid_file = self.root / "run" / "master.pid"
        if not pid_file.exists():
            return
        subprocess.run(["doveadm", "-c", str(self.config), "stop"], capture_output=True)
        wait_for(lambda: not pid_file.exists() and not self._listening(), 15,
                 message="dovecot stopped")

    def restart(self) -> None:
        self.stop()
        self.start()

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # mailboxes ----------------------------------------------------------------------------
    def add_user(self, name: str | None = None) -> str:
        """Create a mailbox user with password ``PASSWORD``; return its name."""
        name = name or f"user{next(_users)}"
        with (self.root / "users").open("a") as users:
            users.write(f"{name}:{{PLAIN}}{PASSWORD}::::::\n")
        # passwd-file is re-read when its mtime changes; make sure it does.
        os.utime(self.root / "users", ns=(time.time_ns(), time.time_ns() + 1_000_000))
        return name

    def doveadm(self, *args: str, input: bytes | None = None) -> str:
        result = subprocess.run(["doveadm", "-c", str(self.config), *args], input=input,
                                capture_output=True, timeout=30)
        if result.returncode != 0:
            raise AssertionError(f"doveadm {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.decode(errors='replace')}")
        return result.stdout.decode(errors="replace")

    def save(self, user: str, message: bytes, folder: str = "INBOX") -> None:
        """Deliver a message straight into a folder (no SMTP)."""
        self.doveadm("save", "-u", user, "-m", folder, input=message)

    def kick(self, user: str) -> None:
        """Drop every IMAP session of ``user``."""
        self.doveadm("kick", user)

    def sessions(self, user: str) -> int:
        """Number of IMAP connections ``user`` has right now."""
        out = self.doveadm("who", "-1", user)
        return sum(1 for line in out.splitlines()[1:] if line.split() and line.split()[0] == user)

    def set_uid_validity(self, user: str, value: int, folder: str = "INBOX") -> None:
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def status(self, user: str, folder: str = "INBOX") -> dict[str, int]:
        out = self.doveadm("-f", "flow", "mailbox", "status", "-u", user,
                           "messages unseen uidnext uidvalidity", folder)
        return {k: int(v) for k, v in (p.split("=", 1) for p in out.split())}

    def flags(self, user: str, uid: int, folder: str = "INBOX") -> set[str]:
        out = self.doveadm("-f", "flow", "fetch", "-u", user, "flags", "mailbox", folder,
                           "uid", str(uid))
        return set(out.strip().removeprefix("flags=").split())

    def add_flags(self, user: str, uid: int, flags: str, folder: str = "INBOX") -> None:
        self.doveadm("flags", "add", "-u", user, flags, "mailbox", folder, "uid", str(uid))


def dovecot_installed() -> bool:
    return bool(shutil.which("dovecot") and shutil.which("doveadm"))


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    """A Dovecot shared by a test module; each test takes its own user (mailbox)."""
    if not dovecot_installed():
        backend_missing("Dovecot (Debian package dovecot-imapd)")
    # Not under pytest's temp dir: that is private to us, and the mail user must get in.
    root = Path(tempfile.mkdtemp(prefix="wfsched-dovecot-"))
    server = Dovecot(root)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
