"""bench.slack_limits keeps working: the Slack stand-in enforces Slack's documented limits
(429 with Retry-After), the floor the bench compares with is the least those limits
allow, and a tiny run of the bench (a real bot process, signed requests, the stand-ins)
posts every result once and answers every command and click."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import bench._common
from bench.slack_limits import QUICK, Size, config_text, differences, least_finish, main
from bot.config import load_config
from bot.standins.slack import SLACK_LIMITS, FakeSlack


class Clock:
    """The stand-in's clock: it moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited() -> Iterator[tuple[FakeSlack, Clock]]:
    clock = Clock()
    with FakeSlack() as slack, httpx.Client() as http:
        slack.enforce_slack_limits(clock)
        slack.http = http  # type: ignore[attr-defined]
        yield slack, clock


def call(slack: FakeSlack, method: str, **params: str) -> httpx.Response:
    http: httpx.Client = slack.http  # type: ignore[attr-defined]
    return http.post(slack.api_url + method, data={"text": "x", **params},
                     headers={"Authorization": "Bearer xoxb-test"})


@pytest.mark.parametrize(("method", "per_minute", "burst"), [
    ("chat.update", 50, 2),            # Tier 3
    ("chat.postEphemeral", 100, 5),    # Tier 4
    ("views.open", 100, 5),            # Tier 4
    ("views.update", 100, 5),
    ("usergroups.users.list", 20, 1),  # Tier 2
])
def test_the_stand_in_answers_429_past_slacks_tier(limited: tuple[FakeSlack, Clock],
                                                   method: str, per_minute: int,
                                                   burst: int) -> None:
    slack, clock = limited
    assert SLACK_LIMITS[method] == per_minute
    statuses = [call(slack, method, channel="C1").status_code for _ in range(burst + 1)]
    assert statuses == [200] * burst + [429]  # a short burst, then refused
    refused = call(slack, method, channel="C1")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json() == {"ok": False, "error": "ratelimited"}
    for _ in range(5):  # then the tier's rate: one call per 60 / per_minute seconds
        clock.now += 60 / per_minute
        assert call(slack, method, channel="C1").status_code == 200
        assert call(slack, method, channel="C1").status_code == 429


def test_the_stand_in_paces_chat_post_message_per_channel(
        limited: tuple[FakeSlack, Clock]) -> None:
    slack, clock = limited
    first = [call(slack, "chat.postMessage", channel="C1").status_code for _ in range(4)]
    other = [call(slack, "chat.postMessage", channel="C2").status_code for _ in range(4)]
    assert first == other == [200, 200, 200, 429]  # about 3 s of calls in a burst
    assert slack.rate_limited() == [("chat.postMessage", "C1"), ("chat.postMessage", "C2")]
    clock.now += 1.0  # about one a second per channel
    assert call(slack, "chat.postMessage", channel="C1").status_code == 200
    assert call(slack, "chat.postMessage", channel="C1").status_code == 429
    assert len(slack.calls("chat.postMessage")) == 7  # a refused call posts nothing


def test_the_floor_is_the_least_a_bucket_allows() -> None:
    # 10 calls at 0 s through 60 a minute with 3 s of burst: 3 at once, then one a second
    assert least_finish([0.0] * 10, 60, 3.0) == pytest.approx(7.0)
    # spread-out ends that the rate keeps up with: the last end, nothing more
    assert least_finish([0.0, 10.0, 20.0], 60, 3.0) == pytest.approx(20.0)
    # a late burst decides: 6 calls at 100 s, 3 at once, then 3 more at 1 a second
    assert least_finish([0.0, *[100.0] * 6], 60, 3.0) == pytest.approx(103.0)
    # chat.update, 50 a minute (2.5 calls of burst): 100 results ending together
    assert least_finish([0.0] * 100, 50, 3.0) == pytest.approx((100 - 2.5) * 1.2)


def test_the_bench_jobs_file_is_valid_and_the_first_line_says_what_differs(
        tmp_path: Path) -> None:
    size = Size(builds=40, jobs=4, channels=2, run_seconds=1, end_window=1, every=1)
    (tmp_path / "jobs.toml").write_text(config_text(size))
    config = load_config(tmp_path / "jobs.toml")
    assert len(config.jobs) == 5  # the four measured jobs and the clicks job
    assert "NOT the full run (--quick): 100 builds" in differences(QUICK, True)
    assert differences(QUICK, True).startswith("bot: the defaults a user gets")
    assert "BUILD_POLL_SECONDS=0.5" in differences(size, False, 0.5)


def test_a_tiny_run_posts_every_result_once_and_answers_everyone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench._common, "RESULTS", tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the bot's folder and log
    assert main(["--builds", "6", "--jobs", "2", "--channels", "2", "--run-seconds", "1",
                 "--end-window", "1", "--every", "0.5", "--poll", "0.5", "--quiet", "1",
                 "--no-pin", "--name", "smoke"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("bot: NOT the defaults: BUILD_POLL_SECONDS=0.5")
    (run,) = json.loads((tmp_path / "smoke.json").read_text())["runs"]
    assert run["finished"] and run["builds"] == 6
    assert run["results_once"] == 6 and run["results_missing"] == run["results_double"] == 0
    assert run["messages_not_updated_after_end"] == 0
    assert run["answers"] >= 2 and run["answers_missing"] == 0
    assert run["floor_s"] >= 0 and run["last_end_to_last_result_s"] > 0
    assert "results posted once" in out and "answer p99" in out
