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

import contextlib
import grp
import ipaddress
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import backend_missing
from tests.daemon_proc import free_port, wait_for

MAIL_USER = "wfsched-mail"
PASSWORD = "secret"
PREPARED_USERS = 100

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = wfsched-test-{port}
listen = 127.0.0.1
protocols = imap
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
login_trusted_networks = 127.0.0.0/8
log_path = {root}/dovecot.log
mail_location = maildir:{root}/mail/%u/Maildir
first_valid_uid = 1
first_valid_gid = 1
mail_max_userip_connections = 50
# Refused logins in one test must not slow down the next: no failure delay, no IP penalty.
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
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
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
"""


def _mail_identity() -> tuple[int, int, str]:
    """The uid/gid owning mail, and extra settings for running without root."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        extra = (
            f"default_internal_user = {me}\ndefault_internal_group = {group}\n"
            f"default_login_user = {me}\n"
        )
        return os.geteuid(), os.getegid(), extra
    try:
        entry = pwd.getpwnam(MAIL_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", MAIL_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid, ""


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost/127.0.0.1 and its key (the certificate is its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class Dovecot:
    """One Dovecot instance; every method blocks until the server has done the thing.

    With ``tls=True`` it also speaks implicit TLS on ``tls_port`` and STARTTLS on ``port``,
    with a self-signed certificate for localhost in ``ca_file``.
    """

    def __init__(self, root: Path, port: int | None = None, *, tls: bool = False) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.tls_port = free_port() if tls else 0
        self.ca_file: Path | None = None
        ssl_settings = "ssl = no"
        if tls:
            self.ca_file, key_file = _self_signed(self.root)
            ssl_settings = f"ssl = yes\nssl_cert = <{self.ca_file}\nssl_key = <{key_file}"
        self.config = self.root / "dovecot.conf"
        self.uid, self.gid, identity = _mail_identity()
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "mail", self.uid, self.gid)
        self.root.chmod(0o755)
        self._names = [f"user{i}" for i in range(1, PREPARED_USERS + 1)]
        self._users = itertools.count(1)
        (self.root / "users").write_text(
            "".join(f"{n}:{{PLAIN}}{PASSWORD}::::::\n" for n in self._names)
        )
        self.config.write_text(
            CONFIG.format(
                ssl=ssl_settings,
                tls_port=self.tls_port,
                root=self.root,
                port=self.port,
                uid=self.uid,
                gid=self.gid,
                identity=identity,
            )
        )

    # lifetime -----------------------------------------------------------------------------
    def start(self) -> Dovecot:
        # The daemon keeps inherited pipes open: send its output to a file, not a pipe.
        with (self.root / "start.log").open("ab") as out:
            code = subprocess.run(
                ["dovecot", "-c", str(self.config)], check=False, stdout=out, stderr=out, timeout=30
            ).returncode
        if code != 0:
            raise AssertionError(
                f"dovecot did not start ({code}): "
                f"{(self.root / 'start.log').read_text(errors='replace')}"
            )
        wait_for(self._listening, 10, message=f"dovecot listening on {self.port}")
        return self

    def stop(self) -> None:
        """Stop the server and drop every client connection, as a real restart would.

        (The master leaves running IMAP sessions alone when it stops; they are its children,
        ended here by pid.)
        """
        pid_file = self.root / "run" / "master.pid"
        if not pid_file.exists():
            return
        master = int(pid_file.read_text().strip() or 0)
        children = _children(master)
        with contextlib.suppress(ProcessLookupError):
            os.kill(master, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: not pid_file.exists() and not self._listening(), 15, message="dovecot stopped"
        )

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
    def add_user(self) -> str:
        """Hand out a fresh mailbox user (password ``PASSWORD``); return its name."""
        # Users are written before the start: a passwd-file edited later is re-read only
        # when its mtime changes, which races with the first login.
        name = f"user{next(self._users)}"
        if name not in self._names:
            raise AssertionError(f"only {len(self._names)} test users; raise PREPARED_USERS")
        return name

    def doveadm(self, *args: str, input: bytes | None = None) -> str:
        result = subprocess.run(
            ["doveadm", "-c", str(self.config), *args],
            check=False,
            input=input,
            capture_output=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"doveadm {' '.join(args)} exited {result.returncode}: "
                f"{result.stderr.decode(errors='replace')}"
            )
        return result.stdout.decode(errors="replace")

    def save(self, user: str, message: bytes, folder: str = "INBOX") -> None:
        """Deliver a message straight into a folder (no SMTP), with its UID assigned before
        this returns: a maildir message saved beside a watcher's session could otherwise get
        its UID after a message saved later (the status read syncs the folder)."""
        self.doveadm("save", "-u", user, "-m", folder, input=message)
        self.status(user, folder)

    def kick(self, user: str) -> None:
        """Drop every IMAP session of ``user``."""
        self.doveadm("kick", user)

    def sessions(self, user: str) -> int:
        """Number of IMAP connections ``user`` has right now."""
        out = self.doveadm("who", "-1", user)
        return sum(1 for line in out.splitlines()[1:] if line.split() and line.split()[0] == user)

    def create_folder(self, user: str, folder: str) -> None:
        self.doveadm("mailbox", "create", "-u", user, folder)

    def delete_folder(self, user: str, folder: str) -> None:
        """Delete a folder with its messages (a new one of that name gets a new UIDVALIDITY)."""
        self.doveadm("mailbox", "delete", "-u", user, "-r", folder)

    def set_uid_validity(self, user: str, value: int, folder: str = "INBOX") -> None:
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def status(self, user: str, folder: str = "INBOX") -> dict[str, int]:
        out = self.doveadm(
            "-f",
            "flow",
            "mailbox",
            "status",
            "-u",
            user,
            "messages unseen uidnext uidvalidity",
            folder,
        )
        return {k: int(v) for k, v in (p.split("=", 1) for p in out.split() if "=" in p)}

    def flags(self, user: str, uid: int, folder: str = "INBOX") -> set[str]:
        out = self.doveadm(
            "-f", "flow", "fetch", "-u", user, "flags", "mailbox", folder, "uid", str(uid)
        )
        return set(out.strip().removeprefix("flags=").split())

    def add_flags(self, user: str, uid: int, flags: str, folder: str = "INBOX") -> None:
        self.doveadm("flags", "add", "-u", user, flags, "mailbox", folder, "uid", str(uid))


def _children(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            out.append(int(stat.parent.name))
    return out


def dovecot_installed() -> bool:
    return bool(shutil.which("dovecot") and shutil.which("doveadm"))


@contextlib.contextmanager
def private_dovecot(*, tls: bool = False) -> Iterator[Dovecot]:
    """Start a Dovecot in a fresh directory; stop it and remove everything afterwards."""
    if not dovecot_installed():
        backend_missing("Dovecot (Debian package dovecot-imapd)")
    # Not under pytest's temp dir: that is private to us, and the mail user must get in.
    root = Path(tempfile.mkdtemp(prefix="wfsched-dovecot-"))
    try:
        server = Dovecot(root, tls=tls)
        try:
            yield server.start()
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", name="dovecot")
def dovecot_fixture() -> Iterator[Dovecot]:
    """A Dovecot shared by a test module; each test takes its own user (mailbox)."""
    with private_dovecot() as server:
        yield server
