"""The bot at Slack's rate limits: a burst of results while progress runs and people type.

    python -m bench.slack_limits --quick       # 100 builds, 4 jobs, 2 channels: ~4 min
    python -m bench.slack_limits               # 1,000 builds, 20 jobs, 5 channels: a long
                                               # run, ~23 min per bot (see below)
    git worktree add /tmp/oldbot de336b8^      # the bot before the Slack budget
    python -m bench.slack_limits --bot-path /tmp/oldbot   # that bot, then this one

The Slack stand-in enforces Slack's documented limits (``SLACK_LIMITS`` in
bot/standins/slack.py, real time, not scaled): ``chat.update`` 50 a minute,
``chat.postMessage`` 60 a minute per channel, ``chat.postEphemeral`` and ``views.*`` 100,
``usergroups.users.list`` 20, each with bursts of three seconds' worth of calls; above
that it answers 429 with ``Retry-After``. One run, per bot:

* ``--builds`` builds over ``--jobs`` jobs (the jobs' builds spread evenly), the jobs'
  channel messages spread over ``--channels`` channels, all running in the CodeArts
  stand-in and followed by the bot (the store is seeded with them announced, as after
  their Run clicks); live progress on (the default), for ``--run-seconds``; then the
  jobs end one after another, all within ``--end-window`` seconds (a job's builds end
  together);
* throughout, every ``--every`` seconds a person's request, signed as Slack signs it:
  ``/build status``, or ``/build clicks`` and a Run click on its question (the ``clicks``
  job's builds are announced in the first channel and run past the end of the run); the
  answer latency is from sending to the answer (the ack's body, or the first post to the
  request's ``response_url`` reaching the stand-in);
* it waits until every build's result is posted (its thread reply, and its channel
  message updated after its end), or ``--timeout``, then 5 s more in which nothing may
  be posted twice.

Reported, with the goals of issue 27:

* results posted once: none missing, none twice (a thread reply carrying the build, by
  its metadata or its thread);
* last build's end -> last result (the latest of its reply and its message's update)
  against the least Slack's limits allow for that burst: each result needs one
  ``chat.update`` of its parent and one ``chat.postMessage`` in its channel, no earlier
  than its build's end, so with a bucket of ``b`` calls refilled at ``r`` a second, the
  last of ``n`` results cannot be out before ``max_k (end_k + (n - k - b) / r)`` (ends
  sorted, k from 0), taken for ``chat.update`` over all builds and for
  ``chat.postMessage`` channel by channel; the floor is the largest, less the last end.
  Goal: ratio <= 1.2;
* 429s as a share of Slack Web API calls (each 429 counted as a call). Goal: < 1%;
* answers to commands and clicks: p50, p99, max, and any not answered within 30 s.
  Goal: p99 < 3 s.

With ``--bot-path DIR`` the bot in ``DIR`` ("before", e.g. a worktree of ``de336b8^``,
the bot before the Slack budget) runs first, then this one ("now"), each against fresh
stand-ins and a fresh database, ``--repeat`` passes interleaved; medians per bot and the
ratios now / before are printed. The bots run as ``python -m bot`` builds them
(``Runtime``, HTTP endpoint and watcher), in their own process pinned to one core, with
the defaults a user gets (15 s poll, progress every 10 s, 8 workers, Slack's limits);
the first line printed says what differs from that and from the full-size run.

The full size is long because Slack's limits are real: 1,000 parent updates at 50
``chat.update`` a minute take 20 minutes, and the run waits for them.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench._common import (
    SECRET,
    USERS,
    Child,
    bot_values,
    median,
    pct,
    pin_cores,
    quiet_logging,
    serve_ours,
    table,
    widen_backlog,
    write_results,
)

STEPS = ("Checkout", "Compile", "Test", "Build image", "Push image")
CLICK_JOB = "clicks"
CLICK_JOB_ID = "c" * 32
ANSWER_TIMEOUT = 30.0  # an answer not in by then counts as missing (and as this long)
QUIET_SECONDS = 5.0  # after the last result: nothing more may be posted
GOAL_RATIO = 1.2
GOAL_LIMITED_PCT = 1.0
GOAL_ANSWER_P99 = 3.0
RESULT_EVENT = "buildbot_result"
DEFAULT_POLL = 15.0  # BUILD_POLL_SECONDS's default


@dataclass(frozen=True)
class Size:
    builds: int
    jobs: int
    channels: int
    run_seconds: float
    end_window: float
    every: float

    def describe(self) -> str:
        return (f"{self.builds:,} builds over {self.jobs} jobs in {self.channels} channels, "
                f"running {self.run_seconds:g} s with progress on, then ending within "
                f"{self.end_window:g} s; a command or click every {self.every:g} s")


FULL = Size(builds=1000, jobs=20, channels=5, run_seconds=180, end_window=60, every=3)
QUICK = Size(builds=100, jobs=4, channels=2, run_seconds=60, end_window=60, every=3)


def job_name(k: int) -> str:
    return f"job{k + 1:02d}"


def job_id(k: int) -> str:
    return f"{k + 1:032x}"


def channel(c: int) -> str:
    return f"CLIMIT{c + 1:02d}"


def job_channel(k: int, size: Size) -> str:
    return channel(k % size.channels)


def config_text(size: Size) -> str:
    """The jobs file: the measured jobs (each run from its channel) and the clicks job."""
    parts = ['admins = ["UADMIN"]\n']
    for k in range(size.jobs):
        parts.append(f'[jobs.{job_name(k)}]\nid = "{job_id(k)}"\nusers = ["*"]\n'
                     f'channels = ["{job_channel(k, size)}"]\n')
    parts.append(f'[jobs.{CLICK_JOB}]\nid = "{CLICK_JOB_ID}"\nusers = ["*"]\n'
                 f'channels = ["{channel(0)}"]\n')
    return "\n".join(parts)


# --- the floor Slack's limits set ---------------------------------------------------------

def least_finish(ends: Sequence[float], per_minute: float, burst_seconds: float) -> float:
    """The earliest moment ``len(ends)`` calls, each no earlier than its own end, can all
    be made through a bucket of ``per_minute`` calls a minute holding ``burst_seconds``
    of them: after the k-th end (sorted) the n - k calls left need n - k - burst tokens
    more than the bucket can hold."""
    if not ends:
        return float("-inf")
    rate = per_minute / 60.0
    burst = max(1.0, rate * burst_seconds)
    xs = sorted(ends)
    n = len(xs)
    return max(e + max(0.0, n - k - burst) / rate for k, e in enumerate(xs))


def floor_after_last_end(ends_by_channel: dict[str, list[float]], limits: dict[str, int],
                         burst_seconds: float) -> float:
    """Seconds from the last end to the last result Slack's limits allow at least: one
    chat.update per result (all channels), one chat.postMessage per result (its channel)."""
    every_end = [e for ends in ends_by_channel.values() for e in ends]
    last = max(every_end)
    finish = least_finish(every_end, limits["chat.update"], burst_seconds)
    for ends in ends_by_channel.values():
        finish = max(finish, least_finish(ends, limits["chat.postMessage"], burst_seconds))
    return finish - last


# --- people typing and clicking -----------------------------------------------------------

@dataclass
class Answer:
    kind: str  # "status" (the command), "command" (/build clicks), "click" (Run)
    sent: float
    seconds: float
    answered: bool


@dataclass
class People:
    """A thread sending a signed request every ``every`` seconds until ``stop``: in turn
    ``/build status``, and ``/build clicks`` followed by a Run click on its question."""

    url: str
    slack: Any
    every: float
    where: str
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(ANSWER_TIMEOUT + 5)

    def _run(self) -> None:
        from bot.standins.slack_requests import SlackSender

        sender = SlackSender(self.url + "/slack/events", SECRET)
        try:
            for i in range(10**9):
                if self.stop.wait(self.every if i else 0.0):
                    return
                user = USERS[i % len(USERS)]
                if i % 2 == 0:
                    self._ask(sender, "status", "status", user)
                else:
                    question = self._ask(sender, "command", CLICK_JOB, user)
                    value = run_value(question) if question else None
                    if value:
                        self._click(sender, value, user)
        finally:
            sender.close()

    def _ask(self, sender: Any, kind: str, text: str, user: str) -> dict[str, Any] | None:
        url = self.slack.response_url()
        sent = time.monotonic()
        try:
            resp = sender.command(text, user=user, channel=self.where, response_url=url)
        except OSError:
            self.answers.append(Answer(kind, sent, ANSWER_TIMEOUT, False))
            return None
        return self._answer(kind, sent, resp, url)

    def _click(self, sender: Any, value: str, user: str) -> None:
        from bot import messages as msg

        url = self.slack.response_url()
        sent = time.monotonic()
        try:
            resp = sender.click(msg.RUN, value, user=user, channel=self.where,
                                response_url=url)
        except OSError:
            self.answers.append(Answer("click", sent, ANSWER_TIMEOUT, False))
            return
        self._answer("click", sent, resp, url)

    def _answer(self, kind: str, sent: float, resp: Any,
                url: str) -> dict[str, Any] | None:
        """The ack's body when it carries the answer, else the first post to ``url``."""
        if resp.status_code == 200 and resp.content:
            self.answers.append(Answer(kind, sent, time.monotonic() - sent, True))
            body: dict[str, Any] = resp.json()
            return body
        path = urlsplit(url).path
        deadline = sent + ANSWER_TIMEOUT
        while time.monotonic() < deadline and not self.stop.is_set():
            first = next((c for c in self.slack.all_calls()
                          if c.method == "response_url" and c.path == path), None)
            if first is not None:
                self.answers.append(Answer(kind, sent, first.at - sent, True))
                return dict(first.params)
            time.sleep(0.05)
        if not self.stop.is_set():
            self.answers.append(Answer(kind, sent, ANSWER_TIMEOUT, False))
        return None


