"""Every message builder in bot/messages.py, with ordinary, long and markup-heavy
inputs, against Slack's documented limits: each block parses and validates with
slack_sdk, section text <= 3,000 characters, context element text <= 2,000, message
``text`` <= 40,000, <= 50 blocks, button text <= 75 and value <= 2,000, action_id and
block_id <= 255 and unique, and no shown text with a broken entity or a stray < or >.

A public function added to bot/messages.py fails ``test_every_builder_is_covered``
until it is added to BUILDERS (or, if it builds no message, to HELPERS)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import pytest
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

from bot import messages as msg
from bot.codearts.answers import Output, Outputs, Step
from bot.lifecycle import progress_line
from bot.status import BuildRow

HELPERS = {"escape", "shorten", "code", "cut", "duration",
           "approvers_text", "request_id_text", "failed", "started_words",  # no message
           "step_refused", "step_not_started", "step_failed"}  # a workflow step's error text


@dataclass(frozen=True)
class Case:
    job: str
    desc: str
    daily: str
    build_no: str
    user: str
    channel: str
    link: str | None
    words: str  # an error message, a problem, a reason
    body: dict[str, Any]
    jobs: list[tuple[str, str]]


def _body(n: int, name: Callable[[int], str], value: str) -> dict[str, Any]:
    return {"job_id": "f" * 32, "parameter": [{"name": name(i), "value": value} for i in range(n)],
            "scm": {"build_commit_id": "abc1234", "build_tag": "v1.2.0"}}


MARKUP = "<!channel> & <@U1> <https://evil|ok> &amp; >< "
CASES = {
    "ordinary": Case("backend", "Backend CI", "20261123.7", "42", "U1", "CBUILDS",
                     "https://example.com/builds/42", "Build task not found.",
                     _body(2, lambda i: f"codeBranch{i}", "develop"),
                     [("backend", "Backend CI"), ("docs", "")]),
    "long": Case("j" * 300, "d" * 300, "2" * 300, "4" * 300, "U" + "1" * 300, "C" + "2" * 300,
                 "https://example.com/" + "a" * 2500, "e" * 9000,
                 _body(50, lambda i: f"parameter_number_{i:02d}_xyz", "v" * 9000),
                 [(f"job{i:03d}" + "n" * 200, "d" * 300) for i in range(200)]),
    "markup": Case(MARKUP * 10, "&<>" * 100, MARKUP * 5, "<@U2>&" * 50, "U1>&<", "C1>|&",
                   "https://x.io/?a=1&b=<2>|label> x", MARKUP * 200,
                   _body(50, lambda i: f"p{i:02d}&<>" + "&" * 19, "&<>" * 40),
                   [(f"<!here>{i}&" + "&" * 100, "&<>" * 100) for i in range(200)]),
}
RESULTS = [*msg.RESULT_WORDS, "ended:TIMEOUT", "ended:<!channel>&" * 20, "ended:", "weird"]


def _progress(c: Case) -> list[str | None]:
    """No progress, an ordinary line, and one made of many long, markup-heavy steps."""
    many = [Step(name=c.job, status="running" if i == 59 else "success") for i in range(60)]
    odd = [Step(name=c.words, status=c.words[:24])]
    return [None, progress_line(75, [Step(name="Build image", status="running")]),
            progress_line(10**7, many), progress_line(10**5, odd)]


def _tails(c: Case) -> list[tuple[list[str] | None, bool, str | None]]:
    """(tail, truncated, error): none, empty, short, long and markup-heavy logs (with the
    backticks that would close a code block), and an unreadable log."""
    fences = [f"```{c.words[:300]}```", "`" * 50, c.words]
    return [(None, False, None), ([], False, None), (["one line"], False, None),
            ([c.words] * 200, True, None), (fences * 30, False, None),
            ([c.words[:5000]], True, None), (None, False, c.words)]


def _outputs(c: Case) -> list[Outputs | None]:
    """What a build produced: nothing read, nothing listed, one, and the longest list (10
    shown of many, every value as long and markup-heavy as a read one can be)."""
    long = (c.words * 2)[:500]  # answers.OUTPUT_FIELD_CHARS

    def one(i: int) -> Output:
        return Output(kind="image" if i % 2 else "package", name=f"{i}{long}",
                      version=long, address=long)

    return [None, Outputs(), Outputs(items=(one(0),), total=1),
            Outputs(items=tuple(one(i) for i in range(1000)), total=10_000)]


def builds(c: Case) -> dict[str, Iterator[dict[str, Any]]]:
    """name -> the messages that builder makes from this case."""
    run: dict[str, Any] = {"job_name": c.job, "status": 400, "error_code": c.words[:40],
                           "error_msg": c.words, "request_id": c.words[:80]}
    common = {"build_id": "b" * 32, "user_id": c.user, "job_name": c.job}
    return {
        "help_message": (msg.help_message(c.jobs, is_admin=admin, page=page)
                         for admin in (False, True) for page in (0, 1, 2, 5, 6)),
        "problems_message": (msg.problems_message([c.words] * n, replace=r)
                             for n in (1, 20, 200) for r in (None, True)),
        "refused_now": (msg.refused_now(c.job, [c.words] * n, replace=r)
                        for n in (1, 20, 200) for r in (False, True)),
        "confirmation": (msg.confirmation("r" * 32, c.job, c.desc, body, minutes=10, rebuild=rb)
                         for body in (c.body, {}, {"parameter": c.body["parameter"] * 4,
                                                   "scm": c.body["scm"]})
                         for rb in (False, True)),
        "cancelled": iter([msg.cancelled(c.job)]),
        "expired": iter([msg.expired(c.job, c.words, minutes=10)]),
        "already": (msg.already(s) for s in ("cancelled", "expired", "failed", "unknown", c.words)),
        "missing": iter([msg.missing()]),
        "button_not_valid": iter([msg.button_not_valid()]),
        "other_workspace": iter([msg.other_workspace()]),
        "not_yours": iter([msg.not_yours(c.user)]),
        "started_ack": (msg.started_ack(c.job, daily, where, build_no=no)
                        for daily in (c.daily, "") for where in (c.channel, None)
                        for no in (c.build_no, "")),
        "api_error": (msg.api_error(**run, hint=c.words) for _ in (1,)),
        "not_sent": iter([msg.not_sent(c.job, c.words)]),
        "outcome_unknown": (msg.outcome_unknown(c.job, unreadable=u, request_id=r,
                                                history_request_id=r)
                            for u in (False, True) for r in (None, c.words)),
        "outcome_ambiguous": (msg.outcome_ambiguous(c.job, [c.build_no] * n, request_id=r)
                              for n in (2, 50) for r in (None, c.words)),
        "not_started_after_restart": (msg.not_started_after_restart(c.job, request_id=r)
                                      for r in (None, c.words)),
        "checking": (msg.checking(c.job, status=s, error_code=c.words[:40], error_msg=c.words,
                                  unreadable=u, request_id=r)
                     for s in (None, 502) for u in (False, True) for r in (None, c.words)),
        "found_after_restart": (msg.found_after_restart(c.job, daily, c.build_no, where)
                                for daily in (c.daily, "") for where in (c.channel, None)),
        "announcement_uncertain": (msg.announcement_uncertain(
            job_name=c.job, daily=daily, build_no=c.build_no, channel=c.channel, link=link)
            for daily in (c.daily, "") for link in (c.link, None)),
        "login_failed": (msg.login_failed(**{**run, "status": s}, hint=c.words)
                         for s in (None, 401)),
        "started_unrecorded": (msg.started_unrecorded(c.job, daily, c.build_no, c.words[:40])
                               for daily in (c.daily, "")),
        "started_unannounced": (msg.started_unannounced(c.job, daily, c.build_no, c.words[:40])
                                for daily in (c.daily, "")),
        "result_elsewhere": (msg.result_elsewhere(
            msg.result_reply(**common, daily=c.daily, result=r, duration_ms=1, link=c.link),
            channel=c.channel, error=c.words) for r in RESULTS),
        "busy": iter([msg.busy()]),
        "internal_error": iter([msg.internal_error(c.words[:40])]),
        "announcement": (msg.announcement(**common, description=c.desc, body=body,
                                          daily=daily, build_no=c.build_no, link=link,
                                          approvers=approvers, progress=progress)
                         for body in (c.body, {}) for daily in (c.daily, "")
                         for link in (c.link, None)
                         for approvers in ((), (c.user,), (c.user,) * 30)
                         for progress in _progress(c)),
        "announcement_done": (msg.announcement_done(**common, daily=daily, build_no=c.build_no,
                                                    link=c.link, result=r, duration_ms=d)
                              for r in RESULTS for daily in (c.daily, "")
                              for d in (None, 7_200_000)),
        "result_reply": chain(
            (msg.result_reply(**common, daily=daily, build_no=c.build_no, result=r,
                              duration_ms=90_000, link=link, tail=tail, tail_truncated=cut,
                              tail_error=error)
             for r in RESULTS for daily in (c.daily, "") for link in (c.link, None)
             for tail, cut, error in _tails(c)),
            (msg.result_reply(**common, daily=c.daily, build_no=c.build_no, result="success",
                              duration_ms=90_000, link=link, outputs=outputs)
             for link in (c.link, None) for outputs in _outputs(c))),
        "gave_up": (msg.gave_up(job_name=c.job, daily=daily, build_no=c.build_no, hours=24,
                                link=c.link) for daily in (c.daily, "")),
        "stop_refused": (msg.stop_refused([c.words] * n) for n in (1, 200)),
        "stop_requested": (msg.stop_requested(c.user, c.job, daily, c.build_no)
                           for daily in (c.daily, "")),
        "stop_failed": (msg.stop_failed(c.job, daily, c.build_no, status=s,
                                        error_code=c.words[:40], error_msg=c.words,
                                        request_id=c.words[:80])
                        for daily in (c.daily, "") for s in (None, 409)),
        "ephemeral": (msg.ephemeral(msg.escape(c.words) * 10, replace=r) for r in (None, False)),
        # approvals
        "approval_request": (msg.approval_request(
            request_id="r" * 32, requester=c.user, job_name=c.job, description=c.desc,
            body=body, approvers=approvers, groups=groups, needed=n, approved_by=by,
            expires_at=1_800_000_000.0)
            for body in (c.body, {}) for approvers, groups in
            (([c.user], []), ([c.user] * 40, [c.channel] * 15), ([], [c.channel]))
            for n, by in ((1, []), (3, [c.user] * 2), (30, [c.user] * 25))),
        "approval_closed": (msg.approval_closed(
            requester=c.user, job_name=c.job, description=c.desc, body=body, outcome=o,
            by=by, daily=daily, build_no=c.build_no)
            for body in (c.body, {}) for o in (*msg.APPROVAL_OUTCOMES, c.words)
            for by in ([c.user], [c.user] * 30) for daily in (c.daily, "")),
        "awaiting_approval": (msg.awaiting_approval(
            "r" * 32, c.job, approvers=approvers, groups=groups, needed=n,
            expires_at=1_800_000_000.0, channel=ch)
            for approvers, groups in (([c.user], []), ([c.user] * 40, [c.channel] * 15))
            for n in (1, 5) for ch in (c.channel, None)),
        "approval_ended": (msg.approval_ended(c.job, o, by=c.user, command=cmd)
                           for o in ("rejected", "expired", "withdrawn", "failed", c.words)
                           for cmd in (c.words, "")),
        "approval_refused": (msg.approval_refused(r, requester=c.user)
                             for r in ("self", "not_approver", "unchecked", "not_requester",
                                       "approved_already", "enough", "started", "rejected",
                                       "expired", "missing", c.words)),
        "approval_noted": (msg.approval_noted(c.job, given=g, needed=n)
                           for g, n in ((1, 2), (2, 30))),
        # the queue
        "at_limit": (msg.at_limit("r" * 32, c.job, c.desc, body, running=running, limit=n,
                                  queue_minutes=60, admin=admin, minutes=10, replace=r,
                                  elsewhere=e)
                     for body in (c.body, {})
                     for running in ([], [(c.daily, c.user, 250.0)],
                                     [(c.daily, c.user, 9000.0)] * 40)
                     for n, admin, r, e in ((1, False, True, ""), (30, True, False, "unknown"),
                                            (2, False, True, c.build_no))),
        "queued": (msg.queued("r" * 32, c.job, position=p, expires_at=1_800_000_000.0)
                   for p in (1, 2, 500)),
        "queue_ended": (msg.queue_ended(c.job, o, command=cmd, minutes=60)
                        for o in ("left", "expired", c.words) for cmd in (c.words, "")),
        "queue_refused": (msg.queue_refused(r, requester=c.user)
                          for r in ("not_yours", "not_admin", "needs_approval", "queued",
                                    "started", "withdrawn", "expired", "missing", c.words)),
        # status and stop
        "job_status": (msg.job_status(c.job, rows, hidden=h) for rows in _rows(c)
                       for h in (0, 1, 7)),
        "jobs_status": (msg.jobs_status([(name, row, failed) for name, _ in c.jobs
                                         for row in rows[:1] or [None]
                                         for failed in (False, True)], left=left,
                                        request_ids=ids)
                        for rows in _rows(c) for left in (0, 160)
                        for ids in (None, {name: c.words for name, _ in c.jobs})),
        "status_refused": (msg.status_refused([c.words] * n) for n in (1, 200)),
        "status_failed": (msg.status_failed(c.job, c.words, request_id=r)
                          for r in (None, c.words)),
        "stop_question": (msg.stop_question(c.job, daily, c.build_no, value="v" * 64,
                                            started_by=by)
                          for daily in (c.daily, "") for by in (c.user, None)),
        "stop_not_running": (msg.stop_not_running(c.job, daily, c.build_no, r)
                             for daily in (c.daily, "") for r in RESULTS),
        "stop_no_such_build": iter([msg.stop_no_such_build(c.job, c.build_no)]),
        "stop_kept": iter([msg.stop_kept(c.job, c.build_no)]),
        "stop_asked": (msg.stop_asked(c.job, daily, c.build_no) for daily in (c.daily, "")),
        # subscriptions
        "subscribed": (msg.subscribed(c.job, f, user_id=c.user, previous=p, branch=b)
                       for f in ("all", "failures", "changes", c.words[:40])
                       for p in (None, ("all", None), ("failures", "x" * 100),
                                 (c.words[:40], c.words[:100]))
                       for b in (None, "release/*", c.words[:100])),
        "unsubscribed": (msg.unsubscribed(c.job, user_id=c.user, existed=e)
                         for e in (False, True)),
        "subscriptions_list": (msg.subscriptions_list([(name, f, who, 1_800_000_000.0, b)
                                                       for name, _ in c.jobs[:n]])
                               for n in (0, 1, 200) for f in ("all", "failures", "changes")
                               for who in (c.user, "") for b in (None, c.words[:100])),
        "subscribe_refused": (msg.subscribe_refused([c.words] * n) for n in (1, 200)),
        "subscribe_channel_refused": iter([msg.subscribe_channel_refused(c.words)]),
        "followed_announcement": (msg.followed_announcement(
            build_id="b" * 32, job_name=c.job, daily=daily, build_no=c.build_no, link=link,
            progress=p, started=s) for daily in (c.daily, "") for link in (c.link, None)
            for p in _progress(c) for s in _started(c)),
        "followed_done": (msg.followed_done(job_name=c.job, daily=daily, build_no=c.build_no,
                                            link=link, result=r, duration_ms=d, started=s)
                          for daily in (c.daily, "") for link in (c.link, None)
                          for r in RESULTS for d in (None, 7_200_000) for s in _started(c)),
        "followed_result": chain(
            (msg.followed_result(job_name=c.job, daily=c.daily, build_no=c.build_no, result=r,
                                 duration_ms=61_000, link=link, tail=tail,
                                 tail_truncated=trunc, tail_error=err, build_id=bid,
                                 started=s)
             for r in RESULTS for link in (c.link, None) for tail, trunc, err in _tails(c)
             for bid in ("", "b" * 32) for s in _started(c)),
            (msg.followed_result(job_name=c.job, daily=c.daily, build_no=c.build_no,
                                 result="success", duration_ms=61_000, link=link,
                                 outputs=outputs)
             for link in (c.link, None) for outputs in _outputs(c))),
        # a pasted build link's preview (chat.unfurl takes a message's blocks)
        "build_preview": (msg.build_preview(
            job_name=c.job, description=c.desc, daily=daily, build_no=c.build_no, result=r,
            duration_ms=d, progress=p, started_by=by, stop_id=i, rebuild_id=i)
            for daily in (c.daily, "") for r in (None, *RESULTS) for d in (None, 7_200_000)
            for p in (*_progress(c), None) for by in (c.user, None) for i in ("b" * 32, None)),
        "notify_on": (msg.notify_on(c.job, daily, c.build_no) for daily in (c.daily, "")),
        "notify_off": (msg.notify_off(c.job, daily, c.build_no) for daily in (c.daily, "")),
        "notify_ended": (msg.notify_ended(c.job, c.daily, c.build_no, on_its_way=w)
                         for w in (False, True)),
        "notify_refused": iter([msg.notify_refused(c.words)]),
        "already_on_it": iter([msg.already_on_it(c.user)]),
        "on_it_closed": iter([msg.on_it_closed(c.job, c.build_no)]),
        "on_it_refused": iter([msg.on_it_refused(c.words)]),
        "on_it_released": iter([msg.on_it_released(c.job)]),
        "with_taker": (msg.with_taker(reply, taker)
                       for reply in (*(msg.result_reply(
                           **common, daily=c.daily, result=r, duration_ms=61_000,
                           link=c.link, build_no=c.build_no, tail=tail,
                           tail_truncated=trunc, tail_error=err)
                           for r in RESULTS for tail, trunc, err in _tails(c)),
                           msg.followed_result(
                               job_name=c.job, daily=c.daily, build_no=c.build_no,
                               result="failure", duration_ms=None, link=c.link,
                               build_id="b" * 32))
                       for taker in (c.user, None)),
        "notify_dm": (msg.notify_dm(job_name=c.job, daily=daily, build_no=c.build_no, result=r,
                                    duration_ms=d, thread=thread, link=link,
                                    channel=c.channel)
                      for daily in (c.daily, "") for r in RESULTS for d in (None, 61_000)
                      for thread in (c.link, None) for link in (c.link, None)),
        # changes subscriptions: a branch broke, a branch is fixed
        "changes_broke": (msg.changes_broke(
            job_name=c.job, branch=branch, daily=daily, build_no=c.build_no,
            last_good=c.daily, link=link, tail=tail, tail_truncated=trunc, tail_error=err,
            mention=who, build_id=bid)
            for branch in ("master", c.words[:255]) for daily in (c.daily, "")
            for link in (c.link, None) for tail, trunc, err in _tails(c)
            for who in (c.user, None) for bid in ("", "b" * 32)),
        "changes_fixed": (msg.changes_fixed(
            job_name=c.job, branch=branch, daily=daily, build_no=c.build_no, failed=n,
            broken_for=took, link=link, on_it=who)
            for branch in ("master", c.words[:255]) for daily in (c.daily, "")
            for n in (1, 10**6) for took in (None, 0.0, 59.0, 3_725.0, 9e9)
            for link in (c.link, None) for who in (c.user, None)),
    }


def _started(c: Case) -> list[str | None]:
    """Who started a followed build, in every shape ``started_words`` has."""
    return [None, *(msg.started_words(trigger=t, codearts_user=u, person=p)
                    for t in (None, "PUSH", "SLACK", c.words[:32])
                    for u in (None, c.words[:128]) for p in (None, c.user))]


def _rows(c: Case) -> list[list[BuildRow]]:
    """Build rows for /build status: none, one of each kind, and many."""
    kinds = [BuildRow(c.build_no, c.daily, "running", 1_800_000_000.0, 61_000, c.user),
             BuildRow(c.build_no, "", "running", None, None, None),
             *(BuildRow(c.build_no, daily, r, 1_800_000_000.0, d, by, on_it=by)
               for r in RESULTS for daily in (c.daily, "") for d in (None, 7_200_000)
               for by in (c.user, None)),
             # followed builds: who started them, from their record
             *(BuildRow(c.build_no, c.daily, "failure", 1_800_000_000.0, 61_000, None,
                        codearts_user=u, trigger=t, person=p)
               for u in (None, c.words[:128]) for t in (None, "PUSH", "SLACK", c.words[:32])
               for p in (None, c.user))]
    return [[], kinds[:1], kinds[1:3], kinds, kinds * 5]


def public_functions() -> set[str]:
    return {name for name, f in vars(msg).items()
            if inspect.isfunction(f) and f.__module__ == msg.__name__ and not name.startswith("_")}


def test_every_builder_is_covered() -> None:
    covered = set(builds(CASES["ordinary"]))
    assert public_functions() - HELPERS == covered, "add the new builder to builds()"
    assert not HELPERS & covered


BROKEN_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")
# All the markup the bot itself writes: a user, a channel, a link with a label.
MARKUP_FORM = re.compile(r"<(?:@[A-Za-z0-9]+|#[A-Za-z0-9]+|https?://[^\s<>|]+\|[^<>]*)>")


def check_shown(text: str) -> None:
    assert text, "empty text"
    assert BROKEN_ENTITY.search(text) is None, f"broken entity in {text[:200]!r}"
    outside = MARKUP_FORM.sub("", text)
    assert "<" not in outside and ">" not in outside, f"stray < or > in {text[:200]!r}"


def check(message: dict[str, Any]) -> None:
    assert set(message) <= {"text", "blocks", "response_type", "replace_original"}
    text = message["text"]
    assert 0 < len(text) <= 40_000
    check_shown(text)
    blocks = message.get("blocks", [])
    assert len(blocks) <= 50
    block_ids = [b["block_id"] for b in blocks if "block_id" in b]
    assert len(block_ids) == len(set(block_ids)) and all(len(i) <= 255 for i in block_ids)
    action_ids: list[str] = []
    for block in blocks:
        Block.parse(block).validate_json()  # type: ignore[union-attr]
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
            check_shown(block["text"]["text"])
        elif block["type"] == "context":
            assert 1 <= len(block["elements"]) <= 10
            for element in block["elements"]:
                assert len(element["text"]) <= 2000
                check_shown(element["text"])
        elif block["type"] == "actions":
            for button in block["elements"]:
                assert button["type"] == "button"
                assert 0 < len(button["text"]["text"]) <= 75
                assert 0 < len(button["value"]) <= 2000
                action_ids.append(button["action_id"])
        else:
            raise AssertionError(f"unchecked block type {block['type']}")
    assert len(action_ids) == len(set(action_ids)) and all(len(i) <= 255 for i in action_ids)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", sorted(builds(CASES["ordinary"])))
def test_every_message_keeps_slacks_limits(name: str, case: str) -> None:
    made = list(builds(CASES[case])[name])
    assert made
    for message in made:
        check(message)


def test_the_checks_catch_what_they_are_for() -> None:
    """The checker itself: each broken message is refused."""
    ok = {"text": "a &amp; b <@U1> <https://x|y>"}
    check(ok)
    for bad in ({"text": "a & b"}, {"text": "&amp"}, {"text": "<!channel>"}, {"text": "a > b"},
                {"text": "x", "blocks": [msg._section("s")] * 51},
                {"text": "x", "blocks": [{"type": "section",
                                          "text": {"type": "mrkdwn", "text": "s" * 3001}}]},
                {"text": "x", "blocks": [{"type": "context",
                                          "elements": [{"type": "mrkdwn", "text": "s" * 2001}]}]},
                {"text": "x", "blocks": [{"type": "actions", "elements": [
                    msg._button("b" * 76, "a", "v")]}]},
                {"text": "x", "blocks": [{"type": "actions", "elements": [
                    msg._button("b", "a", "v"), msg._button("c", "a", "w")]}]},
                {"text": "x" * 40_001}):
        with pytest.raises((AssertionError, SlackObjectFormationError)):
            check(bad)


# --- the build form's views (bot/forms.py) ---------------------------------------------

FORM_HELPERS = {"form_key", "seal", "unseal", "picked_job", "read_form", "block_for",
                "prefill_from_body", "command_text", "too_big",
                "channel_block", "picked_channel"}  # build no view


def _job(c: Case, n: int, *, extra: bool = False) -> Any:
    from bot.config import JobConfig

    params: dict[str, Any] = {}
    for i in range(n):
        name = f"p{i:03d}_" + "n" * 100
        if i % 3 == 0:
            choices = [f"{c.words[:140]}{k}" for k in range(100)]
            params[name] = {"choices": choices, "default": choices[0]}
        elif i % 3 == 1:
            params[name] = {"required": True, "pattern": "^.*$", "default": "d" * 3000}
        else:  # choices a select cannot hold: a text field instead
            params[name] = {"choices": ["v" * 151, "w"]}
    return JobConfig.model_validate({"name": c.job[:150], "id": "f" * 32, "params": params,
                                     "allow_extra_params": extra, "confirm": not extra,
                                     "description": c.desc})


def view_builds(c: Case) -> dict[str, Iterator[dict[str, Any]]]:
    """name -> the views that forms builder makes from this case."""
    from bot import forms
    from bot.command import BuildCommand

    meta = forms.seal(b"k", {"u": c.user, "c": c.channel, "r": "https://x/" + "a" * 5000,
                             "j": c.job[:150]})
    jobs = [*c.jobs, (c.job[:150], c.desc)]
    big = BuildCommand(c.job, (("p001_" + "n" * 100, "x" * 3001),), None, None)
    edited = BuildCommand(c.job, (("other", "1"),), "abc", "v1")
    return {
        "form_view": (forms.form_view(js, job, metadata=meta, prefill=pre)
                      for js in (jobs, [], jobs * 3)
                      for job in (None, _job(c, 2), _job(c, 95, extra=True), _job(c, 96))
                      for pre in (None, big, edited)),
        # the "Run a build" shortcut's form: a Channel field first (issue 29)
        "form_view(channel)": (forms.form_view(js, job, metadata=meta, prefill=pre,
                                               channel_field=True, channel=ch)
                               for js in (jobs, [], jobs * 3)
                               for job in (None, _job(c, 2), _job(c, 95, extra=True),
                                           _job(c, 96))
                               for pre in (None, edited) for ch in (None, c.channel)),
        "notice_view": (forms.notice_view(t, [c.words] * n)
                        for t in ("Not started", "x" * 40) for n in (1, 50)),
    }


def check_select(element: dict[str, Any]) -> None:
    assert element["type"] == "static_select"
    assert len(element["placeholder"]["text"]) <= 150
    options = element["options"]
    assert 0 < len(options) <= 100
    assert len({o["value"] for o in options}) == len(options)
    for option in options:
        assert 0 < len(option["text"]["text"]) <= 75
        assert 0 < len(option["value"]) <= 150
        assert len(option.get("description", {}).get("text", "")) <= 75
    if "initial_option" in element:
        assert element["initial_option"] in options


def check_view(view: dict[str, Any]) -> None:
    from slack_sdk.models.views import View

    from bot.standins.slack_rules import view_problem

    View(**view).validate_json()  # title, close, submit <= 24; <= 100 blocks; metadata
    # slack_sdk accepts an input block in a view without submit; Slack does not
    # ("submit is required when an input block is within the blocks array")
    if any(b["type"] == "input" for b in view["blocks"]):
        assert view.get("submit"), "a view with an input block needs submit"
    assert view_problem(view) is None, view_problem(view)  # what the Slack stand-in refuses
    assert len(view["blocks"]) <= 100 and len(view.get("private_metadata", "")) <= 3000
    block_ids = [b["block_id"] for b in view["blocks"] if "block_id" in b]
    assert len(block_ids) == len(set(block_ids)) and all(len(i) <= 255 for i in block_ids)
    for block in view["blocks"]:
        Block.parse(block).validate_json()  # type: ignore[union-attr]
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
            check_shown(block["text"]["text"])
            if "accessory" in block and block["accessory"]["type"] == "button":  # Home's Run…
                assert len(block["accessory"]["value"]) <= 2000
            elif "accessory" in block:  # the job select of a view with nothing to submit
                check_select(block["accessory"])
        elif block["type"] == "context":
            assert all(len(e["text"]) <= 2000 for e in block["elements"])
            for element in block["elements"]:
                check_shown(element["text"])
        elif block["type"] == "input":
            assert 0 < len(block["label"]["text"]) <= 2000
            assert len(block.get("hint", {}).get("text", "")) <= 2000
            element = block["element"]
            if element["type"] == "plain_text_input":
                assert element["max_length"] <= 3000
                assert len(element.get("initial_value", "")) <= element["max_length"]
            elif element["type"] == "conversations_select":  # the shortcut's Channel
                assert len(element["placeholder"]["text"]) <= 150
            else:
                check_select(element)
        elif block["type"] == "header":
            assert 0 < len(block["text"]["text"]) <= 150
        elif block["type"] == "divider":
            pass
        elif block["type"] == "actions":
            assert 0 < len(block["elements"]) <= 25
            for element in block["elements"]:
                assert len(element["text"]["text"]) <= 75 and len(element["value"]) <= 2000
        else:
            raise AssertionError(f"unchecked block type {block['type']}")


def test_every_form_builder_is_covered() -> None:
    from bot import forms

    public = {name for name, f in vars(forms).items() if inspect.isfunction(f)
              and f.__module__ == forms.__name__ and not name.startswith("_")}
    assert public - FORM_HELPERS == {n.split("(")[0] for n in view_builds(CASES["ordinary"])}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", sorted(view_builds(CASES["ordinary"])))
def test_every_view_keeps_slacks_limits(name: str, case: str) -> None:
    made = list(view_builds(CASES[case])[name])
    assert made
    for view in made:
        check_view(view)


def test_every_view_with_an_input_block_has_submit() -> None:
    """Slack refuses (views.open: invalid_arguments) a view holding an input block but no
    submit: every view the form builds, for every case, either has submit or holds no
    input block (the first view, before a job is picked, and a job too big for a form)."""
    made = [view for case in CASES.values() for views in view_builds(case).values()
            for view in views]
    with_inputs = [v for v in made if any(b["type"] == "input" for b in v["blocks"])]
    assert with_inputs and len(with_inputs) < len(made)  # both kinds were built
    assert all(v.get("submit") for v in with_inputs)
    first = [v for v in made if any(b.get("block_id") == "job" and b["type"] == "section"
                                    for b in v["blocks"])]
    assert first and all("submit" not in v for v in first)


def test_the_view_checks_catch_an_input_block_without_submit() -> None:
    from bot import forms

    view = forms.form_view([("backend", "")], _job(CASES["ordinary"], 2), metadata="m")
    check_view(view)
    del view["submit"]
    with pytest.raises(AssertionError, match="needs submit"):
        check_view(view)


def test_a_job_with_more_parameters_than_a_view_holds_says_so() -> None:
    from bot import forms

    view = forms.form_view([], _job(CASES["ordinary"], 96), metadata="m")
    shown = view["blocks"][1]["text"]["text"]
    assert "submit" not in view and "Type the command instead" in shown
    fits = forms.form_view([], _job(CASES["ordinary"], 95, extra=True), metadata="m")
    assert len(fits["blocks"]) == 100 and "submit" in fits


# --- the App Home (bot.home_view, issue 29) --------------------------------------------------

def home_views(c: Case) -> Iterator[dict[str, Any]]:
    """The Home with nothing, with a little, and with 200 builds and 50 approvals."""
    from bot.home_view import BuildRow, ToApprove, home_view

    approval = ToApprove(request_id="a" * 32, requester=c.user, job_name=c.job,
                         description=c.desc, body=c.body, approved=1, needed=2,
                         expires_at=1_800_000_000.0)
    states = ["running", "queued", "awaiting", "success", "failed", "ended:WEIRD"]
    rows = [BuildRow(job_name=c.job, daily=c.daily, build_no=c.build_no,
                     state=states[i % len(states)], duration_ms=i * 1000, link=c.link)
            for i in range(200)]
    jobs = [*c.jobs, (c.job, c.desc)] * 30
    for approvals, active, recent, total, js in (
            ([], [], [], 0, []), ([approval], rows[:3], rows[3:5], 2, c.jobs),
            ([approval] * 50, rows, rows[:10], 200, jobs)):
        for admin in (False, True):
            yield home_view(approvals=approvals, active=active, recent=recent,
                            recent_total=total, jobs=js, is_admin=admin)


@pytest.mark.parametrize("case", list(CASES))
def test_the_home_view_keeps_slacks_limits(case: str) -> None:
    made = list(home_views(CASES[case]))
    for view in made:
        assert view["type"] == "home" and not view.get("submit")
        check_view(view)
    full = made[-1]
    assert 60 < len(full["blocks"]) <= 100  # 200 builds and 50 approvals: it still fits
    shown = " ".join(e["text"] for b in full["blocks"] if b["type"] == "context"
                     for e in b["elements"])
    assert "and 40 more requests waiting" in shown and "and 190 more finished" in shown
    assert made[0]["blocks"] == [made[0]["blocks"][0]] and \
        "ask a buildbot admin" in made[0]["blocks"][0]["text"]["text"]
