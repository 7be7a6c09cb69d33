"""Assembly: settings and config in, a running bot out (HTTP or Socket Mode)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy.exc import SQLAlchemyError

from bot.codearts.auth import AkSkAuth, IamPasswordAuth, TokenAuth
from bot.codearts.client import CodeArtsClient
from bot.config import BuildbotConfig
from bot.engine import Engine
from bot.flow import Flow
from bot.gate import WorkspaceGuard
from bot.heartbeat import Heartbeat
from bot.home import Home
from bot.metrics import Metrics
from bot.notifier import BUDGET_WAIT, Notifier
from bot.replay import ReplayGuard
from bot.settings import Settings
from bot.slack_app import create_app, later
from bot.slack_budget import SlackBudget, parse_limits
from bot.slack_io import BACKOFF, make_web_client
from bot.store import DatabaseClock, Store
from bot.usergroups import SlackUserGroups
from bot.watcher import Watcher
from bot.web import (
    HEALTH_MAX_CONNECTIONS,
    HEALTH_THREADS,
    Readiness,
    make_health_wsgi,
    make_server,
    make_wsgi,
    ping,
)

log = logging.getLogger(__name__)


class StartError(Exception):
    """A dependency refused us at start; the text names the variable, never a secret."""


class Runtime:
    """Every long-lived part of the bot, built once; ``close()`` releases them."""

    def __init__(self, settings: Settings, config: BuildbotConfig, *,
                 api: CodeArtsClient | None = None, clock: Callable[[], float] = time.time,
                 watch: bool = True, slack_backoff: float = BACKOFF,
                 slack_timeout: int = 10, verify: bool = True,
                 slack_budget_wait: float = BUDGET_WAIT) -> None:
        """``verify``: have Slack accept the bot token now (tests, benchmarks, the demo);
        ``python -m bot`` passes False and calls ``verify_slack()`` once its HTTP port is
        open. The watcher (``watch``) starts only once Slack has accepted the token, so a
        bad token cannot make it give up on the results it owes."""
        self.settings = settings
        self._watch, self._watching = watch, False
        self.server: Any = None  # HTTP mode's server, or Socket Mode's health listener
        self.webhook: Any = None  # bot.webhook.CodeArtsEvents, when it is on (HTTP mode)
        self.ready = threading.Event()
        try:
            self.store = Store.from_url(
                settings.database_url,
                threads=settings.worker_threads + settings.watcher_threads + 3)
        except (SQLAlchemyError, ImportError, ValueError) as exc:  # ImportError: no driver
            raise StartError(f"cannot open the database in DATABASE_URL "
                             f"({type(exc).__name__}: {_first_line(exc)})") from None
        # Leases, expiries and due times are read from the database's clock, so replicas
        # with drifting clocks agree; ``clock`` only moves it (tests move time forward).
        self.clock = DatabaseClock(self.store.engine, offset=(
            (lambda: 0.0) if clock is time.time else (lambda: clock() - time.time())))
        # this process's incarnation beats in the database from now on; every intent it
        # opens names it, so a restart or another replica settles them once it stops
        self.heartbeat = Heartbeat(self.store, clock=self.clock)
        self.store.owner = self.heartbeat.id
        self.heartbeat.start()
        self.api = api or client_from_settings(settings)
        self.metrics = Metrics()
        self.metrics.follow_count(self.store.watching_count)
        self.api.observer = self.metrics.codearts_call
        # Slack's rate limits, one budget per method for all threads; replicas split them
        self.budget = SlackBudget(parse_limits(settings.slack_rate_limits),
                                  clock=clock, share=self.heartbeat.replicas)
        self.metrics.slack_budget(lambda: self.budget.waited, lambda: self.budget.skipped)
        self.slack = make_web_client(settings.slack_bot_token.get_secret_value(),
                                     settings.slack_api_url, backoff=slack_backoff,
                                     timeout=slack_timeout, limited=self.budget.pause)
        self.worker = ThreadPoolExecutor(settings.worker_threads,
                                         thread_name_prefix="buildbot-work")
        groups = SlackUserGroups(self.slack, budget=self.budget)  # one cache for both sides
        self.engine = Engine(config=config, store=self.store, api=self.api,
                             notifier=Notifier(self.slack, backoff=slack_backoff,
                                               metrics=self.metrics, budget=self.budget,
                                               budget_wait=slack_budget_wait),
                             poll_seconds=settings.build_poll_seconds,
                             progress_every=settings.progress_update_seconds,
                             log_tail_lines=settings.log_tail_lines,
                             link_template=settings.build_link_template,
                             project_id=settings.codearts_project_id,
                             intent_grace=settings.intent_grace_seconds, clock=self.clock,
                             alive=self.heartbeat.fresh, groups=groups)
        self.flow = Flow(config=config, engine=self.engine, slack=self.slack,
                         groups=groups, worker=self.worker, clock=self.clock)
        self.home = Home(config=config, store=self.store, notifier=self.engine.notifier,
                         clock=self.clock, groups=groups)
        self.flow.home = self.home
        secret = settings.slack_signing_secret
        # no auth.test here: ``verify_slack`` makes it, when the caller is ready for it
        self.replay_guard = ReplayGuard()
        self.workspace = WorkspaceGuard(later(self.flow))  # learns its team from auth.test
        self.app = create_app(self.flow, token_verification=False,
                              signing_secret=secret.get_secret_value() if secret else None,
                              replay_guard=self.replay_guard, workspace=self.workspace)
        self.watcher = Watcher(self.engine, poll_seconds=settings.build_poll_seconds,
                               lease_seconds=settings.watch_lease_seconds,
                               threads=settings.watcher_threads,
                               audit_keep_days=settings.audit_keep_days, clock=self.clock,
                               owner=self.heartbeat.id)
        if verify:
            try:
                self.verify_slack()
            except StartError:
                self.heartbeat.stop(clean=True)
                self.store.close()
                raise

    def verify_slack(self) -> None:
        """Have Slack accept the bot token (``auth.test``), then be ready (``/readyz``) and
        start the watcher. A refusal or no answer raises StartError naming the variable."""
        try:
            answer = self.slack.auth_test()
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown_error") if exc.response else "no answer"
            raise StartError(f"Slack refused SLACK_BOT_TOKEN ({error}): copy the Bot User "
                             "OAuth Token (xoxb-...) from your Slack app's OAuth & Permissions "
                             "page, reinstalling the app if it was revoked") from None
        except (SlackClientError, OSError) as exc:
            raise StartError(f"Slack could not be reached at SLACK_API_URL "
                             f"({type(exc).__name__}: {_first_line(exc)})") from None
        _remember_auth_test(self.app, answer)
        self.workspace.learn(answer)  # requests from any other workspace are refused
        self.ready.set()
        if self._watch and not self._watching:
            self._watching = True
            self.watcher.start()
            self.home.start_sweeping()  # Homes whose data changed are published again

    def readiness(self) -> Readiness:
        """``/readyz``'s answer: Slack has accepted the bot token (``ready``) and the
        database answers; the same in HTTP mode and on Socket Mode's HEALTH_PORT."""
        return Readiness(self.ready, lambda: ping(self.store.engine))

    def bind_http(self, *, host: str = "0.0.0.0", port: int | None = None) -> int:
        """Bind the HTTP server; returns the port. ``/healthz`` answers 200 once it serves;
        ``/readyz`` once Slack has accepted the token (``ready``) and the database answers."""
        secret = self.settings.slack_signing_secret
        wsgi = make_wsgi(self.app, self.readiness(),
                         secret.get_secret_value() if secret else None,
                         metrics=self.metrics.render if self.settings.metrics else None,
                         codearts_events=self.codearts_events())
        self.server = make_server(wsgi, host=host,
                                  port=self.settings.port if port is None else port,
                                  threads=max(8, self.settings.worker_threads * 2),
                                  max_connections=self.settings.http_max_connections,
                                  request_timeout=self.settings.http_request_timeout)
        # ``/readyz`` says "starting" until ``verify_slack`` has had Slack accept the token
        bound = int(self.server.effective_port)
        log.info("listening on %s:%s", host, bound)
        return bound

    def bind_health(self, *, host: str = "0.0.0.0", port: int | None = None) -> int:
        """Socket Mode: bind the health listener on HEALTH_PORT; returns the port. It answers
        ``/healthz``, ``/readyz`` and (METRICS=1) ``/metrics`` as HTTP mode does, and 404 to
        anything else (no ``/slack/events``, no webhook); ``serve_socket_mode`` serves it."""
        port = self.settings.health_port if port is None else port
        assert port is not None
        wsgi = make_health_wsgi(self.readiness(),
                                metrics=self.metrics.render if self.settings.metrics else None)
        self.server = make_server(wsgi, host=host, port=port, threads=HEALTH_THREADS,
                                  max_connections=HEALTH_MAX_CONNECTIONS,
                                  request_timeout=self.settings.http_request_timeout)
        bound = int(self.server.effective_port)
        log.info("health checks on %s:%s", host, bound)
        return bound

    def codearts_events(self) -> Any:
        """``POST /codearts/events`` (bot.webhook) when CODEARTS_WEBHOOK_SECRET is set: a
        nudge that makes followed builds due now and wakes the watcher; None otherwise."""
        hook = self.settings.codearts_webhook_secret
        if hook is None or not hook.get_secret_value():
            return None
        from bot.webhook import CodeArtsEvents

        self.webhook = CodeArtsEvents(hook.get_secret_value(), store=self.store,
                                      clock=self.clock, wake=self.watcher.wake)
        log.info("CodeArts webhook on: POST /codearts/events")
        return self.webhook

    def serve_http(self, *, host: str = "0.0.0.0", port: int | None = None) -> None:
        """Open the port, then (if not done yet) have Slack accept the token, then serve
        until stopped. Meanwhile ``/healthz`` answers 200 and ``/readyz`` 503 "starting"; a
        refusal raises StartError and the port closes."""
        if self.server is None:
            self.bind_http(host=host, port=port)
        if self.ready.is_set():
            self.server.run()
            return
        failed: list[BaseException] = []

        def serve() -> None:
            try:
                self.server.run()
            except BaseException as exc:  # handed to the caller's thread
                failed.append(exc)

        thread = threading.Thread(target=serve, name="buildbot-http", daemon=True)
        thread.start()
        self.verify_slack()
        while thread.is_alive():  # join with a timeout, so SIGTERM and Ctrl-C get through
            thread.join(0.5)
        if failed:
            raise failed[0]

    def serve_socket_mode(self) -> None:
        """Serve the health listener if one is bound (``bind_health``), then (if not done
        yet) have Slack accept the bot token, then open the Socket Mode connection and serve
        until stopped. As in HTTP mode, ``/readyz`` says "starting" until Slack has accepted
        the token; a refusal of either token raises and the listener closes (``close``)."""
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        token = self.settings.slack_app_token
        assert token is not None
        if self.server is not None:
            threading.Thread(target=self._serve_health, args=(self.server,),
                             name="buildbot-health", daemon=True).start()
        if not self.ready.is_set():
            self.verify_slack()
        # slack_bolt's Socket Mode handler leaves start() unannotated
        SocketModeHandler(self.app, token.get_secret_value()).start()  # type: ignore[no-untyped-call]

    def _serve_health(self, server: Any) -> None:
        try:
            server.run()
        except Exception:  # the bot goes on without it; a liveness probe will notice
            log.exception("the health listener on HEALTH_PORT stopped")

    def close(self, deadline: float = 30.0) -> bool:
        """Stop taking work, let work in flight finish for up to ``deadline`` seconds, then
        close the clients. A client still in use by then is left open (the process is
        ending anyway) rather than closed under a running thread; returns False then."""
        until = time.monotonic() + deadline
        if self.server is not None:
            self.server.close()
        watcher_idle = self.watcher.stop(deadline)
        self.home.stop_sweeping()
        self.worker.shutdown(wait=False, cancel_futures=False)
        workers_idle = self.flow.wait_idle(max(0.0, until - time.monotonic()))
        self.flow.status.close_status_pool()
        self.heartbeat.stop(clean=watcher_idle and workers_idle)
        if not (watcher_idle and workers_idle):
            log.warning("work still running after %.0f s; leaving its connections open", deadline)
            return False
        self.api.close()
        self.store.close()
        return True