def run_value(message: dict[str, Any]) -> str | None:
    """The Run button's value in a confirmation question, if it has one."""
    from bot import messages as msg

    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == msg.RUN:
                return str(element.get("value"))
    return None


# --- one bot through one run ----------------------------------------------------------------

@dataclass(frozen=True)
class Seeded:
    id: str
    job: int
    channel: str
    ts: str
    end: float  # time.monotonic() of the build's end in the CodeArts stand-in


def start_builds(codearts: Any, size: Size) -> list[tuple[int, str, str, float]]:
    """The builds in the CodeArts stand-in: (job, build number, daily number, end)."""
    import httpx

    for k in range(size.jobs):
        duration = size.run_seconds + size.end_window * (k + 1) / size.jobs
        codearts.add_job(job_id(k), duration=duration, steps=STEPS)
    codearts.add_job(CLICK_JOB_ID, duration=10.0**7, steps=STEPS)
    made = []
    with httpx.Client(base_url=codearts.url, headers={"X-Auth-Token": codearts.token}) as c:
        for i in range(size.builds):
            k = i % size.jobs
            answer = c.post("/v3/jobs/build", json={"job_id": job_id(k)}).json()
            made.append((k, str(answer["actual_build_number"]),
                         str(answer["daily_build_number"])))
    ends = {(b.job_id, str(b.number)): b.started + b.duration
            for k in range(size.jobs) for b in codearts.builds(job_id(k))}
    return [(k, no, daily, ends[(job_id(k), no)]) for k, no, daily in made]


