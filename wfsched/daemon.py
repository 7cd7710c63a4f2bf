"""Composition root: config → plugins → store/locks → one task group; owns signals.

Concrete backends come from ``wfsched.backends``. ``wfsched serve`` runs ``serve``; SIGTERM or
SIGINT stops intake (the listener closes, requests under way finish and commit), then stops
the triggers, drains in-flight dispatches for a bounded time and exits 0.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import signal
import socket
from collections.abc import Iterator, Sequence
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from wfsched.backends import connected, make_sender, open_locks
from wfsched.config import IPNetwork, Settings
from wfsched.deployments import DeploymentService
from wfsched.dispatch import RESERVE_PER_WORKER, Dispatcher
from wfsched.errors import ConfigError, StoreError, WfschedError
from wfsched.heartbeat import Heartbeat
from wfsched.locks import LocalLocks, LockError, LockManager, replica_info
from wfsched.logs import register_secret
from wfsched.manager import TriggerManager
from wfsched.models import utcnow
from wfsched.occurrences import OccurrenceLog
from wfsched.plugins import Registry
from wfsched.recorder import GroupCommitRecorder
from wfsched.store import ChangeFeed, Retention, Store
from wfsched.store.retention import prune_all
from wfsched.timer import Timer
from wfsched.timer.shards import ShardKeeper

if TYPE_CHECKING:
    from wfsched.httpdirect import DirectRoute
    from wfsched.httplimits import HttpLimits

log = logging.getLogger("wfsched.daemon")
DRAIN_SECONDS = 10.0
CHANGE_POLL = 1.0
PG_POLL = 5.0
HTTP_STOP = 3.0
"""Seconds past uvicorn's graceful-shutdown timeout to wait for it: it notices ``should_exit``
on its next beat (1 s) and pauses 0.1 s before waiting for connections."""
YOUNG_GC_THRESHOLD = 10_000
"""Allocations between collections of the GC's youngest generation, once serving."""


async def sleep_to_beat(period: float) -> None:
    """Sleep until the next multiple of ``period`` on the loop's clock.

    The daemon's periodic loops (the SQLite change poll, uvicorn's tick) all wake on the same
    beat, so an idle daemon wakes once per second instead of once per loop: each wake-up of an
    idle process costs about 0.1 ms of CPU, cold caches and all.
    """
    now = anyio.current_time()
    await anyio.sleep_until((math.floor(now / period) + 1) * period)


