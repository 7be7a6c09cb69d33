"""``python -m bot demo``: the real bot against the stand-ins, the terminal as the Slack client."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.demo import DEMO_LINK_TEMPLATE, EXAMPLE_JOBS, Demo
from tests.test_process import ROOT, clean_env


def test_the_embedded_example_is_the_shipped_file() -> None:
    assert (ROOT / "examples" / "buildbot.toml").read_text(encoding="utf-8") == EXAMPLE_JOBS


def test_the_example_jobs_file_is_valid() -> None:
    from bot.config import load_config

    config = load_config(ROOT / "examples" / "buildbot.toml")
    assert set(config.jobs) == {"backend", "e2e", "docs"}


def _check_transcript(out: str) -> None:
    # a confirmation, with its numbered buttons, seen by alice alone
    assert re.search(r"only alice sees this \(ephemeral\).*\n│ Run this build\?", out)
    assert "[1] Run  [2] Cancel" in out
    # a started build with its daily build number, in the channel
    assert re.search(r"#builds, everyone sees\n│ ⏳ @alice started \*backend\*: "
                     r"build \d{8}\.\d+ \(#1\)", out)
    # the result in the build's thread, and the parent message changed
    assert re.search(r"in the thread of \"⏳ @alice started \*backend\*.*\n"
                     r"│ ✅ backend \d{8}\.\d+ succeeded in \d+ s\.", out)
    assert re.search(r"│ \*What it produced\* \(2\):\n│ • :package: package \*backend.tar.gz\* "
                     r"`1.4.2` at `https://artifacts.example.com/backend/1.4.2/", out)
    assert re.search(r"@bob ❌ e2e \d{8}\.\d+ failed in \d+ s\.", out)
    assert re.search(r"now reads\n│ ✅ @alice started \*backend\*.*: succeeded", out)
    # live progress: the channel message updated in place with the step it is on
    assert re.search(r"now reads\n│ ⏳ @alice started \*backend\*.*\n│ Running for less than "
                     r"a minute · step \d of 4: \w+", out)
    # the failure's thread reply carries the log's last lines
    assert re.search(r"@bob ❌ e2e .*\n│ Last \d+ lines of the build log: Full log in "
                     r"CodeArts\n│ ```\n", out)
    # a pasted link to the build, previewed under the message
    assert re.search(r"the preview of https://\S+/history/1 under alice's message\n"
                     r"│ \*backend\* build \d{8}\.\d+ \(#1\) · Backend CI\n│ ⏳ Running", out)
    # a refusal for a user who may not run the job, to him alone
    assert re.search(r"only bob sees this \(ephemeral\).*\n│ ⚠️ Nothing was started\.\n"
                     r"│ • You may not run `backend`", out)


def test_the_demo_script_runs_end_to_end_as_a_process(tmp_path: Path) -> None:
    """On any environment: the demo reads none, so a real workspace's settings (or broken
    ones) change nothing."""
    env = clean_env(SLACK_BOT_TOKEN="xoxb-…", IAM_USER="someone", DATABASE_URL="nonsense",
                    BUILDBOT_CONFIG=str(tmp_path / "missing.toml"), LOG_LEVEL="verbose")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "bot", "demo", "--script",
                          "examples/demo.txt"], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=60, check=False)
    took = time.monotonic() - started
    assert out.returncode == 0, out.stdout + out.stderr
    _check_transcript(out.stdout)
    assert "Traceback" not in out.stderr, out.stderr
    assert took < 20, f"the demo script took {took:.1f} s"


def test_lines_on_a_stdin_that_is_not_a_terminal_are_a_script(tmp_path: Path) -> None:
    lines = "/build docs\nwait\nnonsense\n"
    out = subprocess.run([sys.executable, "-m", "bot", "demo"], cwd=tmp_path,
                         env=clean_env(), input=lines, text=True, capture_output=True,
                         timeout=60, check=False)
    assert re.search(r"✅ docs \d{8}\.\d+ succeeded", out.stdout), out.stdout + out.stderr
    assert "Not understood: 'nonsense'" in out.stdout
    assert out.returncode == 1  # a line that was not understood fails the script


def test_a_missing_script_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "bot", "demo", "--script",
                          str(tmp_path / "nope.txt")], cwd=ROOT, env=clean_env(), text=True,
                         capture_output=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "cannot read the script" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[Demo, io.StringIO]]:
    out = io.StringIO()
    with Demo(out=out, echo=True) as running:
        yield running, out


def _said(out: io.StringIO, since: int) -> str:
    return out.getvalue()[since:]


def test_switching_user_and_channel_tries_the_permissions(
        demo: tuple[Demo, io.StringIO]) -> None:
    d, out = demo
    mark = len(out.getvalue())
    assert d.line("in #random") and d.line("as alice")
    assert d.line("/build backend")
    said = _said(out, mark)
    assert "alice in #random> /build backend" in said
    assert "`backend` cannot be run in this channel" in said
    mark = len(out.getvalue())
    assert d.line("in #builds") and d.line("as carol")  # in S01DEVS, so allowed
    assert d.line("/build backend target=prod")
    said = _said(out, mark)
    assert "only carol sees this (ephemeral), in #builds" in said and "Run this build?" in said
    # someone else cannot answer carol's question
    number = max(b.number for b in d.buttons.values() if b.label == "Cancel")
    mark = len(out.getvalue())
    assert d.line("as bob") and d.line(str(number))
    assert "Only @carol can answer this confirmation" in _said(out, mark)
    # carol cancels; the question is replaced, and its buttons go with it
    mark = len(out.getvalue())
    assert d.line("as carol") and d.line(str(number))
    said = _said(out, mark)
    assert 'replacing "Run this build?"' in said and "Cancelled: backend was not started." in said
    assert not d.line(str(number))
    assert "is no longer shown" in _said(out, mark)


def test_stop_and_rebuild_are_buttons_that_click(demo: tuple[Demo, io.StringIO]) -> None:
    d, out = demo
    assert d.line("as admin") and d.line("in #builds")
    mark = len(out.getvalue())
    assert d.line("/build docs")  # confirm = false: started at once
    assert re.search(r"@admin started \*docs\*: build \d{8}\.\d+", _said(out, mark))
    mark = len(out.getvalue())
    assert d.line("click Stop")
    assert re.search(r"🛑 @admin asked CodeArts to stop docs", _said(out, mark))
    mark = len(out.getvalue())
    assert d.line("wait")
    assert re.search(r"docs \d{8}\.\d+ was stopped", _said(out, mark))
    mark = len(out.getvalue())
    assert d.line("click Rebuild")
    assert "Run this build again?" in _said(out, mark)


def test_help_and_unknown_lines(demo: tuple[Demo, io.StringIO]) -> None:
    d, out = demo
    mark = len(out.getvalue())
    assert d.line("help")
    said = _said(out, mark)
    for word in ("/build", "as NAME", "in #CHANNEL", "wait", "click LABEL"):
        assert word in said
    assert not d.line("/deploy now")
    assert not d.line("99999")
    assert not d.line("sudo make me a sandwich")


def test_slack_markup_is_rendered_for_people(demo: tuple[Demo, io.StringIO]) -> None:
    d, _ = demo
    text = ("<@U01ALICE> in <#C01BUILDS> and <#C9|other>: <https://x.example/1|Open> "
            "<!channel> :white_check_mark: &lt;b&gt; &amp;")
    assert d.mrkdwn(text) == "@alice in #builds and #other: Open @channel ✅ <b> &"


def test_the_form_opens_and_picking_a_job_shows_its_fields(
        demo: tuple[Demo, io.StringIO]) -> None:
    """``/build`` alone opens the form as Slack accepts it (the job select beside its
    text, nothing to submit yet); ``pick`` updates it with the job's fields."""
    d, out = demo
    assert d.line("as alice") and d.line("in #builds")
    mark = len(out.getvalue())
    assert d.line("/build")
    said = _said(out, mark)
    assert re.search(r"│ Job: \(none\)   \[backend \| e2e \| docs\]", said), said
    assert "│ [Cancel]" in said and "type submit" not in said
    mark = len(out.getvalue())
    assert d.line("pick backend")
    said = _said(out, mark)
    assert "│ (1) Job *: backend   [backend | e2e | docs]" in said, said
    assert "(2) codeBranch: master" in said and "[Continue: type submit]" in said
    assert d.slack.refused() == []


