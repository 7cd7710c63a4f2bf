"""The email trigger in a real ``wfsched serve`` subprocess, configured like
examples/email/: each mail fires once across SIGTERM and SIGKILL restarts, and the
trigger's health shows in status, the API, /health and the metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon, wait_for
from tests.dovecot import PASSWORD, Dovecot, dovecot_fixture  # noqa: F401 - fixture `dovecot`
from tests.email_harness import mail

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "email"
PDF = [("invoice-7.pdf", "application/pdf", b"%PDF-1.4 invoice seven")]


def invoice(n: int) -> bytes:
    return mail(
        f"Invoice {n}",
        sender="Billing <billing@billing.example.com>",
        attachments=[(f"invoice-{n}.pdf", "application/pdf", f"%PDF {n}".encode())],
    )


def events(d: Daemon, workflow_id: str) -> list[dict[str, Any]]:
    return list(reversed(d.cli_json("history", workflow_id, "--limit", "100")))


def wait_events(d: Daemon, workflow_id: str, n: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        found = events(d, workflow_id)
        return found if len(found) >= n else None

    return wait_for(enough, 20, interval=0.2, message=f"{n} events of {workflow_id}")


def watching(d: Daemon, workflow_id: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        view = d.get(f"/api/v1/triggers/workflows/{workflow_id}/status").json()
        trigger = view["triggers"][0]
        details = trigger.get("details", {})
        return trigger if details.get("state") == "idle" and details.get("last_sync") else None

    return wait_for(ready, 20, interval=0.1, message=f"{workflow_id} watching with IDLE")


def test_it_fires_each_mail_once_across_daemon_restarts(
    dovecot: Dovecot,
    tmp_path: Path,
) -> None:
    user = dovecot.add_user()
    env = {
        "IMAP_SERVER": "127.0.0.1",
        "IMAP_PORT": str(dovecot.port),
        "IMAP_SECURITY": "none",
        "EMAIL_USER": user,
        "IMAP_APP_PASSWORD": PASSWORD,
    }
    with Daemon(tmp_path, env=env, config=str(EXAMPLE / "wfsched.toml")) as d:
        d.cli("deploy", str(EXAMPLE / "workflows"))
        trigger = watching(d, "invoices")
        assert trigger["health"] == "healthy"
        assert trigger["details"]["shared_by"] == 2 or watching(d, "alerts")
        dovecot.save(user, invoice(1))
        dovecot.save(
            user, mail("[ALERT] disk full", attachments=[("df.txt", "text/plain", b"100%")])
        )
        dovecot.save(user, mail("Lunch?", sender="friend@example.com"))
        [first] = wait_events(d, "invoices", 1)
        assert first["payload"]["department"] == "accounting"
        [stored] = first["payload"]["attachments"]
        assert Path(stored["path"]).read_bytes() == b"%PDF 1"
        assert Path(stored["path"]).is_relative_to(tmp_path / "attachments" / "invoices")
        [alert] = wait_events(d, "alerts", 1)
        assert alert["payload"]["attachments"][0]["content"] == "MTAwJQ=="

        # Health everywhere an operator looks.
        status = d.cli_json("status", "invoices")
        assert status["triggers"][0]["health"] == "healthy"
        assert status["triggers"][0]["last_event"]["execution_id"] == first["execution_id"]
        assert "secret" not in str(status)
        health = d.get("/health").json()
        assert {(t["workflow_id"], t["health"]) for t in health["triggers"]} >= {
            ("invoices", "healthy"),
            ("alerts", "healthy"),
        }
        assert (
            'wfsched_trigger_health{health="healthy",trigger_id="email",'
            'workflow_id="invoices"} 1.0' in d.get("/metrics").text
        )
        assert dovecot.sessions(user) == 1  # two workflows, one connection

        assert d.stop() == 0
        dovecot.save(user, invoice(2))  # arrives while the daemon is down
        d.start()
        wait_events(d, "invoices", 2)
        watching(d, "invoices")
        d.kill()  # no drain, no goodbye to the server
        d.start()
        watching(d, "invoices")
        dovecot.save(user, invoice(3))
        found = wait_events(d, "invoices", 3)
        wait_for(lambda: dovecot.sessions(user) <= 1, 10, message="the killed session gone")

    uids = [e["payload"]["uid"] for e in events(d, "invoices")]
    assert uids == [1, 4, 5], found
    assert len(events(d, "alerts")) == 1
    assert "secret" not in d.logs()