def settle_heap() -> None:
    """Move everything start-up allocated out of the cyclic GC's reach (``gc.freeze``).

    The daemon's start-up leaves some 150,000 long-lived objects (modules, routes, settings,
    plugins) in the oldest generation, and every full collection walked them all again:
    about 80 ms each, triggered every few thousand requests by the events held until their
    dispatch, a fifth of a webhook's CPU. Frozen, they are never scanned; objects made after
    start-up are collected as before, with a youngest generation of 10,000 allocations
    instead of 700: each of its collections walks every request and dispatch under way, so at
    700 a busy ingress spent about 9 µs per request in them, and a burst of 10,000 dispatches
    a sixth of its CPU (acyclic garbage is freed by reference counting whatever the threshold;
    the higher one only lets reference cycles wait longer).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


async def _count_replicas(locks: LockManager) -> int:
    return len(await locks.replicas())


def register_secrets(settings: Settings) -> None:
    """Teach the log redactor the value of every setting of kind ``secret``, the core's and
    those the plugins declare; a comma-separated list (rotated secrets) item by item."""
    for setting in settings.declared:
        if setting.kind != "secret":
            continue
        with contextlib.suppress(ConfigError):
            value = settings.secret(setting.name)
            for part in value.split(","):
                register_secret(part.strip())


def _server(
    app: Any,
    host: str,
    port: int,
    *,
    trusted_proxies: Sequence[IPNetwork] = (),
    limits: HttpLimits | None = None,
    direct: DirectRoute | None = None,
) -> Any:
    """A uvicorn server without its own signal handling: the daemon owns SIGINT/SIGTERM.

    X-Forwarded-For/-Proto are believed from ``trusted_proxies`` only (server.trusted_proxies);
    uvicorn would otherwise trust 127.0.0.1 or an inherited FORWARDED_ALLOW_IPS. Its middleware
    wraps the whole app, so every route, raw or Starlette, sees the same client address.
    ``limits`` (default: the defaults of :class:`HttpLimits`) bound header size and read time,
    idle keep-alive and open connections. ``direct``: the requests the protocol serves without
    ASGI (:mod:`wfsched.httpdirect`), unless a trusted proxy is configured.
    """
    import uvicorn

    from wfsched.httpdirect import protocol_class
    from wfsched.httplimits import HttpLimits

    limits = limits or HttpLimits()

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def main_loop(self) -> None:
            # uvicorn ticks ten times a second, a fifth of an idle daemon's CPU; once a
            # second, on the daemon's beat, still refreshes the Date header (every tenth
            # count) and sees should_exit.
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 10) % 864000
                await sleep_to_beat(1.0)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=[str(net) for net in trusted_proxies],
        # uvicorn's proxy-headers middleware wraps the app: with it, every request goes
        # through ASGI, so that every route sees the client it rewrites.
        http=protocol_class(limits, None if trusted_proxies else direct),
        timeout_keep_alive=limits.keep_alive,
    )
    return Server(config)


async def _serve_http(server: Any, done: anyio.Event) -> None:
    """Run uvicorn; ``done`` is set once it has closed its listeners and finished every
    request under way (or given up on them after its graceful-shutdown timeout)."""
    try:
        await server.serve()
    except SystemExit:
        # uvicorn exits when it cannot bind (it logged why); the port was free a moment ago.
        config = server.config
        raise WfschedError(f"cannot listen on {config.host}:{config.port}") from None
    finally:
        done.set()


def ensure_listenable(host: str, port: int) -> None:
    """Fail at once, in one line, when ``host:port`` cannot be bound (in use, not allowed,
    no such address), before anything else starts; uvicorn would exit mid-start."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WfschedError(f"cannot listen on {host}:{port}: {reason}") from None


async def _watch_changes(
    store: Store, feed: ChangeFeed, manager: TriggerManager, dispatcher: Dispatcher
) -> None:
    """Apply what the store's ChangeFeed reports: new events wake the dispatcher, a store
    revision other than the triggers' reconciles them."""

    async def pace() -> None:
        # A polling feed (SQLite) looks on the shared beat, and trigger health is persisted
        # on it too: one wake-up a second for both. A pushed feed never calls this; there
        # ``_periodic`` persists health.
        await sleep_to_beat(CHANGE_POLL)
        await manager.flush_health()

    while True:
        try:
            async for change in feed.watch(pace):
                if change == "events":
                    dispatcher.wake()
                elif await store.revision() != manager.revision:
                    await manager.reconcile()
        except StoreError as exc:
            log.warning("watching for changes failed; retrying", extra={"error": str(exc)})
            await anyio.sleep(PG_POLL)
            with contextlib.suppress(StoreError):
                await manager.reconcile()


async def _periodic(store: Store, manager: TriggerManager) -> None:
    """Fallback reconciliation and health persistence next to a pushed ChangeFeed (one that
    may miss a notification while it reconnects)."""
    while True:
        await anyio.sleep(PG_POLL)
        try:
            if await store.revision() != manager.revision:
                await manager.reconcile()
            await manager.flush_health()
        except StoreError as exc:
            log.warning("periodic reconcile failed", extra={"error": str(exc)})


PRUNE_LOCK = "history-prune"


