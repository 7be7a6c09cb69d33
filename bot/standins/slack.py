"""A loopback stand-in for Slack's Web API and for ``response_url`` webhooks.

It records every request body (not just the path), binds an ephemeral port,
and can misbehave on demand: 429 with Retry-After, 5xx, or an ``ok: false``
error for a chosen method. Like Slack, it refuses views and messages that break Slack's
documented limits (``bot.standins.slack_rules``): such a call is recorded (with the
``error`` Slack answered) but nothing is taken: no view stored, no trigger_id used, no
message posted.

    with FakeSlack() as slack:
        slack.usergroups["S01DEVS"] = ["U01BOB"]
        url = slack.response_url()        # a fresh response_url to hand the bot
        ...
        slack.calls("chat.postMessage")   # [{"channel": ..., "text": ...}, ...]
        slack.responses(url)              # bodies posted to that response_url
        slack.refused()                   # calls Slack's rules refused (none, normally)
        slack.homes["U01BOB"]             # the App Home last published for a user
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

from bot.standins.slack_rules import Problem, message_problem, view_problem

MESSAGE_METHODS = ("chat.postMessage", "chat.update", "chat.postEphemeral")
# the scope conversations.info needs for each kind of conversation (Slack's method page)
CONVERSATION_SCOPES = {"public": "channels:read", "private": "groups:read", "im": "im:read",
                       "mpim": "mpim:read"}
VIEW_METHODS = ("views.open", "views.update")
# Slack's documented rate limits, calls a minute per workspace (per channel for
# ``SLACK_PER_CHANNEL``), written here from Slack's method pages and not taken from the
# bot's own settings, so a bench measures the bot against Slack, not against itself:
# Tier 2 ~20, Tier 3 ~50, Tier 4 ~100; chat.postMessage about one a second per channel.
SLACK_LIMITS: dict[str, int] = {
    "chat.postMessage": 60, "chat.update": 50, "chat.postEphemeral": 100,
    "views.open": 100, "views.update": 100, "views.push": 100, "views.publish": 100,
    "conversations.history": 50, "conversations.replies": 50, "conversations.info": 50,
    "usergroups.users.list": 20}
SLACK_PER_CHANNEL = frozenset({"chat.postMessage"})
SLACK_BURST_SECONDS = 3.0  # "short bursts": a few seconds' worth of calls at once


@dataclass
class Call:
    method: str  # Web API method name, or "response_url"
    path: str
    params: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    ts: str | None = None  # the message's ts, for a chat.postMessage Slack accepted
    error: str | None = None  # the error Slack answered (ok: false), if any
    problem: str | None = None  # the "[ERROR] ..." line, when Slack's rules refused it


@dataclass
class _Fault:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str]
    remaining: int
    accept_then_wait: float | None = None  # do the call, then hold its answer this long
    channel: str | None = None  # only calls to this channel (None: any)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 resets connections in a burst of 50


class FakeSlack:
    """Start with ``with FakeSlack() as slack`` or ``start()``/``stop()``."""

    def __init__(self) -> None:
        self.usergroups: dict[str, list[str]] = {}
        # conversations.info: what the bot may see of each conversation (``conversation``);
        # an ID not given here is a public channel the bot is in, or a DM when it starts
        # with D; None: no such conversation for this bot (channel_not_found)
        self.conversations: dict[str, dict[str, Any] | None] = {}
        # the bot token's scopes (those the manifest asks for that this fake checks)
        self.scopes: set[str] = set(CONVERSATION_SCOPES.values()) | {"im:write"}
        self.user_names: dict[str, str] = {}
        self.views: dict[str, dict[str, Any]] = {}  # open modals by id, as last set
        self.homes: dict[str, dict[str, Any]] = {}  # each user's App Home, as last published
        self._triggers: set[str] = set()  # trigger_ids already used (each opens one view)
        # links shared (``link_shared``): the URLs of each message by (channel, ts), and
        # by unfurl_id; chat.unfurl may preview only those
        self._shared: dict[tuple[str, str], set[str]] = {}
        self._shared_ids: dict[str, set[str]] = {}
        # Workflow Builder steps run (``function_executed``): execution id -> "running",
        # or how it was completed ("success" / "error")
        self.executions: dict[str, str] = {}
        self._executions = itertools.count(1)
        self._view_ids = itertools.count(1)
        self._calls: list[Call] = []
        self._faults: dict[str, list[_Fault]] = {}
        # Slack's rate limits, when enforced (``enforce_limits``): off by default
        self._rate_limits: tuple[dict[str, int], frozenset[str], Callable[[], float],
                                 float] | None = None
        self._buckets: dict[tuple[str, str], list[float]] = {}
        self._limited: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._hooks = itertools.count(1)
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- life --------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base + "/api/"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests use ----------------------------------------------------

    def response_url(self) -> str:
        return f"{self.base}/hooks/{next(self._hooks)}"

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [c.params for c in self._calls if method is None or c.method == method]

    def all_calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def refused(self, method: str | None = None) -> list[Call]:
        """Calls refused because what they carried breaks Slack's documented limits
        (``slack_rules``): a bot bug, unless a test sent it on purpose."""
        with self._lock:
            return [c for c in self._calls if c.problem is not None
                    and (method is None or c.method == method)]

    def responses(self, url: str | None = None) -> list[dict[str, Any]]:
        """Bodies posted to one response_url (or to any)."""
        path = urlsplit(url).path if url else None
        with self._lock:
            return [c.params for c in self._calls
                    if c.method == "response_url" and (path is None or c.path == path)]

    def fail(self, method: str, *, status: int = 500, body: dict[str, Any] | None = None,
             count: int = 1, retry_after: int | None = None) -> None:
        """Answer the next ``count`` calls of ``method`` with this status (or an ok:false body)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        with self._lock:
            self._faults.setdefault(method, []).append(_Fault(status, body, headers, count))

    def accept_slowly(self, method: str, seconds: float, *, count: int = 1,
                      channel: str | None = None) -> None:
        """Do the next ``count`` calls of ``method`` (to ``channel``, when given; a post is
        posted) but hold each answer for ``seconds``: past the client's timeout, the
        caller cannot know it worked."""
        with self._lock:
            self._faults.setdefault(method, []).append(
                _Fault(200, None, {}, count, accept_then_wait=seconds, channel=channel))

    def enforce_limits(self, limits: dict[str, int], *, per_channel: frozenset[str],
                       clock: Callable[[], float], burst_seconds: float = 3.0) -> None:
        """Answer 429 with Retry-After, as Slack does, to calls of a method (per channel,
        for ``per_channel`` methods) beyond ``limits`` calls a minute, with bursts of
        ``burst_seconds`` of calls; ``clock`` is a seam (tests share it with the bot)."""
        with self._lock:
            self._rate_limits = (dict(limits), per_channel, clock, burst_seconds)
            self._buckets = {}

    def enforce_slack_limits(self, clock: Callable[[], float] = time.monotonic) -> None:
        """``enforce_limits`` with Slack's documented limits (``SLACK_LIMITS``)."""
        self.enforce_limits(SLACK_LIMITS, per_channel=SLACK_PER_CHANNEL, clock=clock,
                            burst_seconds=SLACK_BURST_SECONDS)

    def rate_limited(self) -> list[tuple[str, str]]:
        """(method, channel) of each call answered 429 for passing the limits."""
        with self._lock:
            return list(self._limited)

    def _over_limit(self, method: str, params: dict[str, Any]) -> float | None:
        """Seconds until this call would be within its limit; None when it is (taken)."""
        with self._lock:
            if self._rate_limits is None or method not in self._rate_limits[0]:
                return None
            limits, per_channel, clock, burst_seconds = self._rate_limits
            rate = limits[method] / 60.0
            burst = max(1.0, rate * burst_seconds)
            key = (method, str(params.get("channel") or "") if method in per_channel else "")
            now = clock()
            tokens, at = self._buckets.get(key, [burst, now])
            tokens = min(burst, tokens + max(0.0, now - at) * rate)
            if tokens < 1.0 - 1e-6:  # (a clock's float rounding is no call too many)
                self._buckets[key] = [tokens, now]
                return float((1.0 - tokens) / rate)
            self._buckets[key] = [tokens - 1.0, now]
            return None

    def error(self, method: str, error: str, *, count: int = 1) -> None:
        """Answer ``{"ok": false, "error": error}`` with HTTP 200, as Slack does."""
        self.fail(method, status=200, body={"ok": False, "error": error}, count=count)

    def wait_for(self, predicate: Any, timeout: float = 5.0, every: float = 0.01) -> Any:
        """Poll until ``predicate()`` is truthy; return its value (tests wait on what arrives).
        ``every``: seconds between two looks (longer for a predicate that asks a server)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")

    # --- serving -----------------------------------------------------------

    def _take_fault(self, method: str, channel: Any = None) -> _Fault | None:
        """The first fault waiting for this call (one for any channel, or for its own)."""
        with self._lock:
            faults = self._faults.get(method) or []
            fault = next((f for f in faults if f.channel is None or f.channel == channel),
                         None)
            if fault is None:
                return None
            fault.remaining -= 1
            if fault.remaining <= 0:
                faults.remove(fault)
            return fault

    @staticmethod
    def _refusal(method: str, params: dict[str, Any]) -> Problem | None:
        """Why Slack would refuse what this call carries (``slack_rules``), or None."""
        if method in VIEW_METHODS or method == "views.publish":
            return view_problem(params.get("view"))
        if method in MESSAGE_METHODS or method == "response_url":
            return message_problem(params)
        if method == "chat.unfurl":  # each preview's blocks, as a message's
            for unfurl in _json_arg(params.get("unfurls")).values():
                problem = message_problem(unfurl) if isinstance(unfurl, dict) else None
                if problem is not None:
                    return problem
        return None

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """What Slack answers a Web API call: one handler per method (``_ANSWERS``)."""
        if method in VIEW_METHODS:
            return self._view_answer(method, params)
        answer = self._ANSWERS.get(method)
        return answer(self, params) if answer else {"ok": False, "error": "unknown_method"}

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1",
                "url": "https://example.slack.com/", "team": "Example", "user": "buildbot"}

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        return {"ok": True, "channel": params.get("channel"), "ts": ts,
                "message": {"text": params.get("text"), "ts": ts}}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channel": params.get("channel"), "ts": params.get("ts")}

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "message_ts": f"{1700000000 + next(self._ts)}.000200"}

    # --- link previews ---------------------------------------------------------

    def link_shared(self, urls: list[str], *, channel: str, user: str,
                    message_ts: str | None = None, source: str = "conversations_history",
                    bot_member: bool = True, team: str = "T1",
                    unfurl_id: bool = True) -> dict[str, Any]:
        """A message with these links was posted (or is in the composer): remembered, so
        chat.unfurl may preview them, and returned as the ``link_shared`` event Slack sends
        (the whole ``event_callback`` envelope; ``unfurl_id`` False: without unfurl_id and
        source, as Slack sent it before 2021). A link still in the composer comes, as from
        Slack, with the channel ``COMPOSER`` and no message: only its unfurl_id names it."""
        ts = message_ts or f"{int(time.time())}.{next(self._ts):06d}"
        unfurl_id_value = f"{channel}.{ts}.{next(self._ts):08x}"
        if source == "composer":  # not posted yet: Slack does not say where it will be
            channel = "COMPOSER"
            ts = unfurl_id_value = f"{user}-{next(self._ts):08x}-composer"
        with self._lock:
            if source != "composer":
                self._shared.setdefault((channel, ts), set()).update(urls)
            self._shared_ids[unfurl_id_value] = set(urls)
        links = [{"domain": urlsplit(u).hostname or "", "url": u} for u in urls]
        event: dict[str, Any] = {
            "type": "link_shared", "channel": channel, "is_bot_user_member": bot_member,
            "user": user, "message_ts": ts, "links": links, "event_ts": ts}
        if unfurl_id:
            event.update(unfurl_id=unfurl_id_value, source=source)
        return {"token": "legacy-unused", "team_id": team, "api_app_id": "A1",
                "event": event, "type": "event_callback", "authed_users": [user],
                "event_id": f"Ev{next(self._ts):08d}", "event_time": int(time.time())}

    def unfurled(self, url: str | None = None) -> list[dict[str, Any]]:
        """The previews Slack took (chat.unfurl calls answered ok), each ``{url: unfurl}``
        map, or only the unfurls of ``url``."""
        with self._lock:
            maps = [_json_arg(c.params.get("unfurls")) for c in self._calls
                    if c.method == "chat.unfurl" and c.error is None and c.problem is None]
        if url is None:
            return maps
        return [m[url] for m in maps if url in m]

    def _unfurl(self, params: dict[str, Any]) -> dict[str, Any]:
        """Slack takes a preview only for links shared in that message (by channel and ts,
        or by unfurl_id and source), and only blocks it would take in a message."""
        unfurls = _json_arg(params.get("unfurls"))
        if not unfurls:
            return {"ok": False, "error": "invalid_arguments"}
        if params.get("unfurl_id") or params.get("source"):
            if not params.get("unfurl_id") or not params.get("source"):
                return {"ok": False, "error": "invalid_arguments"}
            shared = self._shared_ids.get(str(params["unfurl_id"]))
        else:
            key = (str(params.get("channel") or ""), str(params.get("ts") or ""))
            if not all(key):
                return {"ok": False, "error": "invalid_arguments"}
            shared = self._shared.get(key)
        if shared is None or not set(unfurls) <= shared:
            return {"ok": False, "error": "cannot_unfurl_message"}
        if not all(isinstance(u, dict) for u in unfurls.values()):
            return {"ok": False, "error": "invalid_unfurls"}
        return {"ok": True}

    # --- Workflow Builder steps ----------------------------------------------------

    def function_executed(self, inputs: dict[str, Any], *, callback_id: str,
                          team: str = "T1") -> dict[str, Any]:
        """A workflow reached the app's step: a new execution (running), and the
        ``function_executed`` event Slack sends for it (the whole envelope, with the
        just-in-time token it carries)."""
        n = next(self._executions)
        execution_id = f"Fx{n:010d}"
        with self._lock:
            self.executions[execution_id] = "running"
        event = {
            "type": "function_executed",
            "function": {"id": "Fn0000000001", "callback_id": callback_id,
                         "title": "Run a CodeArts build", "type": "app", "app_id": "A1"},
            "inputs": inputs, "function_execution_id": execution_id,
            "workflow_execution_id": f"Wx{n:010d}", "event_ts": f"{time.time():.6f}",
            "bot_access_token": f"xwfp-{n}-workflow-token"}
        return {"token": "legacy-unused", "team_id": team, "api_app_id": "A1",
                "event": event, "type": "event_callback", "event_id": f"Ev{n:08d}x",
                "event_time": int(time.time())}

    def completions(self, execution_id: str | None = None) -> list[Call]:
        """Completions Slack took (functions.completeSuccess / completeError answered ok)."""
        with self._lock:
            return [c for c in self._calls if c.method.startswith("functions.complete")
                    and c.error is None
                    and (execution_id is None
                         or c.params.get("function_execution_id") == execution_id)]

    def _complete(self, params: dict[str, Any], how: str) -> dict[str, Any]:
        """A step completes once: an unknown execution, or one completed before, is
        refused as Slack refuses it."""
        execution = str(params.get("function_execution_id") or "")
        state = self.executions.get(execution)
        if state is None:
            return {"ok": False, "error": "function_execution_not_found"}
        if state != "running":
            return {"ok": False, "error": "execution_not_in_running_state"}
        if how == "success" and not _json_arg(params.get("outputs")) \
                and params.get("outputs") not in ("{}", {}):
            return {"ok": False, "error": "invalid_arguments"}
        if how == "error" and not str(params.get("error") or ""):
            return {"ok": False, "error": "invalid_arguments"}
        self.executions[execution] = how
        return {"ok": True}

    def _complete_success(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._complete(params, "success")

    def _complete_error(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._complete(params, "error")

    def _group_members(self, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("usergroup", "")
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.usergroups[group])}

    def conversation(self, channel_id: str, kind: str = "public", *, member: bool = True,
                     name: str | None = None, archived: bool = False) -> None:
        """What conversations.info says of ``channel_id``: ``kind`` public, private, im or
        mpim; a private channel the bot is not in is, as in Slack, channel_not_found."""
        self.conversations[channel_id] = {
            "id": channel_id, "name": name or channel_id.lower(), "is_channel": kind == "public",
            "is_group": kind == "private", "is_private": kind != "public", "is_im": kind == "im",
            "is_mpim": kind == "mpim", "is_member": member, "is_archived": archived}

    def _conversation_info(self, params: dict[str, Any]) -> dict[str, Any]:
        """Slack's answer: the conversation as this bot may see it, missing_scope when the
        token lacks the scope for its kind, channel_not_found when it cannot see it."""
        channel = str(params.get("channel") or "")
        if channel not in self.conversations:
            self.conversation(channel, "im" if channel.startswith("D") else "public")
        found = self.conversations[channel]
        if found is None or (found["is_group"] and not found["is_member"]):
            return {"ok": False, "error": "channel_not_found"}
        needed = CONVERSATION_SCOPES[_kind(found)]
        if needed not in self.scopes:
            return {"ok": False, "error": "missing_scope", "needed": needed,
                    "provided": ",".join(sorted(self.scopes))}
        return {"ok": True, "channel": dict(found)}

    def _socket_mode(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": "invalid_auth"}  # no websocket here, so refuse

    def _replies(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parent, then its replies, oldest first."""
        parent = params.get("ts")
        return {"ok": True, "has_more": False, "messages": [
            self._message(c) for c in self._calls
            if c.method == "chat.postMessage" and c.ts is not None
            and (c.ts == parent or c.params.get("thread_ts") == parent)]}

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        """The channel's messages, newest first."""
        oldest = float(params.get("oldest") or 0)
        return {"ok": True, "has_more": False, "messages": [
            self._message(c) for c in reversed(self._calls)
            if c.method == "chat.postMessage" and c.ts is not None
            and c.params.get("channel") == params.get("channel")
            and not c.params.get("thread_ts") and float(c.ts) > oldest]}

    # --- the App Home and permalinks (issue 29) ------------------------------------------

    def _publish(self, params: dict[str, Any]) -> dict[str, Any]:
        """views.publish: a user's Home tab (type home), kept as the user's current one."""
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        user = str(params.get("user_id") or "")
        if not user or not isinstance(view, dict) or view.get("type") != "home":
            return {"ok": False, "error": "invalid_arguments"}
        self.homes[user] = {**view, "id": f"VH{user}", "hash": f"h{next(self._ts)}"}
        return {"ok": True, "view": self.homes[user]}

    def _permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        """chat.getPermalink: the link of a message this app posted (message_not_found
        for any other ts), shaped as Slack's: /archives/<channel>/p<ts without its dot>."""
        channel, ts = str(params.get("channel") or ""), str(params.get("message_ts") or "")
        if not any(c.method == "chat.postMessage" and c.ts == ts
                   and c.params.get("channel") == channel for c in self._calls):
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": channel, "permalink":
                f"https://example.slack.com/archives/{channel}/p{ts.replace('.', '')}"}

    def _open(self, params: dict[str, Any]) -> dict[str, Any]:
        """conversations.open with one user: the bot's DM conversation with them (the same
        id every time), as Slack answers it."""
        users = str(params.get("users") or "")
        if not users or "," in users:
            return {"ok": False, "error": "users_list_not_supplied" if not users
                    else "not_enough_users"}
        if "im:write" not in self.scopes:
            return {"ok": False, "error": "missing_scope", "needed": "im:write",
                    "provided": ",".join(sorted(self.scopes))}
        return {"ok": True, "no_op": True, "already_open": True,
                "channel": {"id": "D" + users.lstrip("UW")[:20]}}

    _ANSWERS: ClassVar[dict[str, Callable[[FakeSlack, dict[str, Any]], dict[str, Any]]]] = {
        "auth.test": _auth_test, "chat.postMessage": _post_message, "chat.update": _update,
        "chat.postEphemeral": _post_ephemeral, "usergroups.users.list": _group_members,
        "apps.connections.open": _socket_mode, "conversations.replies": _replies,
        "conversations.history": _history, "conversations.info": _conversation_info,
        "views.publish": _publish, "chat.getPermalink": _permalink,
        "chat.unfurl": _unfurl, "functions.completeSuccess": _complete_success,
        "functions.completeError": _complete_error, "conversations.open": _open}

    def _view_answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """views.open needs a trigger_id not used before; views.update a known view id and,
        when given, the hash of its current version. The view comes back with a new hash.
        (A view Slack's rules refuse never gets here: it uses no trigger_id.)"""
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        found = self._new_view(params) if method == "views.open" else self._known_view(params)
        if isinstance(found, dict):
            return found
        self.views[found] = {**view, "id": found, "hash": f"h{next(self._ts)}"}
        return {"ok": True, "view": self.views[found]}

    def _new_view(self, params: dict[str, Any]) -> str | dict[str, Any]:
        """views.open: a new view id for a trigger_id not used before, else the refusal."""
        trigger = str(params.get("trigger_id") or "")
        if not trigger or trigger in self._triggers:
            return {"ok": False, "error": "invalid_trigger_id" if not trigger
                    else "exchanged_trigger_id"}
        self._triggers.add(trigger)
        return f"V{next(self._view_ids):06d}"

    def _known_view(self, params: dict[str, Any]) -> str | dict[str, Any]:
        """views.update: the view id if it is known and (when given) its hash is current."""
        view_id = str(params.get("view_id") or "")
        if view_id not in self.views:
            return {"ok": False, "error": "not_found"}
        if params.get("hash") and params["hash"] != self.views[view_id]["hash"]:
            return {"ok": False, "error": "hash_conflict"}
        return view_id

    @staticmethod
    def _message(call: Call) -> dict[str, Any]:
        message = {"type": "message", "ts": call.ts, "text": call.params.get("text"),
                   "bot_id": "BBOT"}
        if call.params.get("thread_ts"):
            message["thread_ts"] = call.params["thread_ts"]
        if call.params.get("metadata"):
            message["metadata"] = call.params["metadata"]
        return message

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _params(self) -> dict[str, Any]:
                url = urlsplit(self.path)
                params: dict[str, Any] = dict(parse_qsl(url.query))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                ctype = self.headers.get("Content-Type", "")
                if raw and "json" in ctype:
                    params.update(json.loads(raw))
                elif raw:
                    params.update(parse_qsl(raw.decode()))
                    for key in ("blocks", "attachments", "metadata"):
                        if isinstance(params.get(key), str):
                            params[key] = json.loads(params[key])
                return params

            def _send(self, status: int, body: dict[str, Any] | str,
                      headers: dict[str, str] | None = None) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                ctype = "text/plain" if isinstance(body, str) else "application/json"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                path = urlsplit(self.path).path
                params = self._params()
                if path.startswith("/hooks/"):
                    method = "response_url"
                elif path.startswith("/api/"):
                    method = path[len("/api/"):]
                else:
                    self._send(404, "not found")
                    return
                fault = fake._take_fault(method, params.get("channel"))
                headers = {k.lower(): v for k, v in self.headers.items()}
                wait = fake._over_limit(method, params)
                if fault is None and wait is not None:
                    fake._limited.append((method, str(params.get("channel") or "")))
                    self._send(429, {"ok": False, "error": "ratelimited"},
                               {"Retry-After": str(max(1, math.ceil(wait)))})
                    return
                if fault is not None and fault.accept_then_wait is None:
                    # a failed call is not recorded: Slack did nothing with it
                    self._send(fault.status, fault.body or "error", fault.headers)
                    return
                call = Call(method, path, params, headers)
                with fake._lock:
                    fake._calls.append(call)  # refused or not: what the bot sent is kept
                    refusal = fake._refusal(method, params)
                    if refusal is not None:  # nothing is taken: no view, trigger or ts
                        call.problem = refusal.line
                        answer = refusal.answer()
                    elif method == "response_url":
                        answer = None
                    else:
                        answer = fake._answer(method, params)
                    if method == "chat.postMessage" and answer and answer.get("ok"):
                        call.ts = answer["ts"]
                    if answer is not None and not answer.get("ok"):
                        call.error = str(answer.get("error"))
                if fault is not None and fault.accept_then_wait is not None:
                    time.sleep(fault.accept_then_wait)
                try:
                    if refusal is not None and method == "response_url":
                        # a webhook answers HTTP 400 with the error as plain text
                        # (api.slack.com/changelog/2016-05-17-changes-to-errors-for-
                        # incoming-webhooks)
                        self._send(400, refusal.error)
                    else:
                        self._send(200, "ok" if answer is None else answer)
                except OSError:  # the client gave up waiting
                    pass

            do_POST = _handle
            do_GET = _handle

        return Handler


def _json_arg(value: Any) -> dict[str, Any]:
    """An argument Slack takes as JSON, sent in a JSON body or as form text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _kind(conversation: dict[str, Any]) -> str:
    """public, private, im or mpim: the kind whose scope conversations.info needs."""
    for kind, flag in (("im", "is_im"), ("mpim", "is_mpim"), ("private", "is_group")):
        if conversation.get(flag):
            return kind
    return "public"
