"""One build at a time and a queue, end to end through signed requests, the Slack and
CodeArts stand-ins and a real database: the at-limit question, Queue, the second build
starting once when the first ends (also after a restart and on two replicas on
PostgreSQL), expiry, Leave, an admin's Run anyway, an approved request at a full job."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import cli
from bot import messages as msg
from bot.config import ConfigError, load_config
from tests.harness import CONFIG, OTHER_ID, Bot, button_value, run_value, running_bot

CHECKED_ID = "cccc0000cccc0000cccc0000cccc0000"
LIMITED = CONFIG + f"""
[jobs.single]
id = "{OTHER_ID}"
description = "One at a time"
users = ["*"]
max_running = 1
queue_ttl = "30m"

[jobs.auto]
id = "{OTHER_ID}"
users = ["*"]
confirm = false
max_running = 1

[jobs.checked]
id = "{CHECKED_ID}"
users = ["*"]
max_running = 1
check_codearts_running = true

[jobs.gated]
id = "{OTHER_ID}"
users = ["UALICE", "UBOB"]
approvers = ["UCAROL"]
max_running = 1
"""


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, config=LIMITED) as b:
        # builds end when a test ends them (end_build), not when the clock moves on
        b.codearts.add_job(OTHER_ID, duration=3600 * 24)
        b.codearts.add_job(CHECKED_ID, duration=3600 * 24)
        yield b


def runs(bot: Bot) -> list[Any]:
    return bot.codearts.requests_to("/v3/jobs/build", "POST")


def blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    found = message.get("blocks") or []
    return json.loads(found) if isinstance(found, str) else list(found)


def actions(message: dict[str, Any]) -> set[str]:
    return {e["action_id"] for b in blocks(message) if b["type"] == "actions"
            for e in b["elements"]}


def ask(bot: Bot, text: str = "single", user: str = "UALICE") -> tuple[dict[str, Any], str]:
    """Type a command: (the question the user sees, its response_url)."""
    resp, url = bot.command(text, user=user)
    assert resp.status_code == 200, resp.text
    (question,) = bot.wait_response(url)
    return question, url


def start_one(bot: Bot, user: str = "UALICE") -> str:
    """Type and Run: the job's one running build; returns its request id."""
    question, url = ask(bot, user=user)
    rid = run_value(question)
    n = len(runs(bot))
    bot.click(msg.RUN, rid, user=user, response_url=url)
    bot.slack.wait_for(lambda: len(runs(bot)) == n + 1)
    bot.wait_idle()
    return rid


def click(bot: Bot, action: str, rid: str, user: str) -> dict[str, Any]:
    """A click; returns what the clicker was told (the first response)."""
    url = bot.slack.response_url()
    assert bot.click(action, rid, user=user, response_url=url).status_code == 200
    bot.wait_idle()
    return (bot.slack.responses(url) or [{}])[0]


def queue(bot: Bot, user: str) -> tuple[str, str]:
    """At the limit: type, see the at-limit question, click Queue. (request id, url)"""
    question, _ = ask(bot, user=user)
    assert msg.RUN not in actions(question)
    rid = button_value(question, msg.QUEUE)
    url = bot.slack.response_url()
    bot.click(msg.QUEUE, rid, user=user, response_url=url)
    said = bot.wait_response(url)[0]
    assert "is queued" in said["text"] and button_value(said, msg.LEAVE) == rid
    bot.wait_idle()
    return rid, url


def end_build(bot: Bot, n: int) -> None:
    """CodeArts ends build ``n``; the watcher sees it ended (the clock seam, no sleep)."""
    bot.codearts.set_status(OTHER_ID, n, "SUCCESS")
    bot.clock.advance(20)
    bot.runtime.watcher.run_once()


def decisions(bot: Bot, rid: str) -> list[str]:
    return [r["decision"] for r in bot.store.audit_rows(request_id=rid)]


# --- the jobs file, check-config and explain ------------------------------------------------

