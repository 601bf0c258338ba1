"""``Keeper``: the services of lightkeeper wired together from settings.

The CLI, the web app, the scheduler and library users all start here, and they talk to ``Keeper`` alone:
its verbs (``connections``, ``fresh_token``, ``refresh``, ``disconnect``, ``create_link``, ``show_schedule``
…) are the whole surface, so the parts behind them (store, refresher, connect flow) can change without
their callers changing. Everything with a side effect (HTTP transport, clock, database) can be handed in,
which is how tests run the real code against fakes at the seams. Helpers of the verbs that are not wiring live
beside what they serve (a run's cutoffs in ``scheduler.cutoffs``), so this facade stays a list of verbs within the
500 lines a module may have.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import socket
import ssl
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType

import httpx2

from .client import Lightspeed, LightspeedSession
from .clock import Clock, utcnow
from .config import Settings
from .connect import ConnectLink, ConnectService, StartedSession
from .crypto import TokenCipher
from .errors import ConnectionNotFound
from .health import Health, SchedulerProbe
from .health import check as check_health
from .lightspeed import ApiClient
from .lightspeed.api_pacing import ApiPacer
from .lightspeed.senders import AiohttpSender
from .lightspeed.tls import trust
from .metrics import DatabaseCollector, DatabaseSummary, unwatch_database, watch_database
from .notify import Notifier
from .providers import build_pacers, build_providers, oauth_client
from .proxy import Proxy, Upstream
from .refresh import (
    AccessGrant,
    ProgressCallback,
    Refresher,
    RunExecutor,
    RunOptions,
    TokenProvider,
    stale_after_s,
)
from .rotation import WAIT, KeyRotation, RotationSummary
from .rotation import ProgressCallback as RotationProgress
from .scheduler.cutoffs import RunCutoffs
from .scheduler.schedule import ScheduleService, ScheduleState
from .store import (
    ConnectionRecord,
    ConnectSession,
    DailyOutcomes,
    DashboardRepo,
    EventRecord,
    Job,
    RunRecord,
    Status,
    Store,
    StrictCutoffs,
    Trigger,
    current_revision,
    ensure_current,
    head_revision,
    sqlite_path,
)
from .vault import TokenVault
from .version import __version__

USER_AGENT = f"lightkeeper/{__version__} (+https://github.com/lightkeeper)"


def worker_id() -> str:
    """Names this process in leases and run records: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Keeper:
    """lightkeeper's services for one process. Use as a context manager, or call ``close``.

    The attributes (``store``, ``tokens``, ``runs``, ``connect``, ``schedule``, …) are the wired parts,
    public for tests and for the rare caller that needs one; everyday code uses the verbs below.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        transport: httpx2.BaseTransport | None = None,
        clock: Clock = utcnow,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.owner = owner or worker_id()
        # Every process writes webhook events in the change's transaction; NOTIFY_WEBHOOK_URL: who delivers.
        self.store = store or Store.from_url(settings.database_url)
        self.cipher = TokenCipher.from_texts(
            settings.token_encryption_key.get_secret_value(), settings.token_encryption_old_keys.get_secret_value()
        )
        # One TLS trust for every client of Lightspeed (``lightspeed.tls``): httpx2's and aiohttp's.
        self.tls = trust()
        self.http = httpx2.Client(
            verify=self.tls, transport=transport, timeout=settings.http_timeout_s, headers={"User-Agent": USER_AGENT}
        )
        self.oauth = oauth_client(settings, http=self.http, clock=clock)  # R-Series' /auth/oauth/*
        # Every process on this database books an account's API requests in the same bucket row.
        self.api_pacer = ApiPacer(self.store.api_buckets, client_id=settings.lightspeed_client_id)
        self.api = ApiClient(
            http=self.http,
            api_url=settings.lightspeed_api_url,
            pacer=self.api_pacer,
            write_cost=settings.lightspeed_write_cost,
            max_wait_s=settings.proxy_max_wait_s,  # the verbs' cap, as the proxy's (a stock batch's: longer)
        )
        # R-Series, X-Series or both: those whose client id is set (``lightspeed.providers`` is the seam).
        self.providers = build_providers(settings, http=self.http, oauth=self.oauth, api=self.api, clock=clock)
        self.vault = TokenVault(self.cipher)
        self.connect = ConnectService(
            store=self.store,
            cipher=self.cipher,
            vault=self.vault,
            providers=self.providers,
            clock=clock,
            public_url=settings.public_url,
        )
        self.refresher = Refresher(
            store=self.store,
            vault=self.vault,
            providers=self.providers,
            # One spacing per OAuth client for every process sharing the database: Lightspeed limits each
            # client as a whole.
            pacers=build_pacers(settings, self.store, self.providers),
            clock=clock,
            owner=self.owner,
            lease=timedelta(seconds=settings.refresh_lease_s),
            max_retry_after=settings.refresh_max_retry_after_s,
            http_timeout=settings.http_timeout_s,
            # Runs send through aiohttp (docs/ARCHITECTURE.md); a transport handed in is used for every request.
            open_sender=functools.partial(_aiohttp_sender, tls=self.tls) if transport is None else None,
        )
        self.tokens = TokenProvider(
            self.refresher,
            leeway=timedelta(seconds=settings.token_refresh_leeway_s),
            wait=timedelta(seconds=settings.token_wait_s),
        )
        # The HTTP API proxy (``/api/connections/{id}/lightspeed/…``): host apps in any language call Lightspeed
        # through it and never hold a token.
        self.proxy = Proxy(
            tokens=self.tokens,
            providers=self.providers,  # each connection's provider: its URLs, its pages, its pacing model
            upstream=Upstream(user_agent=USER_AGENT, timeout_s=settings.proxy_timeout_s, tls=self.tls),
            write_cost=settings.lightspeed_write_cost,
            max_wait_s=settings.proxy_max_wait_s,
        )
        self.runs = RunExecutor(
            self.refresher,
            RunOptions(
                concurrency=settings.refresh_concurrency,
                heartbeat=timedelta(seconds=settings.run_heartbeat_s),
                stale_after=timedelta(seconds=stale_after_s(settings.run_heartbeat_s)),
            ),
        )
        # Who ticks the refresh job (embedded schedulers or pg_cron), when, and whether.
        self.schedule = ScheduleService(self.store, clock=clock, default_schedule=settings.refresh_schedule)
        self.cutoffs = RunCutoffs(settings, clock, self.schedule.job)  # which connections a run starting now takes
        # The outbox's upkeep (error sweep, giving up, pruning) and, with NOTIFY_WEBHOOK_URL, its delivery.
        self.notifier = Notifier(self.store.events, settings, clock=clock, owner=self.owner, user_agent=USER_AGENT)
        # /metrics (and worker --metrics-port) read these gauges from the database: every replica agrees.
        statuses, providers = [s.value for s in Status], self.providers.known
        self.gauges = DatabaseCollector(self._database_summary, statuses=statuses, providers=providers, now=clock)
        watch_database(self.gauges)
        self._scheduler: SchedulerProbe | None = None

    # -- connections -------------------------------------------------------------------------------------
    def connections(
        self, *, user_id: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[ConnectionRecord]:
        """Every connection (at most ``limit``), or those of one host-app user and/or in one status; latest
        refresh first."""
        rows = self.store.connections.iter(user_id=user_id, status=status, batch=min(limit or 500, 500))
        return [*itertools.islice(rows, limit)]

    def connection(self, connection_id: int) -> ConnectionRecord:
        """One connection; ``ConnectionNotFound`` if there is none with this id."""
        record = self.store.connections.get(connection_id)
        if record is None:
            raise ConnectionNotFound(f"there is no connection {connection_id}")
        return record

    def status_counts(self) -> dict[Status, int]:
        """How many connections are in each status, every status named (zero when none), in one query."""
        found = self.store.connections.status_summary().counts
        return {status: found.get(status.value, 0) for status in Status}

    def refreshable_count(self, *, due: bool = False) -> int:
        """How many connections a refresh of everything would work on (``connected`` or ``error``); with
        ``due``, how many a due-based run starting now would (see ``refresh``)."""
        return self.store.connections.count_refreshable(self.due_before() if due else None)

    def disconnect(self, connection_id: int) -> ConnectionRecord:
        """Revoke at Lightspeed, forget the tokens, mark ``disconnected``. If Lightspeed cannot be told,
        nothing changes (a ProviderError says why); an already dead token counts as revoked."""
        record = self.connection(connection_id)
        if record.status is not Status.DISCONNECTED:
            with self.tokens.leased(connection_id) as lease:
                if lease.record.refresh_token is not None:
                    # A provider with no revoke (X-Series): the tokens are only forgotten here.
                    provider = self.refresher.provider_of(lease.record)
                    provider.revoke(self.vault.refresh_token(lease.record), lease.record.account_id)
                self.store.connections.disconnect(connection_id, lease_token=lease.token, now=self.clock())
        return self.store.connections.get(connection_id) or record

    # -- tokens ------------------------------------------------------------------------------------------
    def fresh_token(self, connection_id: int) -> AccessGrant:
        """An access token valid for at least ``TOKEN_REFRESH_LEEWAY_S``, refreshed first if needed."""
        return self.tokens.fresh_token(connection_id)

    async def afresh_token(self, connection_id: int) -> AccessGrant:
        """``fresh_token`` for asyncio code."""
        return await asyncio.to_thread(self.fresh_token, connection_id)

    def current_token(self, connection_id: int) -> AccessGrant | None:
        """The stored access token if it is valid for the leeway, else None (then call ``fresh_token``).

        One read and a decrypt: it never waits and never calls Lightspeed, so async code may call it on
        its event loop and hand only a refresh to a thread."""
        return self.tokens.current(connection_id)

    def check_stock(self, connection_id: int) -> ConnectionRecord:
        """The connection, if ``update-stock`` can set its stock; else ``InputError`` (X-Series: use the proxy)."""
        record = self.connection(connection_id)
        self.refresher.provider_of(record).check_stock(record)
        return record

    def lightspeed(self, connection_id: int) -> LightspeedSession:
        """The connection's Lightspeed API client, for ``with`` or ``async with``."""
        return LightspeedSession(Lightspeed(self.tokens, self.api, connection_id, self.providers))

    # -- refresh runs ------------------------------------------------------------------------------------
    def refresh(
        self,
        *,
        trigger: str = Trigger.MANUAL,
        connection_id: int | None = None,
        progress: ProgressCallback | None = None,
        due: bool = False,
        stop: threading.Event | None = None,
    ) -> RunRecord:
        """Refresh every refreshable connection (or one) in a recorded run, here and now; its final record.

        ``progress`` is called once per connection done. With ``due``, as automatic runs do: only connections
        last refreshed more than ``REFRESH_DUE_AFTER`` ago (every one when that is 0). Once ``stop`` is set
        nothing new starts, the refreshes in flight finish and are saved, and the run is closed (``interrupted``)
        unless another process still works on it."""
        due_before = self.due_before() if due else None
        return self.runs.run(
            trigger=trigger,
            connection_id=connection_id,
            progress=progress,
            due_before=due_before,
            strict=self.strict_cutoffs(),
            stop=stop,
        )

    def strict_cutoffs(self) -> StrictCutoffs:
        """Which connections of strict rotation (X-Series) a full run starting now refreshes (``policy``)."""
        return self.cutoffs.strict()

    def due_before(self) -> datetime | None:
        """The cutoff of a due-based run starting now: ``REFRESH_DUE_AFTER`` ago; None when that is 0."""
        return self.cutoffs.due_before()

    def begin_run(self, *, trigger: str, connection_id: int | None = None) -> RunRecord:
        """Record a run starting now (or the full run already going, to join) without working on it;
        ``execute_run`` does the work, e.g. on a background thread. Refuses an unknown or expired
        connection, and keys that decrypt nothing, before anything is recorded."""
        return self.runs.begin(trigger=trigger, connection_id=connection_id, strict=self.strict_cutoffs())

    def execute_run(
        self,
        run: RunRecord,
        *,
        progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
        hand_back: bool = False,
    ) -> RunRecord:
        """Work on a run (begun anywhere) until it is over or ``stop`` is set; its record then. The last process
        to leave closes it (``interrupted`` if stopped, unless ``hand_back``: kept open for a successor)."""
        return self.runs.execute(run, progress=progress, stop=stop, hand_back=hand_back)

    def run_history(self, *, limit: int = 20) -> list[RunRecord]:
        """The newest runs first, after closing runs whose processes stopped beating (``interrupted``)."""
        self.interrupt_stale_runs()
        return self.store.runs.list(limit=limit)

    def outcome_history(self, *, days: int = 14) -> list[DailyOutcomes]:
        """Refresh outcomes summed by UTC day of the runs' start, for the last ``days`` days (today
        included), oldest first; days without runs are zeros."""
        today = self.clock().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return self.store.runs.daily_outcomes(first_day=today - timedelta(days=days - 1), days=days)

    def interrupt_stale_runs(self) -> int:
        """Close as ``interrupted`` the runs nobody has worked on for a while; how many there were."""
        return self.runs.interrupt_stale()

    def running_runs(self) -> list[RunRecord]:
        """Runs in progress, oldest first: what a worker helps with."""
        return self.store.runs.running()

    def start_queued_run(self) -> RunRecord | None:
        """Start the oldest run requested by SQL or pg_cron (one process wins it, the others join it
        as a running run); None when nothing is queued or another process won."""
        return self.store.runs.activate_queued(owner=self.owner, now=self.clock(), **self.cutoffs.automatic())

    def start_scheduled_run(self, job: Job, tick: datetime) -> RunRecord | None:
        """Record the run of one cron tick of ``job``; None if another process recorded it first.

        A tick that comes while a run is still going is recorded as ``skipped``, not doubled."""
        cutoffs = self.cutoffs.automatic()  # due_before (REFRESH_DUE_AFTER) and strict (X-Series)
        return self.store.runs.start_tick(job_name=job.name, tick=tick, owner=self.owner, now=self.clock(), **cutoffs)

    # -- the schedule ------------------------------------------------------------------------------------
    def refresh_job(self) -> Job:
        """The refresh job's row, created with ``REFRESH_SCHEDULE`` if there is none yet."""
        return self.schedule.job()

    def show_schedule(self) -> ScheduleState:
        """The job's name, cron expression, whether it is active, who ticks it and its next run."""
        return self.schedule.show()

    def set_schedule(self, expression: str) -> ScheduleState:
        """Change the cron expression (UTC); a bad one is refused (``ConfigError``) and changes nothing."""
        return self.schedule.set(expression)

    def pause_schedule(self) -> ScheduleState:
        """Stop ticking until ``resume_schedule`` (the guide's ``cron.unschedule``)."""
        return self.schedule.pause()

    def resume_schedule(self) -> ScheduleState:
        """Tick again from the next scheduled time; ticks missed while paused are not replayed."""
        return self.schedule.resume()

    def use_pg_cron(self) -> ScheduleState:
        """Hand the job to pg_cron (PostgreSQL): ``SELECT refresh_lightspeed_tokens();`` on the schedule."""
        return self.schedule.use_pg_cron()

    def use_embedded(self) -> ScheduleState:
        """Take the job back from pg_cron, keeping the schedule and state it had there."""
        return self.schedule.use_embedded()

    # -- the connect flow --------------------------------------------------------------------------------
    def create_link(
        self, user_id: str, *, return_to: str | None = None, label: str | None = None, provider: str | None = None
    ) -> ConnectLink:
        """A one-time URL, valid for an hour, that connects ``user_id``'s Lightspeed account on ``provider``
        (``r-series`` or ``x-series``; default: the only one configured, else R-Series); its confirm page names
        ``label`` (whose store this is; default: the user id)."""
        return self.connect.create_link(user_id, return_to=return_to, label=label, provider=provider)

    def preview_link(self, link_token: str) -> ConnectSession:
        """What a link's confirm page shows; uses nothing (scanners and previews open links).
        ``ConnectFlowError`` if the link is unknown, used or expired."""
        return self.connect.preview(link_token)

    def start_connect(self, link_token: str) -> StartedSession:
        """Use a link (the confirm page's button): opens a browser session and gives the URL of
        Lightspeed's consent page."""
        return self.connect.start(link_token)

    def complete_connect(self, params: Mapping[str, str], *, browser_token: str) -> ConnectionRecord:
        """Finish the OAuth callback: check its state against the browser session it was issued to,
        exchange the code, store the tokens; the connection. ``ConnectFlowError`` changes nothing."""
        return self.connect.complete(params, browser_token=browser_token)

    def browser_session(self, browser_token: str) -> ConnectSession | None:
        """The user behind a browser session's cookie, while the session lasts."""
        return self.connect.browser_session(browser_token)

    def authorize_url(self, user_id: str, *, session_id: int, provider: str | None = None) -> str:
        """Lightspeed's consent URL for a new sign-in of ``user_id`` in a browser session (Reconnect), on
        ``provider`` (default: the session's)."""
        return self.connect.authorize_url(user_id, session_id=session_id, provider=provider)

    @staticmethod
    def csrf_token(cookie: str, *, purpose: str = "session") -> str:
        """A form's CSRF token, bound to a cookie's secret and to the form's ``purpose``."""
        return ConnectService.csrf_token(cookie, purpose=purpose)

    def check_csrf(self, cookie: str, submitted: str, *, purpose: str = "session") -> None:
        """``ConnectFlowError`` unless ``submitted`` is the CSRF token of ``cookie`` and ``purpose``."""
        self.connect.check_csrf(cookie, submitted, purpose=purpose)

    @staticmethod
    def confirm_purpose(link_token: str) -> str:
        """The CSRF purpose of one link's confirm form: its token passes for no other link."""
        return ConnectService.confirm_purpose(link_token)

    # -- webhook events ----------------------------------------------------------------------------------
    def events(self, *, limit: int = 50, status: str | None = None) -> list[EventRecord]:
        """The newest webhook events first (or those in one status: pending, delivered, dead)."""
        return self.store.events.list(limit=limit, status=status)

    def retry_event(self, event_id: str) -> EventRecord:
        """Send one event again now, whatever its status; its record after the attempt (``last_error``
        says why it failed). ``EventNotFound`` for an unknown id, ``EventBusy`` if it is being sent (an event
        is never in flight twice), ``ConfigError`` when NOTIFY_WEBHOOK_URL is unset."""
        return self.notifier.retry(event_id)

    def deliver_events(self) -> int:
        """One round here and now: the ``connection.error`` sweep, the outbox's tidying (give up, prune), then
        every due event; how many attempts were made (0 when NOTIFY_WEBHOOK_URL is unset)."""
        return self.notifier.deliver()

    def start_notifier(self) -> bool:
        """Look after the outbox in the background (``serve``, ``worker``) until ``stop_notifier`` or ``close``,
        and deliver its events when NOTIFY_WEBHOOK_URL is set; whether this process delivers."""
        self.notifier.start()
        return self.notifier.delivers

    def stop_notifier(self) -> None:
        self.notifier.stop()

    # -- the dashboard -----------------------------------------------------------------------------------
    def dashboard_state(self) -> DashboardRepo:
        """The dashboard's sign-outs and wrong keys per address, in the database: every replica shares them."""
        return self.store.dashboard

    # -- the encryption keys -----------------------------------------------------------------------------
    def rotate_keys(
        self,
        *,
        batch_size: int = 100,
        progress: RotationProgress | None = None,
        wait: timedelta = WAIT,
        pause: timedelta = timedelta(0),
    ) -> RotationSummary:
        """Re-encrypt every stored secret (tokens of every status, PKCE verifiers) under TOKEN_ENCRYPTION_KEY,
        row by row under its lease, while workers run; safe to repeat and to resume. Rows a refresh holds are
        tried again for up to ``wait``; ``pause`` between batches spares a busy database."""
        rotation = KeyRotation(self.store, self.cipher, owner=self.owner, wait=wait, pause=pause)
        return rotation.run(batch_size=batch_size, progress=progress)

    # -- the database ------------------------------------------------------------------------------------
    def ensure_schema(self, *, auto_create: bool = True) -> None:
        """Create a brand-new SQLite file's schema; refuse a database behind the code's migrations."""
        is_file = sqlite_path(self.settings.database_url) is not None
        ensure_current(self.store.engine, auto_create=auto_create and is_file)

    def schema_revision(self) -> str | None:
        """The database's migration revision (None: no lightkeeper schema); raises if it is unreachable."""
        return current_revision(self.store.engine)

    def health(self) -> Health:
        """Every health check by name: the database answers, its schema is the code's, and the scheduler
        loop watched here (``watch_scheduler``) is alive."""
        return check_health(self.schema_revision, head_revision(), self._scheduler)

    def watch_scheduler(self, probe: SchedulerProbe | None) -> None:
        """Report this scheduler loop's liveness in ``health`` (None: no loop runs in this process)."""
        self._scheduler = probe

    def _database_summary(self) -> DatabaseSummary:
        summary = self.store.connections.status_summary()
        return DatabaseSummary(summary.counts, summary.oldest_refresh, summary.by_provider)

    @property
    def can_listen(self) -> bool:
        """Whether workers can be woken by the database (PostgreSQL LISTEN/NOTIFY); elsewhere they poll."""
        return self.store.can_listen

    def close(self) -> None:
        unwatch_database(self.gauges)
        self.notifier.close()
        self.http.close()
        self.store.close()

    def __enter__(self) -> Keeper:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


def _aiohttp_sender(limit: int, *, tls: ssl.SSLContext) -> AiohttpSender:
    return AiohttpSender(user_agent=USER_AGENT, limit=limit, tls=tls)


__all__ = ["USER_AGENT", "Keeper", "worker_id"]