def seed_store(db_url: str, made: list[tuple[int, str, str, float]], size: Size,
               poll: float) -> list[Seeded]:
    """The builds as the bot keeps them after their Run clicks: announced in their job's
    channel (each with its message ts), followed, first checks spread over one poll."""
    from bot.store import Store, builds

    store = Store.from_url(db_url)
    now = time.time()
    seeded, rows = [], []
    for i, (k, no, daily, end) in enumerate(made):
        bid, where, ts = uuid.uuid4().hex, job_channel(k, size), f"1700000000.{i:06d}"
        seeded.append(Seeded(bid, k, where, ts, end))
        rows.append({"id": bid, "created_at": now, "user_id": USERS[i % len(USERS)],
                     "channel_id": where, "job_name": job_name(k), "job_id": job_id(k),
                     "build_no": no, "daily_build_number": daily, "response_url": None,
                     "announce": "posted", "message_channel": where, "message_ts": ts,
                     "watch": "watching", "next_check_at": now + 1 + poll * i / len(made),
                     "failures": 0})
    with store.engine.begin() as c:
        c.execute(builds.insert(), rows)
    store.close()
    return seeded


@dataclass
class Tally:
    """What the Slack stand-in saw of the seeded builds' results."""

    replies: dict[str, list[float]]  # build id -> arrivals of its result replies
    updates: dict[str, list[float]]  # build id -> arrivals of its message's updates
    progress: int  # updates of a seeded message before its build's end

    def done(self, build: Seeded) -> float | None:
        """When its result was out (reply and message updated), or None."""
        late = [u for u in self.updates.get(build.id, []) if u >= build.end]
        if not self.replies.get(build.id) or not late:
            return None
        return max(self.replies[build.id][0], max(late))