def test_home_shows_the_home_tab_and_its_run_button_opens_the_shortcuts_form(
        demo: tuple[Demo, io.StringIO]) -> None:
    """``home``: the App Home as Slack shows it (issue 29), its buttons numbered; Run…
    opens the form with a Channel field, submitted for the channel you are in."""
    d, out = demo
    assert d.line("as dana") and d.line("in #random")
    mark = len(out.getvalue())
    assert d.line("home")
    said = _said(out, mark)
    assert "┌ the Home tab of dana (only they see it)" in said and "Jobs you can run" in said
    assert re.search(r"\[\d+\] Run…", said) and "backend" not in said  # not dana's to run
    mark = len(out.getvalue())
    assert d.line("click Run…")  # the newest: docs
    said = _said(out, mark)
    assert "(1) Channel *:" in said and "(2) Job *: docs" in said
    mark = len(out.getvalue())
    assert d.line("submit")
    said = _said(out, mark)
    assert "the form closed" in said and "#random" in said
    mark = len(out.getvalue())
    assert d.line("home")  # again within 10 s: shown when its turn comes
    assert "shown less than 10 s ago" in _said(out, mark)
    assert d.slack.refused() == []


def test_a_pasted_build_link_is_previewed_where_it_may_be_shown(
        demo: tuple[Demo, io.StringIO]) -> None:
    d, out = demo
    assert d.line("as alice") and d.line("in #builds")
    mark = len(out.getvalue())
    assert d.line("/build docs")
    found = re.search(r"@alice started \*docs\*: build \d{8}\.\d+ \(#(\d+)\)", _said(out, mark))
    assert found
    docs = DEMO_LINK_TEMPLATE.format(job_id="0123456789abcdef0123456789abcdef",
                                     build_no=found.group(1))
    mark = len(out.getvalue())
    assert d.line(f"paste {docs}")
    said = _said(out, mark)
    assert f"the preview of {docs} under alice's message" in said, said
    assert re.search(r"│ \*docs\* build \d{8}\.\d+ \(#\d+\) · Docs site\n"
                     r"│ (⏳ Running|✅ Succeeded)", said), said
    assert "│ Started by @alice" in said
    backend = DEMO_LINK_TEMPLATE.format(job_id="f9d6c8466d614a9788e9a0acf6c15f46", build_no="1")
    assert d.line("in #random")  # backend may not be run there: its link is not previewed
    mark = len(out.getvalue())
    assert d.line(f"paste {backend}")
    assert "(no preview:" in _said(out, mark)
    assert not d.line("paste two links")
    assert d.slack.refused() == []
    assert d.line("in #builds")
