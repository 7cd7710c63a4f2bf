"""The GitHub App ingress: ``POST /api/v1/public/webhooks/github``, shared by every github trigger.

Order: signature over the raw body (401), headers and body (400), ``ping`` (200), routing by
each trigger's filters, one bounded round of API calls when some trigger needs pull-request
files or context, then every matched event committed before the 202. A repeated
``X-GitHub-Delivery`` finds its events already recorded and answers with their execution ids.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs

import anyio

from wfsched import (
    BadBody,
    FireRequest,
    FireResult,
    Inbound,
    Outbound,
    SpecError,
    TriggerContext,
    parse_json,
)
from wfsched.triggers.github.app import GitHubError, GitHubSettings, app_for, client, load_settings
from wfsched.triggers.github.context import Target, fetch_context, file_paths, pull_files
from wfsched.triggers.github.filters import Facts, Filters, facts_of, pull_request_of
from wfsched.triggers.github.redeliver import note_answered
from wfsched.triggers.webhook.auth import github_signature_valid

log = logging.getLogger("wfsched.triggers.github")
CONTEXT_BUDGET = 5.0  # GitHub gives up after 10 s; the commit must fit in what is left
_DELIVERY_ID = re.compile(r"[\x21-\x7e]{1,128}")
_EVENT = re.compile(r"[a-z0-9_]{1,64}")


class Routed(Protocol):
    """What the ingress needs of a github trigger."""

    @property
    def ctx(self) -> TriggerContext: ...

    @property
    def filters(self) -> Filters: ...

    @property
    def fetch_context(self) -> bool: ...


@dataclass
class Fetched:
    """The API's answers for one delivery; ``error`` says why something is missing."""

    files: list[dict[str, Any]] | None = None
    context: dict[str, Any] | None = None
    error: str | None = None


class BadDelivery(Exception):
    """The delivery's body cannot be used; the message says why."""


def decode(body: bytes, content_type: str) -> dict[str, Any]:
    """Parse a delivery (JSON, or the form-encoded ``payload=`` GitHub can also send).

    Parsed by :func:`wfsched.parse_json`: what it accepts every store holds as sent (no NUL,
    lone surrogate, NaN or number beyond a double; big integers stay exact)."""
    raw = body
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadDelivery("the body is not UTF-8") from None
        if "payload" not in form:
            raise BadDelivery("a form-encoded delivery must carry a payload field")
        raw = form["payload"][0].encode("utf-8")
    try:
        value = parse_json(raw)
    except BadBody as exc:
        raise BadDelivery(str(exc)) from None
    if not isinstance(value, dict):
        raise BadDelivery("the delivery must be a JSON object")
    return value


def _check_headers(request: Inbound, settings: GitHubSettings) -> tuple[str, str] | Outbound:
    """Return ``(event, delivery id)`` or the answer refusing the request."""
    headers = request.headers
    kind = headers.get("x-github-hook-installation-target-type", "")
    target = headers.get("x-github-hook-installation-target-id", "")
    if kind == "integration" and settings.app_id.isdigit() and target != settings.app_id:
        return Outbound.error(
            401,
            "unauthorized",
            "X-GitHub-Hook-Installation-Target-ID names another GitHub App than github.app_id",
        )
    event = headers.get("x-github-event", "").strip()
    if not _EVENT.fullmatch(event):
        return Outbound.error(400, "bad_request", "the X-GitHub-Event header is missing or invalid")
    delivery = headers.get("x-github-delivery", "").strip()
    if not _DELIVERY_ID.fullmatch(delivery):
        return Outbound.error(
            400, "bad_request", "the X-GitHub-Delivery header is missing or invalid"
        )
    return event, delivery


def _target(body: Mapping[str, Any], facts: Facts) -> Target | str:
    installation = body.get("installation")
    inst = installation.get("id") if isinstance(installation, Mapping) else None
    if not isinstance(inst, int) or isinstance(inst, bool):
        return "the delivery carries no installation id (not sent by a GitHub App)"
    if facts.repository is None:
        return "the delivery names no repository"
    return Target(installation_id=inst, repository=facts.repository, pull_number=facts.pull_number)