def tally(calls: list[Any], seeded: list[Seeded]) -> Tally:
    by_ts = {b.ts: b for b in seeded}
    by_id = {b.id: b for b in seeded}
    replies: dict[str, list[float]] = defaultdict(list)
    updates: dict[str, list[float]] = defaultdict(list)
    progress = 0
    for c in calls:
        if c.error or c.problem:
            continue
        if c.method == "chat.postMessage" and c.params.get("thread_ts"):
            meta = c.params.get("metadata") or {}
            tagged = (meta.get("event_payload") or {}).get("build_id") \
                if isinstance(meta, dict) else None
            build = by_id.get(str(tagged)) if tagged else by_ts.get(c.params["thread_ts"])
            if build is not None and (not tagged or meta.get("event_type") == RESULT_EVENT):
                replies[build.id].append(c.at)
        elif c.method == "chat.update" and c.params.get("ts") in by_ts:
            build = by_ts[c.params["ts"]]
            updates[build.id].append(c.at)
            progress += c.at < build.end
    return Tally(replies, updates, progress)


def measure(size: Size, *, bot_path: str | None, tmp: Path, poll: float,
            timeout: float | None, label: str,
            quiet: float = QUIET_SECONDS) -> dict[str, Any]:
    from bot.standins.slack import SLACK_BURST_SECONDS, SLACK_LIMITS
    from tests.fakes.codearts import FakeCodeArts
    from tests.fakes.slack import FakeSlack

    folder = tmp / f"{label}-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "buildbot.toml").write_text(config_text(size))
    with FakeSlack() as slack, FakeCodeArts() as codearts:
        widen_backlog(slack, codearts)
        slack.enforce_slack_limits(time.monotonic)
        made = start_builds(codearts, size)
        db_url = f"sqlite:///{folder / 'bot.db'}"
        seeded = seed_store(db_url, made, size, poll)
        values = bot_values(slack_api_url=slack.api_url, codearts_url=codearts.url,
                            db_url=db_url, config=folder / "buildbot.toml")
        if poll != DEFAULT_POLL:
            values["build_poll_seconds"] = poll
        bot = Child(serve_ours, values, str(folder / "bot.log"), True, bot_path, server=True)
        people = People(f"http://127.0.0.1:{bot.hello[0]}", slack, size.every, channel(0))
        people.start()
        ends_by_channel: dict[str, list[float]] = defaultdict(list)
        for b in seeded:
            ends_by_channel[b.channel].append(b.end)
        last_end = max(b.end for b in seeded)
        floor = floor_after_last_end(ends_by_channel, SLACK_LIMITS, SLACK_BURST_SECONDS)
        give_up = last_end + (timeout if timeout is not None else 2 * floor + 300)
        try:
            finished = wait_results(slack, seeded, give_up, label)
            if finished:
                time.sleep(quiet)  # anything posted twice comes now
        finally:
            people.close()
            bot.close()
        calls = slack.all_calls()
        limited = slack.rate_limited()
    return figures(size, label, seeded, calls, limited, people.answers, floor, last_end,
                   finished)


def wait_results(slack: Any, seeded: list[Seeded], give_up: float, label: str) -> bool:
    """Wait until every seeded build's result is out; False at ``give_up``."""
    shown = 0.0
    while True:
        t = tally(slack.all_calls(), seeded)
        out = sum(1 for b in seeded if t.done(b) is not None)
        now = time.monotonic()
        if out == len(seeded):
            return True
        if now >= give_up:
            return False
        if now - shown >= 60:
            print(f"  {label}: {out}/{len(seeded)} results out, "
                  f"{len(slack.rate_limited())} 429s so far", flush=True)
            shown = now
        time.sleep(2.0)