def test_bad_queue_keys_are_reported_at_once_naming_file_job_and_field(tmp_path: Path) -> None:
    path = tmp_path / "buildbot.toml"
    path.write_text(CONFIG + f"""
[jobs.zero]
id = "{OTHER_ID}"
max_running = 0
queue_ttl = "2d"

[jobs.alone]
id = "{OTHER_ID}"
queue_ttl = "10m"
check_codearts_running = true

[jobs.typed]
id = "{OTHER_ID}"
max_running = "1"
queue_ttl = "25h"
check_codearts_running = "yes"
""")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [p.replace(f"{tmp_path}/", "") for p in err.value.problems] == [
        "buildbot.toml: jobs.zero.max_running: must be 1 or more, not 0: it is how many "
        "builds of the job may run at once; remove it for no limit.",
        'buildbot.toml: jobs.zero.queue_ttl: "2d" is not a duration: write it like 30m, 1h '
        "or 2h30m.",
        "buildbot.toml: jobs.alone.queue_ttl: has no effect without max_running: set "
        "max_running = 1 (or more), or remove it.",
        "buildbot.toml: jobs.alone.check_codearts_running: has no effect without max_running: "
        "set max_running = 1 (or more), or remove it.",
        'buildbot.toml: jobs.typed.max_running: must be a whole number (no quotes), not the '
        'string "1".',
        'buildbot.toml: jobs.typed.queue_ttl: "25h" is out of range: give between 1m and 24h.',
        'buildbot.toml: jobs.typed.check_codearts_running: must be true or false (no quotes), '
        'not the string "yes".',
    ]


