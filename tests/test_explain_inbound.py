"""Refused and filtered deliveries of the inbound trigger types reach ``explain``: github (the
real app, store and trigger manager in this process), email (a daemon and a real Dovecot) and a
plugin type through the public API (``ctx.record_occurrence``, ``FakeContext``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon, wait_for
from tests.dovecot import PASSWORD, Dovecot, dovecot_fixture  # noqa: F401 - fixture `dovecot`
from tests.email_harness import mail
from tests.github_harness import (  # noqa: F401 - fixtures
    INGRESS,
    body_of,
    headers_for,
    key_pem_fixture,
    service,
    spec,
    standin_fixture,
)
from wfsched.explain import ExplainService, window


async def _explain(svc: Any, workflow_id: str) -> list[dict[str, Any]]:
    await svc.manager.ledger.flush()
    answer = await ExplainService(svc.deployments).explain(workflow_id, window())
    occurrences: list[dict[str, Any]] = answer["occurrences"]
    return occurrences


@pytest.mark.anyio
async def test_github_filtered_and_refused_deliveries_are_explained(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.deploy(
            spec("releases", branches=["main", "release/*"]),
            spec("anything"),
        )
        assert (await svc.post("push.new-branch", guid="g-1")).status_code == 202
        body = body_of("push.new-branch")
        bad = headers_for("push", body, guid="g-2")
        bad["X-Hub-Signature-256"] = "sha256=" + "0" * 64
        assert (await svc.http.post(INGRESS, content=body, headers=bad)).status_code == 401
        assert (await svc.post("push.new-branch", guid="g-1")).status_code == 202  # a repeat
        releases = await _explain(svc, "releases")
        anything = await _explain(svc, "anything")
    assert [o["outcome"] for o in releases] == ["filtered", "refused", "filtered"]
    assert releases[0]["reason"] == (
        'delivery g-1 (push): branches: "master" matches none of ["main", "release/*"]'
    )
    assert releases[1]["reason"].startswith("401 unauthorized: X-Hub-Signature-256")
    assert [o["outcome"] for o in anything] == ["fired", "refused", "deduplicated"]
    assert anything[2]["execution_id"] == anything[0]["execution_id"]


@pytest.mark.slow
def test_email_filtered_messages_are_explained(dovecot: Dovecot, tmp_path: Path) -> None:
    user = dovecot.add_user()
    env = {
        "IMAP_SERVER": "127.0.0.1",
        "IMAP_PORT": str(dovecot.port),
        "IMAP_SECURITY": "none",
        "EMAIL_USER": user,
        "EMAIL_PASSWORD": PASSWORD,
    }
    (tmp_path / "spec.toml").write_text(
        'id = "mail"\n[[triggers]]\ntype = "email"\n'
        '[triggers.filters]\nsubject = "re:^Invoice [0-9]+$"\n'
    )
    with Daemon(tmp_path, env=env) as d:
        d.cli("deploy", str(tmp_path / "spec.toml"))
        wait_for(
            lambda: (
                d.get("/api/v1/triggers/workflows/mail/status")
                .json()["triggers"][0]["details"]
                .get("last_sync")
            ),
            20,
            interval=0.2,
            message="the mailbox watched",
        )
        dovecot.save(user, mail("Lunch?"))
        dovecot.save(user, mail("Invoice 7"))

        def both() -> list[dict[str, Any]] | None:
            found = d.cli_json("explain", "mail")["occurrences"]
            return found if {o["outcome"] for o in found} == {"filtered", "fired"} else None

        occurrences = wait_for(both, 20, interval=0.3, message="filtered and fired")
    filtered = next(o for o in occurrences if o["outcome"] == "filtered")
    assert filtered["reason"].endswith("subject: 'Lunch?' matches none of ['re:^Invoice [0-9]+$']")
    assert filtered["trigger_type"] == "email"


def test_a_plugin_reports_occurrences_through_the_public_api() -> None:
    from wfsched.testing import FakeContext

    ctx = FakeContext()
    ctx.record_occurrence("filtered", 'status: "draft" is not "done"')
    with pytest.raises(ValueError, match="outcome"):
        ctx.record_occurrence("fired", "not a trigger's to report")
    assert [(o.outcome, o.reason) for o in ctx.occurrences] == [
        ("filtered", 'status: "draft" is not "done"')
    ]