def figures(size: Size, label: str, seeded: list[Seeded], calls: list[Any],
            limited: list[tuple[str, str]], answers: list[Answer], floor: float,
            last_end: float, finished: bool) -> dict[str, Any]:
    t = tally(calls, seeded)
    posted = [len(t.replies.get(b.id, [])) for b in seeded]
    done = [t.done(b) for b in seeded]
    api = [c for c in calls if c.method != "response_url"]
    by_method: dict[str, int] = defaultdict(int)
    for method, _channel in limited:
        by_method[method] += 1
    last = max((d for d in done if d is not None), default=float("nan"))
    to_last = last - last_end if all(d is not None for d in done) else float("nan")
    lat = [a.seconds for a in answers]
    return {
        "bot": label, "size": size.__dict__, "finished": finished,
        "builds": len(seeded), "results_once": sum(1 for n in posted if n == 1),
        "results_missing": sum(1 for n in posted if n == 0),
        "results_double": sum(1 for n in posted if n > 1),
        "messages_not_updated_after_end": sum(1 for b in seeded if not [
            u for u in t.updates.get(b.id, []) if u >= b.end]),
        "last_end_to_last_result_s": to_last, "floor_s": floor,
        "ratio": to_last / floor if floor > 0 else float("nan"),
        "slack_calls": len(api) + len(limited), "limited": len(limited),
        "limited_pct": 100.0 * len(limited) / max(1, len(api) + len(limited)),
        "limited_by_method": dict(by_method),
        "progress_updates": t.progress,
        "answers": len(answers), "answers_missing": sum(1 for a in answers if not a.answered),
        "answer_p50_s": median(lat), "answer_p99_s": pct(lat, 99),
        "answer_max_s": max(lat) if lat else float("nan"),
        **{f"{kind}_p99_s": pct([a.seconds for a in answers if a.kind == kind], 99)
           for kind in ("status", "command", "click")},
    }


# --- report ---------------------------------------------------------------------------------

ROWS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("builds", "builds", str),
    ("results posted once", "results_once", str),
    ("results missing", "results_missing", str),
    ("results posted twice or more", "results_double", str),
    ("messages not updated after the end", "messages_not_updated_after_end", str),
    ("last end -> last result, s", "last_end_to_last_result_s", lambda v: f"{v:.1f}"),
    ("least Slack's limits allow, s", "floor_s", lambda v: f"{v:.1f}"),
    ("ratio (goal <= 1.2)", "ratio", lambda v: f"{v:.2f}"),
    ("Slack Web API calls (429s included)", "slack_calls", str),
    ("429s", "limited", str),
    ("429s, % of calls (goal < 1%)", "limited_pct", lambda v: f"{v:.2f}"),
    ("progress updates before the ends", "progress_updates", str),
    ("commands and clicks answered", "answers", str),
    ("  not answered within 30 s", "answers_missing", str),
    ("answer p50, s", "answer_p50_s", lambda v: f"{v:.3f}"),
    ("answer p99, s (goal < 3 s)", "answer_p99_s", lambda v: f"{v:.3f}"),
    ("answer max, s", "answer_max_s", lambda v: f"{v:.3f}"),
    ("  /build status p99, s", "status_p99_s", lambda v: f"{v:.3f}"),
    ("  /build clicks p99, s", "command_p99_s", lambda v: f"{v:.3f}"),
    ("  Run click p99, s", "click_p99_s", lambda v: f"{v:.3f}"),
]


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The median of each figure per bot over its passes."""
    by_bot: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_bot[r["bot"]].append(r)
    return {bot: {key: median([float(r[key]) for r in rs]) for _name, key, _f in ROWS}
            for bot, rs in by_bot.items()}


def goals(s: dict[str, Any]) -> list[str]:
    """The goals this bot's figures miss (empty: all met)."""
    missed = []
    if s["results_missing"] or s["results_double"] or s["messages_not_updated_after_end"]:
        missed.append("every result posted once")
    if not s["ratio"] <= GOAL_RATIO:  # NaN (not all out) misses too
        missed.append(f"last result within {GOAL_RATIO}x the floor")
    if not s["limited_pct"] < GOAL_LIMITED_PCT:
        missed.append(f"429s < {GOAL_LIMITED_PCT:g}%")
    kinds = [s[f"{kind}_p99_s"] for kind in ("status", "command", "click")]
    if not all(p < GOAL_ANSWER_P99 for p in [s["answer_p99_s"], *kinds]) \
            or s["answers_missing"]:
        missed.append(f"answers p99 < {GOAL_ANSWER_P99:g} s (all, and each kind)")
    return missed


