"""What an operator graphs and alerts on, in Prometheus' text format (``/metrics``).

Each process keeps its own registry and exposes it; with several replicas,
Prometheus scrapes each one and sums. Label values are few and fixed (call
names, outcomes, result words), never job IDs or users, so the series stay few.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LAG = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 900)
# CodeArts paths -> a call name, so a job ID or build number never becomes a label
_CALLS = [(re.compile(p), name) for p, name in (
    (r"^/v3/jobs/build$", "run"), (r"/record-info$", "record"), (r"/stop$", "stop"),
    (r"/history$", "history"), (r"/history-parameters$", "parameters"),
    (r"/output-info$", "outputs"), (r"^/v3/auth/tokens$", "iam_login"))]


def call_name(path: str) -> str:
    path = path.split("?", 1)[0]
    return next((name for pattern, name in _CALLS if pattern.search(path)), "other")


class Metrics:
    """The bot's counters, histograms and gauges, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.commands = Counter(
            "buildbot_commands", "Slash commands and their answers, by outcome "
            "(confirm, started, refused, help, cancelled, expired)", ["outcome"], registry=r)
        self.builds_started = Counter("buildbot_builds_started", "Builds CodeArts started",
                                      registry=r)
        self.builds_ended = Counter("buildbot_builds_ended", "Builds seen to end, by result",
                                    ["result"], registry=r)
        self.confirmation_seconds = Histogram(
            "buildbot_command_to_confirmation_seconds",
            "From the command reaching the bot to its Run/Cancel question being posted",
            buckets=_LATENCY, registry=r)
        self.result_lag_seconds = Histogram(
            "buildbot_build_end_to_reply_seconds",
            "From the bot seeing a build end to its result being posted", buckets=_LAG,
            registry=r)
        self.codearts_calls = Histogram(
            "buildbot_codearts_call_seconds", "CodeArts and IAM calls, by call and outcome",
            ["call", "outcome"], buckets=_LATENCY, registry=r)
        self.slack_calls = Histogram(
            "buildbot_slack_call_seconds", "Slack Web API and response_url calls, by method "
            "and outcome", ["method", "outcome"], buckets=_LATENCY, registry=r)
        self.database_errors = Counter("buildbot_database_errors",
                                       "Database errors seen by the worker and the watcher",
                                       registry=r)
        self.watcher_pass = Gauge("buildbot_watcher_last_pass_timestamp_seconds",
                                  "When the watcher last leased due builds successfully",
                                  registry=r)
        self.budget_waited = Gauge("buildbot_slack_budget_wait_seconds",
                                   "Seconds Slack calls of this process waited for their "
                                   "method's rate-limit budget, in all", registry=r)
        self.progress_skipped = Gauge("buildbot_progress_updates_put_off",
                                      "Progress updates put off because Slack's budget had "
                                      "nothing to spare, in all", registry=r)
        self.followed = Gauge("buildbot_builds_followed",
                              "Builds being followed (not yet reported), all replicas",
                              registry=r)

    def slack_budget(self, waited: Callable[[], float], skipped: Callable[[], int]) -> None:
        """The Slack budget's totals, read at scrape time: seconds calls waited for their
        tokens, and progress updates put off for want of one."""
        self.budget_waited.set_function(waited)
        self.progress_skipped.set_function(lambda: float(skipped()))

    def follow_count(self, count: Callable[[], int]) -> None:
        """Read the number of followed builds at scrape time (NaN if the store is away)."""
        def read() -> float:
            try:
                return float(count())
            except Exception:
                return math.nan

        self.followed.set_function(read)

    def codearts_call(self, method: str, path: str, outcome: str, seconds: float) -> None:
        self.codearts_calls.labels(call_name(path), outcome).observe(seconds)

    def slack_call(self, method: str, outcome: str, seconds: float) -> None:
        self.slack_calls.labels(method, outcome).observe(seconds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


# Slack error words are many; past these, an outcome label reads "error".
SLACK_OUTCOMES = frozenset({
    "ok", "ratelimited", "timeout", "internal_error", "fatal_error", "channel_not_found",
    "is_archived", "not_in_channel", "msg_too_long", "invalid_auth", "missing_scope",
})


def slack_outcome(error: str | None) -> str:
    if error is None:
        return "ok"
    return error if error in SLACK_OUTCOMES else "error"