async def fetch(
    settings: GitHubSettings,
    event: str,
    body: Mapping[str, Any],
    facts: Facts,
    *,
    files: bool,
    context: bool,
) -> Fetched:
    """Ask GitHub, within CONTEXT_BUDGET, for a PR's files and/or the delivery's context."""
    out = Fetched()
    if context and event != "push" and pull_request_of(body) is None:
        out.context = {}  # nothing to add for this event
        context = False
    if not files and not context:
        return out
    target = _target(body, facts)
    if isinstance(target, str):
        out.error = target
        return out
    try:
        app = app_for(settings)
        async with client(CONTEXT_BUDGET) as http:
            with anyio.fail_after(CONTEXT_BUDGET):
                if files:
                    out.files = await pull_files(app, http, target)
                if context:
                    out.context = await fetch_context(app, http, target, event, body, out.files)
    except TimeoutError:
        out.error = f"GitHub did not answer within {CONTEXT_BUDGET:g} s"
    except (GitHubError, SpecError) as exc:
        out.error = str(exc)
    if out.error:
        log.warning(f"github context for {target.repository} incomplete: {out.error}")
    return out


def _payload(event: str, delivery: str, body: dict[str, Any], facts: Facts) -> dict[str, Any]:
    ref = body.get("ref")
    sender = body.get("sender")
    installation = body.get("installation")
    return {
        "event": event,
        "action": facts.action,
        "delivery_id": delivery,
        "repository": facts.repository,
        "ref": ref if isinstance(ref, str) else None,
        "sender": sender.get("login") if isinstance(sender, Mapping) else None,
        "installation_id": installation.get("id") if isinstance(installation, Mapping) else None,
        "body": body,
        "context": None,
    }


def _plan(
    candidates: Sequence[Routed],
    want_files: Sequence[Routed],
    facts: Facts,
    fetched: Fetched,
    base: dict[str, Any],
) -> list[tuple[Routed, dict[str, Any]]]:
    """Apply the filters again with the API's answers; build one payload per workflow."""
    paths = file_paths(fetched.files) if fetched.files is not None else None
    fires: list[tuple[Routed, dict[str, Any]]] = []
    workflows: set[str] = set()
    for trigger in sorted(candidates, key=lambda t: (t.ctx.workflow_id, t.ctx.trigger_id)):
        # One event per workflow: the dedupe key is per workflow anyway.
        if trigger.ctx.workflow_id in workflows or not trigger.filters.match(facts, paths):
            continue
        workflows.add(trigger.ctx.workflow_id)
        payload = dict(base)
        problems = []
        if trigger in want_files and paths is None:
            problems.append(f"paths filter not applied: {fetched.error}")
        if trigger.fetch_context:
            payload["context"] = fetched.context
            if fetched.context is None:
                problems.append(f"context not fetched: {fetched.error}")
        if problems:
            payload["context_error"] = "; ".join(problems)
        fires.append((trigger, payload))
    return fires


async def _fire_all(
    fires: Sequence[tuple[Routed, dict[str, Any]]], dedupe_key: str
) -> list[FireResult]:
    """Record every event concurrently (they share a group commit); re-raise the first error."""
    results: list[FireResult | None] = [None] * len(fires)
    errors: list[Exception] = []

    async def one(i: int, trigger: Routed, payload: dict[str, Any]) -> None:
        try:
            results[i] = await trigger.ctx.fire(FireRequest(payload=payload, dedupe_key=dedupe_key))
        except Exception as exc:  # noqa: BLE001 - re-raised below, unwrapped
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for i, (trigger, payload) in enumerate(fires):
            tg.start_soon(one, i, trigger, payload)
    if errors:
        raise errors[0]  # StoreError → 503: nothing acknowledged, GitHub marks it failed
    return [r for r in results if r is not None]