def report(summary: dict[str, dict[str, Any]]) -> None:
    bots = list(summary)
    headers = ["figure", *bots] + (["now / before"] if len(bots) == 2 else [])
    rows = []
    for name, key, fmt in ROWS:
        cells = [fmt(int(summary[b][key]) if fmt is str else summary[b][key]) for b in bots]
        if len(bots) == 2:
            before, now = summary[bots[0]][key], summary[bots[1]][key]
            cells.append(f"{now / before:.2f}" if before and fmt is not str else "")
        rows.append([name, *cells])
    print(table(headers, rows))
    for bot in bots:
        missed = goals(summary[bot])
        print(f"{bot}: " + ("all goals met" if not missed else "NOT met: " + "; ".join(missed)))


def differences(size: Size, quick: bool, poll: float = 15.0) -> str:
    """The output's first line: what differs from the defaults and from the full run."""
    bot = ("bot: the defaults a user gets (15 s poll, progress every 10 s, 8 workers, "
           "Slack's limits), SQLite" if poll == 15.0 else
           f"bot: NOT the defaults: BUILD_POLL_SECONDS={poll:g} (default 15); otherwise "
           "the defaults (progress every 10 s, 8 workers, Slack's limits), SQLite")
    if size == FULL:
        return f"{bot}; full size: {size.describe()}"
    what = "--quick" if quick else "sizes given"
    return f"{bot}; NOT the full run ({what}): {size.describe()} (full: {FULL.describe()})"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"a few minutes per bot: {QUICK.describe()}")
    ap.add_argument("--builds", type=int)
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--channels", type=int)
    ap.add_argument("--run-seconds", type=float, help="how long the builds run before the "
                    "first ends (progress on)")
    ap.add_argument("--end-window", type=float, help="the builds all end within this")
    ap.add_argument("--every", type=float, help="seconds between two people's requests")
    ap.add_argument("--timeout", type=float, help="seconds after the last end to wait for "
                    "the results (default: twice the floor + 300)")
    ap.add_argument("--bot-path", help="another bot (a worktree of an older commit, e.g. "
                    "de336b8^) run first, side by side with this one, as 'before'")
    ap.add_argument("--repeat", type=int, default=1, help="passes (bots interleaved)")
    ap.add_argument("--quiet", type=float, default=QUIET_SECONDS,
                    help="seconds after the last result in which nothing may be posted")
    ap.add_argument("--poll", type=float, default=15.0,
                    help="BUILD_POLL_SECONDS of the bots (default: the default, 15)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the bot to a core")
    ap.add_argument("--name", help="results file name (default slack_limits[-quick])")
    args = ap.parse_args(argv)
    base = QUICK if args.quick else FULL
    size = Size(builds=args.builds or base.builds, jobs=args.jobs or base.jobs,
                channels=args.channels or base.channels,
                run_seconds=base.run_seconds if args.run_seconds is None else args.run_seconds,
                end_window=args.end_window or base.end_window, every=args.every or base.every)
    if size.jobs > size.builds or size.channels > size.jobs:
        ap.error("--jobs must be at most --builds, and --channels at most --jobs")
    print(differences(size, args.quick, args.poll), flush=True)
    quiet_logging()
    pinning = pin_cores(not args.no_pin)
    tmp = Path(tempfile.mkdtemp(prefix="bench-slack-limits-"))
    bots: list[tuple[str, str | None]] = [("before", args.bot_path)] if args.bot_path else []
    bots.append(("now", None))
    runs = []
    for rep in range(args.repeat):
        for label, path in bots:
            started = time.monotonic()
            r = measure(size, bot_path=path, tmp=tmp, poll=args.poll, timeout=args.timeout,
                        label=label, quiet=args.quiet)
            runs.append({"pass": rep + 1, "wall_s": time.monotonic() - started, **r})
            print(f"pass {rep + 1}, {label}: {r['results_once']}/{r['builds']} results once, "
                  f"last end -> last result {r['last_end_to_last_result_s']:.1f} s "
                  f"(floor {r['floor_s']:.1f} s), {r['limited']} 429s "
                  f"({r['limited_pct']:.2f}%), answers p99 {r['answer_p99_s']:.2f} s, "
                  f"wall {time.monotonic() - started:.0f} s", flush=True)
    summary = summarize(runs)
    print()
    print(pinning)
    print(f"medians over {args.repeat} pass(es); the bots' logs in {tmp}")
    report(summary)
    name = args.name or ("slack_limits" + ("-quick" if args.quick else ""))
    written = write_results(name, {"size": size.__dict__, "bot_path": args.bot_path,
                                   "runs": runs, "summary": summary, "pinning": pinning})
    print(f"written {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
