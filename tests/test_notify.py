"""Notify-mode dispatch against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.daemon_proc import free_port
from tests.polling import eventually
from tests.test_dispatch import record, running, settled
from wfsched.checks import run_checks
from wfsched.dispatch import Dispatcher, DispatchError, event_document
from wfsched.dispatch.notify import NotifySender, SmtpTarget
from wfsched.errors import ConfigError
from wfsched.models import TriggerEvent, utcnow
from wfsched.plugins import configure

pytestmark = pytest.mark.anyio


class Mailbox:
    """An aiosmtpd handler that keeps every message and can refuse recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.refuse: str | None = None
        self.ehlos = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 Message accepted"


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp(mailbox: Mailbox) -> Iterator[Controller]:
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def cert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 that the client is told to trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    return cert_path, key_path


def server_tls(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


def notifier(url: str, **kw: Any) -> NotifySender:
    return NotifySender(
        url,
        sender="wfsched <wfsched@example.test>",
        recipients="ops@example.test, oncall@example.test",
        timeout=5.0,
        **kw,
    )


def dispatcher(store: Any, sender: NotifySender, **kw: Any) -> Dispatcher:
    options = {"retry_base": 0.05, "retry_max": 0.1, "max_workers": 4, **kw}
    return Dispatcher(store, sender, **options)


async def test_it_mails_a_readable_event_with_its_json(
    store: Any, smtp: Controller, mailbox: Mailbox
) -> None:
    [event] = await record(
        store, payload={"data": {"report": "sales", "rows": 3}, "user": "ana"}, scheduled=True
    )
    async with running(dispatcher(store, notifier(f"smtp://127.0.0.1:{smtp.port}"))):
        final = await settled(store, event.execution_id)
    assert (final.status, final.attempts) == ("dispatched", 1)
    [(mail_from, rcpts, msg)] = mailbox.messages
    assert mail_from == "wfsched@example.test"
    assert rcpts == ["ops@example.test", "oncall@example.test"]
    assert msg["Subject"] == "[wfsched] cron trigger fired: nightly-report"
    assert msg["Message-ID"] == f"<{event.execution_id}@wfsched>"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_content().replace("\r\n", "\n")
    readable, _, document = body.partition("\nEvent (JSON)\n")
    assert 'The cron trigger "nightly" of workflow "nightly-report" fired.' in readable
    assert f"Execution id  {event.execution_id}" in readable
    assert "data.report: sales" in readable and "user: ana" in readable
    assert json.loads(document) == event_document(event)


async def test_it_retries_while_smtp_is_down_and_delivers_once_it_is_up(
    store: Any, mailbox: Mailbox
) -> None:
    port = free_port()
    [event] = await record(store)
    async with running(dispatcher(store, notifier(f"smtp://127.0.0.1:{port}"))):

        async def failed_twice() -> bool:
            return bool((await store.get_event(event.execution_id)).attempts >= 2)

        await eventually(failed_twice, what="two failed attempts")
        pending = await store.get_event(event.execution_id)
        assert pending.status == "pending"
        assert pending.last_error is not None
        assert f"cannot reach SMTP server smtp://127.0.0.1:{port}" in pending.last_error
        controller = Controller(mailbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            final = await settled(store, event.execution_id)
        finally:
            controller.stop()
    assert final.status == "dispatched"
    assert [m["Message-ID"] for _, _, m in mailbox.messages] == [f"<{event.execution_id}@wfsched>"]


async def test_it_fails_on_550_and_retries_on_451(
    sqlite_url: str, smtp: Controller, mailbox: Mailbox
) -> None:
    from wfsched.backends import open_store

    store = open_store(sqlite_url)
    await store.open()
    try:
        mailbox.refuse = "550 5.1.1 no such mailbox"
        [refused] = await record(store)
        async with running(dispatcher(store, notifier(f"smtp://127.0.0.1:{smtp.port}"))):
            final = await settled(store, refused.execution_id)
            assert (final.status, final.attempts) == ("failed", 1)
            assert final.last_error is not None and "550 5.1.1 no such mailbox" in final.last_error

            mailbox.refuse = "451 4.3.0 try again later"
            [deferred] = await record(store)

            async def retried() -> bool:
                got = await store.get_event(deferred.execution_id)
                return bool(got.attempts >= 2 and got.status == "pending")

            await eventually(retried, what="a retried 451")
            mailbox.refuse = None
            assert (await settled(store, deferred.execution_id)).status == "dispatched"
    finally:
        await store.close()
    assert len(mailbox.messages) == 1


async def test_it_speaks_starttls_and_logs_in(
    sqlite_url: str, cert: tuple[Path, Path], mailbox: Mailbox
) -> None:
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"p@ss word", handled=False)

    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=server_tls(cert),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    try:
        sender = notifier(
            f"smtp+starttls://bot%40example.test:p%40ss%20word@127.0.0.1:{controller.port}"
        )
        assert (await _send_one(sqlite_url, sender)).status == "dispatched"
        bad = notifier(f"smtp://bot:wrong@127.0.0.1:{controller.port}?starttls=true")
        refused = await _send_one(sqlite_url, bad)
        assert (refused.status, refused.attempts) == ("failed", 1)
        assert refused.last_error is not None and "535" in refused.last_error
        assert "wrong" not in refused.last_error
    finally:
        controller.stop()
    assert logins[0] == (b"bot@example.test", b"p@ss word")
    assert len(mailbox.messages) == 1


async def test_it_speaks_implicit_tls(
    sqlite_url: str, cert: tuple[Path, Path], mailbox: Mailbox
) -> None:
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=free_port(), ssl_context=server_tls(cert)
    )
    controller.start()
    try:
        sender = notifier(f"smtps://127.0.0.1:{controller.port}")
        assert (await _send_one(sqlite_url, sender)).status == "dispatched"
    finally:
        controller.stop()
    assert len(mailbox.messages) == 1