def _claimed_repository(request: Inbound) -> str | None:
    """The repository an unverified delivery says it is from, to note a refusal in the ledger
    of the triggers it was aimed at (and of those listening on any repository): never trusted
    for anything else, and not looked for in bodies too large to parse cheaply."""
    if len(request.body) > _CLAIM_LIMIT:
        return None
    try:
        name = json.loads(request.body)["repository"]["full_name"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None
    return name if isinstance(name, str) else None


_CLAIM_LIMIT = 1024 * 1024


def _refused(triggers: Sequence[Routed], answer: Outbound) -> Outbound:
    """Note a refused delivery in the ledger of the triggers it may have been aimed at, then
    return the answer."""
    body = answer.body
    code = body.get("error", "") if isinstance(body, Mapping) else ""
    detail = body.get("detail", "") if isinstance(body, Mapping) else ""
    for trigger in triggers:
        trigger.ctx.record_occurrence("refused", f"{answer.status} {code}: {detail}")
    return answer


def _filtered(triggers: Sequence[Routed], facts: Facts, delivery: str, paths: Any) -> None:
    for trigger in triggers:
        why = trigger.filters.why_not(facts, paths)
        trigger.ctx.record_occurrence("filtered", f"delivery {delivery} ({facts.event}): {why}")


async def receive(
    request: Inbound,
    route: Callable[[str | None], Sequence[Routed]],
    section: Mapping[str, Any],
) -> Outbound:
    """Handle one delivery on the shared GitHub ingress; ``route`` returns the triggers that
    may match a delivery from a repository (every one that can: ``matched`` stays exact)."""
    try:
        settings = load_settings(section)
    except SpecError as exc:
        return _refused(
            route(_claimed_repository(request)),
            Outbound.error(503, "github_not_configured", str(exc), {"Retry-After": "30"}),
        )
    if not settings.webhook_secrets:
        return _refused(
            route(_claimed_repository(request)),
            Outbound.error(
                503,
                "github_not_configured",
                "github.webhook_secret is not set "
                "(GITHUB_WEBHOOK_SECRET): deliveries cannot be verified",
                {"Retry-After": "30"},
            ),
        )
    if not github_signature_valid(
        settings.webhook_secrets, request.headers.get("x-hub-signature-256"), request.body
    ):
        return _refused(
            route(_claimed_repository(request)),
            Outbound.error(
                401,
                "unauthorized",
                "X-Hub-Signature-256 is missing or does not match github.webhook_secret",
            ),
        )
    checked = _check_headers(request, settings)
    if isinstance(checked, Outbound):
        return _refused(route(_claimed_repository(request)), checked)
    event, delivery = checked
    try:
        body = decode(request.body, request.headers.get("content-type", ""))
    except BadDelivery as exc:
        return _refused(
            route(_claimed_repository(request)), Outbound.error(400, "invalid_json", str(exc))
        )
    if event == "ping":
        note_answered(delivery)
        return Outbound(
            status=200,
            body={"status": "ok", "event": "ping", "delivery_id": delivery, "matched": []},
        )
    facts = facts_of(event, body)
    routed = route(facts.repository)
    candidates = [t for t in routed if t.filters.match(facts)]
    # Triggers routed to this repository that it did not match are "filtered" in the ledger;
    # the others never saw it (their repository filter names another repository).
    _filtered([t for t in routed if t not in candidates], facts, delivery, None)
    want_files = [t for t in candidates if t.filters.wants_pull_files(facts)]
    fetched = await fetch(
        settings,
        event,
        body,
        facts,
        files=bool(want_files),
        context=any(t.fetch_context for t in candidates),
    )
    fires = _plan(candidates, want_files, facts, fetched, _payload(event, delivery, body, facts))
    if len(fires) < len(candidates):  # the paths filter, with a pull request's files
        chosen = {id(t) for t, _ in fires}
        paths = file_paths(fetched.files) if fetched.files is not None else None
        rejected = [
            t for t in candidates if id(t) not in chosen and not t.filters.match(facts, paths)
        ]
        _filtered(rejected, facts, delivery, paths)
    results = await _fire_all(fires, f"github:{delivery}")
    note_answered(delivery)
    log.info(f"github delivery {delivery} ({event}): {len(results)} workflow(s) matched")
    matched = [
        {
            "workflow_id": r.workflow_id,
            "trigger_id": t.ctx.trigger_id,
            "execution_id": r.execution_id,
            "duplicate": not r.created,
        }
        for (t, _), r in zip(fires, results, strict=True)
    ]
    return Outbound(
        status=202,
        body={"delivery_id": delivery, "event": event, "status": "accepted", "matched": matched},
    )