def _remember_auth_test(app: Any, answer: Any) -> None:
    """Hand the ``auth.test`` answer to Bolt's single-workspace authorization, which would
    otherwise make the same call on the first request (it makes it at start only when Bolt
    verifies the token itself). If Bolt's internals change, it simply makes that call."""
    from slack_bolt.middleware.authorization.single_team_authorization import (
        SingleTeamAuthorization,
    )

    for middleware in getattr(app, "_middleware_list", ()):
        if isinstance(middleware, SingleTeamAuthorization) and not middleware.auth_test_result:
            middleware.auth_test_result = answer


def _first_line(exc: Exception) -> str:
    """The error's first line: drivers put connection details (never passwords) there."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# ---------------------------------------------------------------- the CodeArts client


def auth_from_settings(settings: Settings) -> TokenAuth | IamPasswordAuth | AkSkAuth:
    """The auth ``settings.auth_method`` asks for; Settings has already checked completeness."""
    method = settings.auth_method
    if method == "token":
        assert settings.codearts_token is not None
        return TokenAuth(settings.codearts_token)
    if method == "iam":
        assert settings.iam_user and settings.iam_password and settings.iam_domain
        assert settings.iam_project
        return IamPasswordAuth(settings.iam_endpoint, user=settings.iam_user,
                               password=settings.iam_password, domain=settings.iam_domain,
                               project=settings.iam_project)
    assert settings.cloud_sdk_ak and settings.cloud_sdk_sk
    return AkSkAuth(settings.cloud_sdk_ak, settings.cloud_sdk_sk, settings.codearts_project_id)


def client_from_settings(settings: Settings, **kwargs: Any) -> CodeArtsClient:
    """The client with the auth the settings choose (token, IAM login or AK/SK); ``kwargs``
    go to ``CodeArtsClient`` (tests pass short timeouts and backoffs)."""
    return CodeArtsClient(settings.codearts_endpoint, auth=auth_from_settings(settings), **kwargs)