async def _send_one(url: str, sender: NotifySender) -> TriggerEvent:
    from wfsched.backends import open_store

    store = open_store(url)
    await store.open()
    try:
        [event] = await record(store)
        async with running(dispatcher(store, sender)):
            final: TriggerEvent = await settled(store, event.execution_id)
    finally:
        await store.close()
    return final


async def test_it_reuses_a_connection_and_reconnects_when_the_server_dropped_it(
    store: Any, mailbox: Mailbox
) -> None:
    port = free_port()
    sender = notifier(f"smtp://127.0.0.1:{port}", max_connections=1)
    events = await record(store, 3)
    first = Controller(mailbox, hostname="127.0.0.1", port=port)
    first.start()
    async with running(dispatcher(store, sender, max_workers=1)) as d:
        try:
            d.wake()
            for event in events:
                assert (await settled(store, event.execution_id)).attempts == 1
            assert mailbox.ehlos == 1
        finally:
            first.stop()  # drops the pooled connection
        second = Controller(mailbox, hostname="127.0.0.1", port=port)
        second.start()
        try:
            [late] = await record(store)
            d.wake()
            final = await settled(store, late.execution_id)
        finally:
            second.stop()
    assert (final.status, final.attempts) == ("dispatched", 1)
    assert len(mailbox.messages) == 4
    assert mailbox.ehlos == 2


async def test_it_probes_the_server_for_wfsched_check(
    cert: tuple[Path, Path], mailbox: Mailbox
) -> None:
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=server_tls(cert),
        require_starttls=True,
    )
    controller.start()
    try:
        sender = notifier(f"smtp+starttls://127.0.0.1:{controller.port}")
        assert await sender.probe() == f"smtp+starttls://127.0.0.1:{controller.port} (STARTTLS)"
        plain = notifier(f"smtp://127.0.0.1:{controller.port}")
        with pytest.raises(DispatchError, match="answered 530") as refused:
            await plain.send(_event())
        assert refused.value.retry is False
    finally:
        controller.stop()
    down = notifier(f"smtps://127.0.0.1:{free_port()}")
    with pytest.raises(DispatchError, match="cannot reach SMTP server") as unreachable:
        await down.probe()
    assert unreachable.value.retry is True


def _event() -> TriggerEvent:
    return TriggerEvent(
        execution_id="01TESTEVENT000000000000000",
        workflow_id="w",
        trigger_id="t",
        trigger_type="cron",
        dedupe_key="k",
        scheduled_at=None,
        fired_at=utcnow(),
        payload={},
        status="pending",
    )


@pytest.mark.parametrize(
    ("url", "security", "port"),
    [
        ("smtp://mail.example", "plain", 25),
        ("smtp://mail.example?starttls", "starttls", 25),
        ("smtp://mail.example:2525?starttls=true", "starttls", 2525),
        ("smtp+starttls://mail.example", "starttls", 587),
        ("smtps://u:p@mail.example", "tls", 465),
    ],
)
def test_it_reads_smtp_urls(url: str, security: str, port: int) -> None:
    target = SmtpTarget(url)
    assert (target.security, target.port, target.host) == (security, port, "mail.example")


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example",
        "smtp://",
        "smtps://mail.example?starttls=1",
        "smtp://mail.example?tls=1",
        "smtp://user:hunter22@mail.example:port",
    ],
)
def test_it_refuses_bad_smtp_urls_without_echoing_secrets(url: str) -> None:
    with pytest.raises(ConfigError, match="notify.smtp_url") as refused:
        SmtpTarget(url)
    assert "hunter22" not in str(refused.value)


def test_it_needs_a_recipient() -> None:
    with pytest.raises(ConfigError, match="notify.to"):
        NotifySender("smtp://mail.example", recipients=" , ")


@pytest.mark.parametrize(
    ("url", "security", "port"),
    [
        ("smtp://127.0.0.1", "plain", 25),
        ("smtp://127.0.0.1?starttls", "starttls", 25),
        ("smtp+starttls://127.0.0.1", "starttls", 587),
        ("smtps://user:pw@127.0.0.1", "tls", 465),
    ],
)
async def test_check_probes_where_notify_connects(
    tmp_path: Path, url: str, security: str, port: int
) -> None:
    config = tmp_path / "wfsched.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "w.db"}"\n[notify]\nsmtp_url = "{url}"\n'
    )
    target = notifier(url).target
    assert (target.host, target.port, target.security) == ("127.0.0.1", port, security)
    settings, registry = configure(str(config), environ={})
    report = await run_checks(settings, registry)
    [smtp] = [check for check in report if check["name"] == "smtp"]
    # Reachable or not (nothing need listen on the default ports), the check names the
    # endpoint and the security it tried: the ones notify mode uses.
    assert f"127.0.0.1:{port}" in smtp["detail"], smtp
    how = {"plain": "no TLS", "starttls": "STARTTLS", "tls": "implicit TLS"}[security]
    assert how in smtp["detail"], smtp
