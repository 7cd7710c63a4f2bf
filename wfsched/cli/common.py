"""The Typer app, the options its commands share, and the Control a command calls.

With ``--url`` a command works over a daemon's HTTP API alone
(:class:`wfsched.client.RemoteControl`), else on the store of its config
(:class:`wfsched.control.LocalControl`); a wfsched error becomes one line and an exit code
either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.util import find_spec
from typing import TYPE_CHECKING, Annotated, TypeVar

import anyio
import typer

from wfsched import __version__
from wfsched.cli.render import errors_as_json, fail, out
from wfsched.config import Settings
from wfsched.errors import (
    AuthError,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    SpecError,
    StoreError,
    WfschedError,
)
from wfsched.spec import InvalidSpecs

if TYPE_CHECKING:
    from wfsched.control import Control
    from wfsched.plugins import Configured


T = TypeVar("T")
app = typer.Typer(
    help="wfsched: durable workflow triggers. Shell completion: wfsched --install-completion.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        out.print(__version__, highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    version_: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """wfsched: durable workflow triggers."""


ConfigOpt = Annotated[str | None, typer.Option("--config", help="config file (wfsched.toml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="WFSCHED_URL",
        help="a daemon's base URL: work over its HTTP API (no store or plugins here)",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="WFSCHED_API_TOKEN",
        help="bearer token of the daemon's management API (with --url)",
        show_envvar=True,
    ),
]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a command works (the store of ``config``, or the daemon at ``url``) and how it
    prints (``json``: answers and errors as JSON)."""

    config: str | None = None
    url: str | None = None
    token: str | None = None
    json: bool = False


def configured(config: str | None) -> Configured:
    """The settings, validated with the plugins they name (``wfsched.plugins.configure``).

    A bad config or plugin file exits 2; two plugins claiming one name exit 1.
    """
    from wfsched.plugins import configure

    try:
        return configure(config)
    except ConfigError as exc:
        fail(str(exc), 2, "invalid_config")
    except WfschedError as exc:
        fail(str(exc), 1)


def settings_of(config: str | None) -> Settings:
    return configured(config).settings


def error_of(exc: WfschedError) -> tuple[str, int]:
    """The JSON code and exit code of an error (1 operation failed, 2 invalid input); the
    codes are the HTTP API's, so a command reports alike on either side."""
    from wfsched.client import ApiError, Unreachable

    if isinstance(exc, ApiError):
        return exc.code, 2 if exc.invalid_input else 1
    table: tuple[tuple[type[WfschedError], str, int], ...] = (
        (InvalidSpecs, "invalid_spec", 2),
        (SpecError, "invalid_spec", 2),
        (ConfigError, "invalid_config", 2),
        (InvalidInput, "bad_request", 2),
        (NotFound, "not_found", 1),
        (Conflict, "conflict", 1),
        (AuthError, "unauthorized", 1),
        (StoreError, "store_unavailable", 1),
        (Unreachable, "unreachable", 1),
    )
    for kind, code, exit_code in table:
        if isinstance(exc, kind):
            return code, exit_code
    return "error", 1


def run(fn: Callable[[], Awaitable[T]], *, fast_loop: bool = False) -> T:
    """Run a coroutine, mapping wfsched errors to one line and an exit code.

    ``fast_loop``: use uvloop when installed (the daemon: about 1.5x the HTTP throughput).
    """
    options = {"use_uvloop": True} if fast_loop and find_spec("uvloop") is not None else {}
    try:
        return anyio.run(fn, backend_options=options)
    except WfschedError as exc:
        code, exit_code = error_of(exc)
        fail(str(exc), exit_code, code)
    except BaseExceptionGroup as group:
        # A task group fails with every error of its tasks; report the first one of ours.
        first = group.subgroup(lambda e: isinstance(e, WfschedError))
        while first is not None and isinstance(first.exceptions[0], BaseExceptionGroup):
            first = first.exceptions[0]
        if first is None:
            raise
        inner = first.exceptions[0]
        assert isinstance(inner, WfschedError)
        code, exit_code = error_of(inner)
        fail(str(inner), exit_code, code)


def control_of(target: Target) -> Control:
    """The Control a command calls: remote with a URL, else on the configured store."""
    from wfsched.client import RemoteControl
    from wfsched.control import LocalControl

    if target.url:
        try:
            return RemoteControl(target.url, target.token)
        except InvalidInput as exc:
            fail(str(exc), 2, "bad_request")
    return LocalControl(configured(target.config))


def call(target: Target, fn: Callable[[Control], Awaitable[T]]) -> T:
    """Run ``fn`` with the target's Control; errors exit with one line (JSON with --json)."""
    errors_as_json(target.json)
    control = control_of(target)

    async def body() -> T:
        try:
            return await fn(control)
        finally:
            await control.aclose()

    return run(body)


def examples(*lines: str) -> str:
    """An epilog of examples (click keeps a ``\\b`` paragraph's lines as written)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