def test_check_config_and_explain_know_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "buildbot.toml"
    path.write_text(LIMITED)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-secret")
    monkeypatch.setenv("CODEARTS_ENDPOINT", "https://cloudbuild.example.com")
    monkeypatch.setenv("CODEARTS_TOKEN", "token-secret")
    assert cli.check_config(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "note: jobs.single runs at most 1 build(s) at once; more wait in a queue for up " \
           "to 30 min." in out
    assert cli.explain(["--config", str(path), "--user", "UBOB", "--channel", "CBUILDS",
                        "/build single"]) == 0
    out = capsys.readouterr().out
    assert "at most 1 build(s) of single at once: while that many run, it would be queued " \
           "(for up to 30 min); admins may run anyway" in out


# --- the queue ---------------------------------------------------------------------------

def test_the_second_request_is_queued_and_starts_once_when_the_first_ends(bot: Bot) -> None:
    start_one(bot)
    question, _ = ask(bot, user="UBOB")
    text = question["text"]
    assert "*single* is already running" in text and "by <@UALICE>, just now" in text
    assert actions(question) == {msg.QUEUE, msg.CANCEL}  # no Run anyway for a non-admin
    daily = bot.codearts.builds(OTHER_ID)[0].daily
    assert daily in text

    rid, url = queue(bot, "UBOB")
    assert "next in line" in bot.slack.responses(url)[0]["text"]
    assert bot.store.get_request(rid).state == "queued"
    bot.runtime.watcher.run_once()  # the first build still runs: nothing starts
    assert len(runs(bot)) == 1

    end_build(bot, 1)  # the pass that sees it end
    bot.runtime.watcher.run_once()  # the next pass finds the free slot
    assert len(runs(bot)) == 2
    assert bot.store.get_request(rid).state == "started"
    started = bot.wait_response(url, 2)[-1]
    assert bot.codearts.builds(OTHER_ID)[1].daily in started["text"]
    for _ in range(3):
        bot.clock.advance(20)
        bot.runtime.watcher.run_once()
    assert len(runs(bot)) == 2
    assert decisions(bot, rid) == ["confirm", "queued", "dequeued", "started"]


def test_run_on_an_older_question_at_a_full_job_offers_the_queue(bot: Bot) -> None:
    first, first_url = ask(bot)
    second, second_url = ask(bot, user="UBOB")  # both asked while nothing ran
    bot.click(msg.RUN, run_value(first), response_url=first_url)
    bot.slack.wait_for(lambda: len(runs(bot)) == 1)
    bot.wait_idle()
    bot.click(msg.RUN, run_value(second), user="UBOB", response_url=second_url)
    said = bot.wait_response(second_url, 2)[1]
    assert "already running" in said["text"] and said["replace_original"] is True
    assert msg.QUEUE in actions(said)
    bot.wait_idle()
    assert len(runs(bot)) == 1
    assert bot.store.get_request(run_value(second)).state == "pending"


def test_a_job_without_confirmation_starts_when_free_and_asks_when_full(bot: Bot) -> None:
    resp, url = bot.command("auto", user="UBOB")
    assert resp.status_code == 200
    bot.slack.wait_for(lambda: len(runs(bot)) == 1)
    resp, url = bot.command("auto", user="UCAROL")
    (said,) = bot.wait_response(url)
    assert "already running" in said["text"] and msg.QUEUE in actions(said)
    bot.wait_idle()
    assert len(runs(bot)) == 1


def test_the_queue_is_first_in_first_out_and_leave_takes_one_out(bot: Bot) -> None:
    start_one(bot)
    carol, _carol_url = queue(bot, "UCAROL")
    dave, dave_url = queue(bot, "UDAVE")
    assert "number 2 in line" in bot.slack.responses(dave_url)[0]["text"]

    other = click(bot, msg.LEAVE, carol, "UDAVE")
    assert "Only <@UCAROL>" in other["text"] and other["replace_original"] is False
    left = click(bot, msg.LEAVE, carol, "UCAROL")
    assert "You left the queue" in left["text"]
    assert bot.store.get_request(carol).state == "withdrawn"
    assert "next in line" in bot.slack.responses(dave_url)[-1]["text"]  # moved up
    assert "left the queue" in click(bot, msg.LEAVE, carol, "UCAROL")["text"]  # replay

    end_build(bot, 1)
    bot.runtime.watcher.run_once()
    assert len(runs(bot)) == 2
    assert bot.store.get_request(dave).state == "started"
    assert bot.store.get_request(carol).state == "withdrawn"
    assert decisions(bot, carol).count("left_queue") == 1


def test_two_queued_start_one_after_the_other(bot: Bot) -> None:
    start_one(bot)
    carol, _ = queue(bot, "UCAROL")
    dave, _ = queue(bot, "UDAVE")
    end_build(bot, 1)
    bot.runtime.watcher.run_once()
    assert [bot.store.get_request(r).state for r in (carol, dave)] == ["started", "queued"]
    end_build(bot, 2)
    bot.runtime.watcher.run_once()
    assert [bot.store.get_request(r).state for r in (carol, dave)] == ["started", "started"]
    assert len(runs(bot)) == 3


def test_a_queued_request_expires_after_queue_ttl_and_is_told_once(bot: Bot) -> None:
    start_one(bot)
    rid, url = queue(bot, "UBOB")
    bot.clock.advance(29 * 60)
    bot.runtime.watcher.housekeeping()
    assert bot.store.get_request(rid).state == "queued"
    bot.clock.advance(2 * 60)
    bot.runtime.watcher.housekeeping()
    bot.runtime.watcher.housekeeping()
    told = bot.wait_response(url, 2)[1]
    assert "waited 30 minutes in the queue" in told["text"]
    assert "/build single" in told["text"]
    assert bot.store.get_request(rid).state == "expired"
    assert "expired" in click(bot, msg.LEAVE, rid, "UBOB")["text"]
    end_build(bot, 1)
    bot.runtime.watcher.run_once()
    assert len(runs(bot)) == 1
    assert decisions(bot, rid).count("queue_expired") == 1
    assert len(bot.slack.responses(url)) == 2


def test_queue_and_run_anyway_clicks_are_checked(bot: Bot) -> None:
    start_one(bot)
    question, _ = ask(bot, user="UBOB")
    rid = button_value(question, msg.QUEUE)
    assert "Only <@UBOB>" in click(bot, msg.QUEUE, rid, "UCAROL")["text"]
    assert "Only admins" in click(bot, msg.RUN_ANYWAY, rid, "UBOB")["text"]  # forged
    assert bot.store.get_request(rid).state == "pending"
    click(bot, msg.QUEUE, rid, "UBOB")
    assert "already in the queue" in click(bot, msg.QUEUE, rid, "UBOB")["text"]
    assert len(runs(bot)) == 1
    refused = [r for r in bot.store.audit_rows(request_id=rid)
               if r["decision"] == "refused_click"]
    assert [r["user_id"] for r in refused] == ["UCAROL", "UBOB"]


def test_an_admin_may_run_anyway(bot: Bot) -> None:
    start_one(bot)
    question, url = ask(bot, user="UADMIN")
    assert actions(question) == {msg.QUEUE, msg.RUN_ANYWAY, msg.CANCEL}
    rid = button_value(question, msg.RUN_ANYWAY)
    bot.click(msg.RUN_ANYWAY, rid, user="UADMIN", response_url=url)
    bot.slack.wait_for(lambda: len(runs(bot)) == 2)
    bot.wait_idle()
    assert bot.store.get_request(rid).state == "started"
    assert "run_anyway" in decisions(bot, rid)
    assert "started" in click(bot, msg.RUN_ANYWAY, rid, "UADMIN")["text"]  # replay
    assert len(runs(bot)) == 2


def approve(bot: Bot, user: str) -> tuple[str, str]:
    """Type gated, Run, and let UCAROL approve: (request id, the requester's url)."""
    question, url = ask(bot, "gated", user=user)
    rid = run_value(question)  # a job with approvers is never offered Queue before approval
    bot.click(msg.RUN, rid, user=user, response_url=url)
    assert "waiting for approval" in bot.wait_response(url, 2)[1]["text"]
    bot.wait_idle()
    click(bot, msg.APPROVE, rid, "UCAROL")
    return rid, url


def test_an_approved_request_at_a_full_job_is_queued(bot: Bot) -> None:
    first, _ = approve(bot, "UALICE")
    assert len(runs(bot)) == 1 and bot.store.get_request(first).state == "started"
    second, url = approve(bot, "UBOB")
    assert len(runs(bot)) == 1 and bot.store.get_request(second).state == "queued"
    assert "is queued" in bot.wait_response(url, 3)[-1]["text"]
    closed = [c for c in bot.slack.calls("chat.update") if "queue" in c.get("text", "")]
    assert len(closed) == 1 and "Approved by <@UCAROL>" in closed[0]["text"]
    # Queue and Run anyway never skip the approval (forged clicks on a pending request)
    third, _ = ask(bot, "gated", user="UBOB")
    assert "needs approval" in click(bot, msg.QUEUE, run_value(third), "UBOB")["text"]
    end_build(bot, 1)
    bot.runtime.watcher.run_once()
    assert len(runs(bot)) == 2 and bot.store.get_request(second).state == "started"
    assert bot.store.get_request(run_value(third)).state == "pending"


def test_a_queued_request_survives_a_restart(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, config=LIMITED) as one:
        one.codearts.add_job(OTHER_ID)
        start_one(one)
        rid, _ = queue(one, "UBOB")
        end_build(one, 1)  # the build ended; the bot stops before its next pass
    with running_bot(db_url, tmp_path, config=LIMITED) as two:
        two.codearts.add_job(OTHER_ID)
        two.runtime.watcher.run_once()
        two.runtime.watcher.run_once()
        assert len(runs(two)) == 1
        assert two.store.get_request(rid).state == "started"


# --- check_codearts_running --------------------------------------------------------------

def status_checks(bot: Bot) -> int:
    return len(bot.codearts.requests_to(f"/v1/job/{CHECKED_ID}/running-status", "GET"))


def test_a_build_started_outside_buildbot_takes_the_slot(bot: Bot) -> None:
    elsewhere = bot.codearts.start_elsewhere(CHECKED_ID)
    bot.codearts.set_status(CHECKED_ID, elsewhere.number, "RUNNING")
    question, _ = ask(bot, "checked", user="UBOB")
    assert "build #1, started outside buildbot" in question["text"]
    assert msg.RUN not in actions(question) and status_checks(bot) == 1
    rid = button_value(question, msg.QUEUE)
    click(bot, msg.QUEUE, rid, "UBOB")
    bot.runtime.watcher.run_once()
    assert runs(bot) == [] and bot.store.get_request(rid).state == "queued"
    bot.codearts.set_status(CHECKED_ID, elsewhere.number, "SUCCESS")  # it ended
    bot.runtime.watcher.run_once()
    (sent,) = runs(bot)
    assert sent.body["job_id"] == CHECKED_ID
    assert bot.store.get_request(rid).state == "started"
    # its own build, once CodeArts lists it, is not counted twice: the store counts it
    before = status_checks(bot)
    question, _ = ask(bot, "checked", user="UDAVE")
    assert "by <@UBOB>" in question["text"] and status_checks(bot) == before


def test_a_failed_running_check_is_not_known_and_starts_nothing(bot: Bot) -> None:
    bot.codearts.fail_next(500, count=100, path_prefix=f"/v1/job/{CHECKED_ID}/running-status")
    question, _ = ask(bot, "checked", user="UBOB")
    assert "CodeArts could not be asked whether it runs" in question["text"]
    assert msg.QUEUE in actions(question) and msg.RUN not in actions(question)
    rid = button_value(question, msg.QUEUE)
    click(bot, msg.QUEUE, rid, "UBOB")
    assert runs(bot) == [] and bot.store.get_request(rid).state == "queued"
    bot.codearts.reset()  # CodeArts answers again, and says nothing runs
    bot.runtime.watcher.run_once()
    assert len(runs(bot)) == 1 and bot.store.get_request(rid).state == "started"


# --- two replicas on PostgreSQL -------------------------------------------------------------

def test_two_replicas_start_one_build_at_max_running_one(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "two").mkdir()
    with running_bot(pg_url, tmp_path, config=LIMITED) as one, \
            running_bot(pg_url, tmp_path / "two", config=LIMITED,
                        codearts_endpoint=one.codearts.url) as two:  # one CodeArts for both
        one.codearts.add_job(OTHER_ID)
        users = ["UALICE", "UBOB", "UCAROL", "UDAVE"]
        asked = [(one if i % 2 else two, u, *ask(one, user=u)) for i, u in enumerate(users)]

        def run(job: tuple[Bot, str, dict[str, Any], str]) -> int:
            replica, user, question, url = job
            return replica.click(msg.RUN, run_value(question), user=user,
                                 response_url=url).status_code

        with concurrent.futures.ThreadPoolExecutor(len(asked)) as pool:
            assert set(pool.map(run, asked)) == {200}
        one.wait_idle(20)
        two.wait_idle(20)
        assert len(runs(one)) == 1  # one build; three told it is full
        full = [a for a in asked if one.store.get_request(run_value(a[2])).state == "pending"]
        assert len(full) == 3
        for _replica, _user, _question, url in full:
            said = one.slack.responses(url)[-1] if one.slack.responses(url) else \
                two.slack.responses(url)[-1]
            assert msg.QUEUE in actions(said)

        def queue_it(job: tuple[Bot, str, dict[str, Any], str]) -> int:
            replica, user, question, _url = job
            return replica.click(msg.QUEUE, run_value(question), user=user,
                                 response_url=replica.slack.response_url()).status_code

        with concurrent.futures.ThreadPoolExecutor(len(full)) as pool:
            assert set(pool.map(queue_it, full)) == {200}
        one.wait_idle(20)
        two.wait_idle(20)
        assert len(runs(one)) == 1

        # the running build ends; both replicas' passes look for the free slot at once
        one.codearts.set_status(OTHER_ID, 1, "SUCCESS")
        for b in (one, two):
            b.clock.advance(20)
        one.runtime.watcher.run_once()
        two.runtime.watcher.run_once()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda b: b.runtime.watcher.run_once(), (one, two)))
        assert len(runs(one)) == 2  # exactly one more
        states = sorted(one.store.get_request(run_value(a[2])).state for a in full)
        assert states == ["queued", "queued", "started"]