async def _prune_history(store: Store, locks: LockManager, settings: Settings) -> None:
    """Every ``history.prune_interval``, one replica at a time (by lock) deletes the events
    past retention in small steps (``prune_all``); the others wait their turn, then find
    little left. Also keeps PostgreSQL's time partitions ready ahead, even with retention off.
    """
    interval = settings.get("history.prune_interval")
    if not interval:
        return
    while True:
        await anyio.sleep(interval)
        retention = Retention.at(
            utcnow(),
            settings.get("history.retention"),
            settings.get("history.failed_retention"),
            exact=False,
        )
        started = anyio.current_time()
        # Steps stop by themselves before the hard bound, so the events deleted get logged.
        soft = started + interval * 0.8
        try:
            with anyio.move_on_after(interval):
                async with locks.hold(PRUNE_LOCK, ttl=max(15.0, interval)) as lease:
                    deleted = await prune_all(
                        store,
                        retention,
                        stop=lambda: lease.lost or anyio.current_time() >= soft,  # noqa: B023
                    )
                    await _prune_ledger(store, settings)
                    if deleted:
                        log.info(
                            f"pruned {deleted} events past retention",
                            extra={
                                "status": "pruned",
                                "duration_ms": round((anyio.current_time() - started) * 1000),
                            },
                        )
        except (StoreError, LockError) as exc:
            log.warning("pruning history failed; retrying", extra={"error": str(exc)})


async def _prune_ledger(store: Store, settings: Settings) -> None:
    """The ledger's retention: entries older than ``ledger.keep`` beyond the newest
    ``ledger.keep_per_trigger`` of their trigger, and daemon runs older than ``ledger.keep``."""
    keep = settings.get("ledger.keep")
    if keep:
        older_than = utcnow() - timedelta(seconds=keep)
        await store.prune_ledger(older_than, settings.get("ledger.keep_per_trigger"))


