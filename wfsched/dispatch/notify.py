"""``notify`` dispatch mode: one email per event through an SMTP server.

Stdlib ``smtplib`` runs in worker threads (bounded, with socket timeouts) rather than an
async SMTP client: it is the reference implementation, needs no extra dependency, and notify
mode sends mail for people to read, so throughput beyond a few messages per second does not
matter. Idle connections are kept for a short while so a burst of fires does not pay a TLS
handshake and login per message.

The Message-ID is derived from the execution id, so a redelivered event is recognisable as
the same message. SMTP 4xx replies, connection and TLS failures are retried; 5xx replies
(e.g. 550 mailbox unavailable, 535 bad credentials) fail the event at once.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import getaddresses
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import anyio.to_thread

from wfsched.dispatch import DispatchError
from wfsched.dispatch.mail import build_message
from wfsched.errors import ConfigError
from wfsched.logs import register_secret
from wfsched.models import TriggerEvent

log = logging.getLogger("wfsched.notify")

IDLE_SECONDS = 30.0
"""A pooled connection idle longer than this is closed rather than reused."""
_TRUE = ("1", "true", "yes", "on", "")
_SCHEMES = {"smtp": ("plain", 25), "smtp+starttls": ("starttls", 587), "smtps": ("tls", 465)}
SECURITY_LABELS = {"plain": "no TLS", "starttls": "STARTTLS", "tls": "implicit TLS"}
"""How each ``SmtpTarget.security`` is named to people (``wfsched check``, the probe)."""


class SmtpTarget:
    """Where and how to connect, parsed from ``notify.smtp_url``: the one parser of that URL.

    ``smtp://`` is port 25 without TLS (``?starttls`` adds STARTTLS), ``smtp+starttls://``
    587 with STARTTLS, ``smtps://`` 465 with implicit TLS; ``USER:PASS@`` are the login.
    ``wfsched check`` reads the URL here too, so it probes where notify mode connects.
    """

    def __init__(self, smtp_url: str) -> None:
        parts = urlsplit(smtp_url.strip())
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError(
                "notify.smtp_url: use smtp://[USER:PASS@]HOST[:PORT] (add ?starttls=true for"
                " STARTTLS), smtp+starttls://… or smtps://… (implicit TLS)"
            )
        self.security, default_port = _SCHEMES[scheme]
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"starttls"}
        if unknown:
            raise ConfigError(
                f"notify.smtp_url: unknown parameter {min(unknown)!r} (known: starttls)"
            )
        if "starttls" in query:
            if scheme != "smtp":
                raise ConfigError("notify.smtp_url: ?starttls applies to smtp:// only")
            if query["starttls"][-1].lower() in _TRUE:
                self.security = "starttls"
        self.host = parts.hostname
        try:
            self.port = parts.port or default_port
        except ValueError:
            raise ConfigError("notify.smtp_url: the port is not a number") from None
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        if self.password:
            register_secret(self.password)
        self.display = f"{scheme}://{self.host}:{self.port}"


def _addresses(value: str | Sequence[str]) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    return [addr for _, addr in getaddresses(items) if addr]


def classify(exc: BaseException, target: str) -> DispatchError:
    """Map an smtplib or socket failure to a retryable or permanent DispatchError."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(
            f"{rcpt}: {code} {_reply(msg)}" for rcpt, (code, msg) in exc.recipients.items()
        )
        return DispatchError(
            f"SMTP server {target} refused every recipient: {detail}",
            retry=any(code < 500 for code in codes),
            code=max(codes),
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DispatchError(f"SMTP server {target}: {exc}", retry=False)
    if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code > 0:
        code = exc.smtp_code
        return DispatchError(
            f"SMTP server {target} answered {code} {_reply(exc.smtp_error)}",
            retry=code < 500,
            code=code,
        )
    if isinstance(exc, TimeoutError):
        return DispatchError(f"SMTP server {target} timed out", retry=True)
    if isinstance(exc, ssl.SSLError):
        return DispatchError(f"TLS with SMTP server {target} failed: {exc}", retry=True)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return DispatchError(f"cannot reach SMTP server {target}: {reason}", retry=True)
    return DispatchError(f"SMTP server {target}: {type(exc).__name__}: {exc}", retry=True)


def _reply(message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return " ".join(text.split())


class NotifySender:
    """Mails each event to ``notify.to`` through ``notify.smtp_url``."""

    mode = "notify"

    def __init__(
        self,
        smtp_url: str,
        *,
        sender: str = "",
        recipients: str | Sequence[str],
        timeout: float = 30.0,
        max_connections: int = 4,
    ) -> None:
        self.target = SmtpTarget(smtp_url)
        self.recipients = _addresses(recipients)
        if not self.recipients:
            raise ConfigError("notify.to names no recipient address")
        found = _addresses(sender) if sender else []
        default = self.target.user if self.target.user and "@" in self.target.user else None
        self.sender = found[0] if found else default or f"wfsched@{socket.gethostname()}"
        self.from_header = sender or self.sender
        self.timeout = timeout
        self._limiter = anyio.CapacityLimiter(max(1, max_connections))
        self._idle: list[tuple[smtplib.SMTP, float]] = []
        self._lock = threading.Lock()

    async def send(self, event: TriggerEvent) -> None:
        """Send the event's mail once; raise DispatchError on failure."""
        msg = build_message(event, sender=self.from_header, recipients=self.recipients)
        try:
            # The slot is taken before the clock starts: waiting for a free connection is
            # not the server's slowness.
            async with self._limiter:
                with anyio.fail_after(self.timeout):
                    refused = await anyio.to_thread.run_sync(
                        self._deliver, msg, abandon_on_cancel=True
                    )
        except TimeoutError:
            raise DispatchError(
                f"SMTP server {self.target.display} did not accept the mail"
                f" within {self.timeout:g}s",
                retry=True,
            ) from None
        except OSError as exc:  # smtplib's errors are OSErrors too
            raise classify(exc, self.target.display) from None
        except (ValueError, UnicodeError) as exc:
            # e.g. an address the server cannot take without SMTPUTF8: retrying cannot help.
            raise DispatchError(
                f"cannot send to {self.target.display}: {exc}", retry=False
            ) from None
        if refused:
            log.warning(
                "some notify recipients were refused",
                extra={
                    "execution_id": event.execution_id,
                    "error": "; ".join(f"{r}: {c} {_reply(m)}" for r, (c, m) in refused.items()),
                },
            )

    async def probe(self) -> str:
        """Connect, negotiate TLS and log in as a delivery would, then QUIT (``wfsched
        check``); raise DispatchError with the reason otherwise."""
        try:
            with anyio.fail_after(self.timeout):
                conn = await anyio.to_thread.run_sync(self._connect, abandon_on_cancel=True)
        except TimeoutError:
            raise DispatchError(
                f"SMTP server {self.target.display} did not answer within {self.timeout:g}s",
                retry=True,
            ) from None
        except OSError as exc:
            raise classify(exc, self.target.display) from None
        await anyio.to_thread.run_sync(_quit, conn)
        login = f", logged in as {self.target.user}" if self.target.user else ""
        return f"{self.target.display} ({SECURITY_LABELS[self.target.security]}{login})"

    # worker-thread side ------------------------------------------------------------------
    def _deliver(self, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
        conn = self._checkout()
        if conn is not None:
            try:
                return self._send_on(conn, msg)
            except smtplib.SMTPServerDisconnected:
                # The server dropped the idle connection; the message was not accepted.
                pass
        return self._send_on(self._connect(), msg)

    def _send_on(self, conn: smtplib.SMTP, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
        try:
            refused = conn.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
        except smtplib.SMTPRecipientsRefused:
            self._checkin(conn)  # the session is still good: RSET was sent
            raise
        except BaseException:
            _close(conn)
            raise
        self._checkin(conn)
        return dict(refused)

    def _connect(self) -> smtplib.SMTP:
        t = self.target
        conn: smtplib.SMTP
        if t.security == "tls":
            conn = smtplib.SMTP_SSL(
                t.host, t.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            conn = smtplib.SMTP(t.host, t.port, timeout=self.timeout)
        try:
            conn.ehlo()
            if t.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise smtplib.SMTPNotSupportedError(
                        "server does not offer STARTTLS; use smtp:// without ?starttls, or smtps://"
                    )
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if t.user is not None:
                if not conn.has_extn("auth"):
                    raise smtplib.SMTPNotSupportedError(
                        "server offers no AUTH on this connection; use STARTTLS or smtps://,"
                        " or remove the user from the URL"
                    )
                conn.login(t.user, t.password or "")
        except BaseException:
            _close(conn)
            raise
        return conn

    def _checkout(self) -> smtplib.SMTP | None:
        now = time.monotonic()
        stale: list[smtplib.SMTP] = []
        found = None
        with self._lock:
            while self._idle:
                conn, since = self._idle.pop()
                if now - since < IDLE_SECONDS:
                    found = conn
                    break
                stale.append(conn)
        for conn in stale:
            _close(conn)
        return found

    def _checkin(self, conn: smtplib.SMTP) -> None:
        with self._lock:
            self._idle.append((conn, time.monotonic()))

    async def aclose(self) -> None:
        """Say QUIT on idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            await anyio.to_thread.run_sync(_quit, conn)


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        _close(conn)


def _close(conn: smtplib.SMTP) -> None:
    try:
        conn.close()
    except OSError:
        pass