# --- a SIGKILL while the queued request's run call is in flight -----------------------------

def test_a_queued_request_starts_once_across_a_sigkill_restart(
        stand_ins: tuple[Any, Any], tmp_path: Path, db_url: str) -> None:
    import signal

    from bot.store import Store
    from tests.harness import BACKEND_ID, SECRET
    from tests.slack_requests import SlackSender
    from tests.test_crash_process import bot_at, crash_env, replies, settle

    slack, codearts = stand_ins
    env, url = crash_env(stand_ins, tmp_path, db_url)
    Path(env["BUILDBOT_CONFIG"]).write_text(CONFIG + f"""
[jobs.single]
id = "{BACKEND_ID}"
users = ["*"]
max_running = 1

[jobs.single.params.who]
default = "nobody"
""")

    def typed(sender: SlackSender, user: str) -> tuple[dict[str, Any], str]:
        hook = slack.response_url()  # parameters tell the builds apart in the history
        assert sender.command(f"single who={user}", user=user, channel="CBUILDS",
                              response_url=hook).status_code == 200
        (question,) = slack.wait_for(lambda: slack.responses(hook))
        return question, hook

    with bot_at(env, url, stop=signal.SIGKILL):
        sender = SlackSender(url + "/slack/events", SECRET)
        question, hook = typed(sender, "UALICE")
        sender.click(msg.RUN, run_value(question), user="UALICE", channel="CBUILDS",
                     response_url=hook)
        slack.wait_for(lambda: codearts.builds(BACKEND_ID), 10)
        question, hook = typed(sender, "UBOB")
        rid = button_value(question, msg.QUEUE)
        codearts.hang(60, path_prefix="/v3/jobs/build")  # the queued run: started, no answer
        sender.click(msg.QUEUE, rid, user="UBOB", channel="CBUILDS", response_url=hook)
        slack.wait_for(lambda: len(codearts.builds(BACKEND_ID)) == 2, 15)

    with bot_at(env, url):
        slack.wait_for(lambda: len(replies(slack)) >= 2, 25)  # both results, once each
        settle(slack, url)  # a few more passes (a process test): nothing more may arrive
        assert len(codearts.requests_to("/v3/jobs/build")) == 2  # never sent again
        assert len(replies(slack)) == 2
    store = Store.from_url(db_url)
    try:
        assert store.get_request(rid).state == "started"
        assert decisions_of(store, rid).count("dequeued") == 1
    finally:
        store.close()


def decisions_of(store: Any, rid: str) -> list[str]:
    return [r["decision"] for r in store.audit_rows(request_id=rid)]