async def serve(
    settings: Settings,
    *,
    registry: Registry,
    host: str | None = None,
    port: int | None = None,
    ready: anyio.Event | None = None,
) -> None:
    """Run the daemon until SIGINT/SIGTERM; then stop intake, drain and return.

    ``registry``: the plugins ``settings`` were validated with (``wfsched.plugins.configure``).
    """
    from wfsched import otel
    from wfsched.httplimits import HttpLimits, ensure_open_files
    from wfsched.web.app import WebServices, create_app, public_bind_without_token
    from wfsched.web.ui.index import prepare as prepare_dashboard

    register_secrets(settings)
    otel.setup()  # spans only when an OpenTelemetry tracer provider is configured
    host = host or settings.host
    ensure_listenable(host, port or settings.port)
    api_token = settings.secret("server.api_token")
    if public_bind_without_token(host, api_token):
        log.warning(
            f"listening on {host} without server.api_token: the management API answers 403 "
            "api_token_required; set server.api_token (WFSCHED_API_TOKEN) to use it remotely"
        )
    async with connected(settings, exclusive=True) as store:
        # A read-only or full store would answer every webhook 503: refuse to start instead.
        await store.check_writable()
        locks = open_locks(settings.locks_url)
        dispatcher = Dispatcher(
            store,
            # A workflow's own [dispatch] choice is kept until the deployments change.
            make_sender(settings, registry, store=store, revision=lambda: manager.revision),
            max_workers=settings.get("scheduler.max_workers"),
            max_attempts=settings.get("dispatch.max_attempts"),
            retry_base=settings.get("dispatch.retry_base"),
            retry_max=settings.get("dispatch.retry_max"),
            claim_ttl=settings.get("dispatch.claim_ttl"),
            # Commits wake the dispatcher (locally, by NOTIFY, or by the SQLite file watch);
            # the poll is only a safety net.
            poll_interval=5.0,
            # A store no replica shares: a burst's backlog stays leased to this daemon (no
            # claim queries); where replicas share unleased events, none is held back.
            reserve=RESERVE_PER_WORKER * settings.get("scheduler.max_workers")
            if store.single_daemon
            else 0,
        )
        recorder = GroupCommitRecorder(
            store,
            on_created=dispatcher.wake,
            handoff=dispatcher,
            commit_timeout=settings.get("store.commit_timeout"),
        )
        timer = Timer(recorder, on_cursors=store.set_cursors)
        ledger = OccurrenceLog(store)
        manager = TriggerManager(
            registry=registry,
            store=store,
            recorder=recorder,
            settings=settings,
            locks=locks,
            timer=timer,
            ledger=ledger,
        )
        deployments = DeploymentService(
            store=store, registry=registry, settings=settings, recorder=recorder, manager=manager
        )
        app = create_app(
            WebServices(
                settings=settings,
                store=store,
                deployments=deployments,
                manager=manager,
                api_token=api_token,
                bind_host=host,
            )
        )
        limits = HttpLimits.from_settings(settings)
        ensure_open_files(limits)
        server = _server(
            app,
            host,
            port or settings.port,
            trusted_proxies=settings.trusted_proxies,
            limits=limits,
            direct=app,
        )
        config = server.config
        heartbeat = Heartbeat(
            store,
            replica_info(config.host, config.port)["id"],
            f"{config.host}:{config.port}",
            before_beat=manager.flush_health,
        )
        try:
            async with anyio.create_task_group() as tg:
                recorder.start(tg)
                manager.attach(tg)
                await manager.reconcile()
                # Timers are armed: from now on this daemon's timer, not catch-up, owns
                # what falls due, which is what the run's start tells ``explain``.
                await heartbeat.start()
                tg.start_soon(heartbeat.run, name="heartbeat")
                tg.start_soon(ledger.run, name="ledger")
                tg.start_soon(dispatcher.run, tg, name="dispatcher")
                tg.start_soon(timer.run, name="timer")
                if locks.backend != LocalLocks.backend:
                    # Replicas: each records the due fires of the timer shards it leases.
                    keeper = ShardKeeper(locks, timer, partial(_count_replicas, locks))
                    tg.start_soon(keeper.run, name="timer-shards")
                feed = store.changes()
                tg.start_soon(_watch_changes, store, feed, manager, dispatcher, name="changes")
                tg.start_soon(_prune_history, store, locks, settings, name="prune")
                # The density page's expressions as written, read in pages while serving.
                tg.start_soon(prepare_dashboard, app, name="dashboard")
                if feed.pushed:
                    tg.start_soon(_periodic, store, manager, name="periodic")
                http_done = anyio.Event()
                tg.start_soon(_serve_http, server, http_done, name="http")
                tg.start_soon(
                    locks.heartbeat,
                    replica_info(config.host, config.port),
                    name="replica-heartbeat",
                )
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    while not server.started:
                        if server.should_exit:
                            raise ConfigError(f"cannot listen on {config.host}:{config.port}")
                        await anyio.sleep(0.02)
                    settle_heap()
                    log.info(
                        f"wfsched serving on http://{config.host}:{config.port}",
                        extra={"status": "started"},
                    )
                    if ready is not None:
                        ready.set()
                    async for signum in signals:
                        log.info("shutting down", extra={"status": signal.Signals(signum).name})
                        break
                # Intake first: uvicorn stops listening and lets the requests under way finish.
                # Their group commits need the recorder, and their triggers must still be
                # routed, so both keep running until the server is done.
                server.should_exit = True
                with anyio.move_on_after((config.timeout_graceful_shutdown or 0) + HTTP_STOP):
                    await http_done.wait()
                # The run ends before the timer stops: an instant falling due in between
                # may still fire, never be blamed on a daemon that "ran" but did not fire it.
                await heartbeat.end()
                await manager.stop_all()
                await dispatcher.drain(DRAIN_SECONDS)
                tg.cancel_scope.cancel()
        finally:
            await locks.close()
            await dispatcher.sender.aclose()
        log.info("stopped", extra={"status": "stopped"})
