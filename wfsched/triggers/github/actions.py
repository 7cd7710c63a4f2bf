"""The ``github-actions`` dispatch target: each event starts a GitHub Actions workflow run.

``POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches`` as the GitHub App's
installation on that repository (found once with ``GET /repos/{owner}/{repo}/installation``),
through the github trigger's own App client (:mod:`wfsched.triggers.github.app`): one token
cache and one rate-limit gate per App in the process. Spec fields (a workflow's
``[dispatch]`` table): ``repository``, ``workflow`` (file name or id), ``ref``, ``inputs``
(at most 10, GitHub's limit; each a static value or a ``$.path`` into the dispatched event
document, e.g. ``$.payload.body.order`` or ``$.execution_id``; a reference the event does not
hold is left out, so the input's default applies). Non-string values are sent as JSON text.

Retries follow the engine target: 408, 429, 5xx, timeouts and connection errors are retried;
a 422 (unknown ref, unexpected input, workflow without ``workflow_dispatch``) fails the event
with GitHub's message. GitHub has no idempotency key: a retry after a timeout may start a
second run; pass ``$.execution_id`` as an input to recognise it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from wfsched import (
    ConfigError,
    DispatchError,
    DispatchTarget,
    Fields,
    SpecError,
    TargetContext,
    TriggerEvent,
    event_document,
    traceparent,
)
from wfsched.triggers.github import section

MAX_INPUTS = 10
"""GitHub accepts at most 10 inputs per workflow_dispatch."""
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+\Z")
_WORKFLOW = re.compile(r"[1-9][0-9]*\Z|[A-Za-z0-9_-][A-Za-z0-9_.-]*\.ya?ml\Z")
_REFERENCE = re.compile(r"\$(\.[A-Za-z0-9_-]+)+\Z")
_RETRYABLE = frozenset({408, 429})
_INSTALLATIONS: dict[tuple[str, str, str], int] = {}
"""(API URL, App id, repository) → installation id: one lookup per repository and process."""


def _workflow_ok(workflow: Any) -> bool:
    """A numeric id or a bare ``*.yml``/``*.yaml`` file name: it is one segment of the API
    path the App's token is sent to, so nothing that could leave it (``/``, ``..``, ``?``)."""
    if isinstance(workflow, bool):
        return False
    if isinstance(workflow, int):
        return workflow > 0
    return isinstance(workflow, str) and bool(_WORKFLOW.match(workflow))


def _validate_inputs(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise SpecError("must be a table of input names to values", field="inputs")
    if len(raw) > MAX_INPUTS:
        raise SpecError(
            f"has {len(raw)} inputs; GitHub accepts at most {MAX_INPUTS}", field="inputs"
        )
    out: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"inputs.{name}"
        if isinstance(value, str) and value.startswith("$") and not _REFERENCE.match(value):
            raise SpecError(
                f"{value!r} is not a reference: use $.payload.FIELD.… or $.execution_id",
                field=where,
            )
        if not isinstance(value, str | int | float | bool):
            raise SpecError("must be a string, number, boolean or $.reference", field=where)
        out[str(name)] = value
    return out


def resolve(path: str, document: Mapping[str, Any]) -> Any:
    """The value at ``$.a.b`` in ``document`` (digits index lists), or None when absent."""
    value: Any = document
    for part in path.split(".")[1:]:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def inputs_for(inputs: Mapping[str, Any], event: TriggerEvent) -> dict[str, str]:
    """The inputs of one dispatch: references resolved, every value as text."""
    document: dict[str, Any] | None = None
    out: dict[str, str] = {}
    for name, value in inputs.items():
        if isinstance(value, str) and _REFERENCE.match(value):
            document = document or event_document(event)
            value = resolve(value, document)
            if value is None:
                continue  # absent from this event: the input's default applies
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, str):
            out[name] = value
        else:
            out[name] = json.dumps(value, separators=(",", ":"))
    return out


class GitHubActionsTarget(DispatchTarget):
    """Starts a GitHub Actions workflow (``workflow_dispatch``) for every event."""

    name = "github-actions"

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        fields = Fields(options, allowed={"repository", "workflow", "ref", "inputs"})
        repository = fields.str("repository")
        # Both parts go into the API path, with the App's token: no "." or ".." segment.
        if not _REPOSITORY.match(repository) or {".", ".."} & set(repository.split("/")):
            raise SpecError("must be owner/name", field="repository")
        workflow = options.get("workflow")
        if not _workflow_ok(workflow):
            raise SpecError(
                "is required: the workflow's file name (ci.yml, in .github/workflows) or its"
                " numeric id",
                field="workflow",
            )
        ref = fields.str("ref")
        if not ref.strip():
            raise SpecError("must name a branch or tag", field="ref")
        return {
            "repository": repository,
            "workflow": workflow,
            "ref": ref,
            "inputs": _validate_inputs(options.get("inputs", {})),
        }

    @classmethod
    def check_settings(
        cls, settings: Mapping[str, Mapping[str, Any]], options: Mapping[str, Any]
    ) -> None:
        github = settings.get(section.SECTION, {})
        for key, env in (("app_id", "GITHUB_APP_ID"), ("private_key", "GITHUB_APP_PRIVATE_KEY")):
            if not github.get(key):
                raise ConfigError(
                    f"the github-actions target needs github.{key} ({env}): the GitHub App"
                    " installed on the repository"
                )
        if not options:
            raise ConfigError(
                "dispatch.mode = 'github-actions' needs a repository and workflow: choose it in"
                " each workflow's [dispatch] table instead"
            )

    def __init__(self, ctx: TargetContext, options: Mapping[str, Any]) -> None:
        super().__init__(ctx, options)
        owner, repo = str(options["repository"]).split("/", 1)
        self.repository = f"{owner}/{repo}"
        workflow = str(options["workflow"])
        self.path = f"/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches"
        self.ref = str(options["ref"])
        self.inputs: Mapping[str, Any] = options.get("inputs", {})
        self._http: Any = None

    async def send(self, event: TriggerEvent) -> None:
        from wfsched.triggers.github.app import GitHubError, RateLimited, app_for, client
        from wfsched.triggers.github.app import load_settings as github_settings

        try:
            app = app_for(github_settings(self.ctx.section(section.SECTION)))
        except SpecError as exc:
            raise DispatchError(f"github-actions: {exc}", retry=True) from None
        if self._http is None:
            self._http = client(self.ctx.timeout or 30.0)
        body: dict[str, Any] = {"ref": self.ref}
        inputs = inputs_for(self.inputs, event)
        if inputs:
            body["inputs"] = inputs
        key = (app.api_url, app.app_id, self.repository)
        try:
            installation = _INSTALLATIONS.get(key)
            if installation is None:
                found = await app.call(self._http, "GET", f"/repos/{self.repository}/installation")
                installation = _INSTALLATIONS[key] = int(found.json()["id"])
            await app.call(
                self._http,
                "POST",
                self.path,
                installation_id=installation,
                json=body,
                headers={"traceparent": traceparent(event)},
            )
        except RateLimited as exc:
            raise DispatchError(f"GitHub: {exc}", retry=True, retry_after=exc.wait) from None
        except GitHubError as exc:
            status = exc.status
            if status == 404:
                _INSTALLATIONS.pop(key, None)  # the App may have been reinstalled
            retry = status is None or status in _RETRYABLE or status >= 500
            what = "GitHub refused the dispatch" if status == 422 else "GitHub"
            raise DispatchError(f"{what}: {exc}", retry=retry, code=status) from None

    async def aclose(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()
