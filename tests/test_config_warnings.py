"""Config warnings that matter (issue 26): an approval channel wider than the job's channels,
and two job entries naming one build task. Shown by ``python -m bot check-config`` and in
the log at start, both run as processes."""

from __future__ import annotations

from pathlib import Path

import httpx

from bot.config import config_warnings, parse_config
from bot.standins.slack import FakeSlack
from tests.harness import BACKEND_ID, DOCS_ID
from tests.test_process import bot_process
from tests.test_startup import bot, good_env

WARNED = f"""
admins = ["UADMIN"]

[jobs.secretjob]
id = "{BACKEND_ID}"
users = ["UALICE"]
channels = ["CSECRET"]
approvers = ["UBOSS"]
approval_channel = "CGENERAL"

[jobs.pubjob]
id = "{BACKEND_ID}"
users = ["*"]

[jobs.docs]
id = "{DOCS_ID}"
users = ["*"]
channels = ["CDOCS", "CAPPROVE"]
approvers = ["UBOSS"]
approval_channel = "CAPPROVE"

[jobs.open]
id = "{DOCS_ID.replace("0", "9")}"
users = ["*"]
approvers = ["UBOSS"]
approval_channel = "CANYWHERE"
"""

WIDER = ("warning: jobs.secretjob: approval_channel CGENERAL is not one of its channels "
         "(CSECRET), so every parameter of each request for secretjob is posted in a channel "
         "wider than the job's")
SHARED = (f"warning: jobs.secretjob, jobs.pubjob name the same build task ({BACKEND_ID}): ")
SHARED_WHAT = ("the builds of one entry can be seen (/build status) and stopped (/build stop) "
               "through the other's name. Stop and status check a build started from Slack "
               "against the entry it was started under")


def test_the_warnings_name_the_jobs_and_say_what_they_allow() -> None:
    lines = config_warnings(parse_config(WARNED, source="buildbot.toml"))
    assert len(lines) == 2, lines  # docs' approval channel is one of its channels; open has none
    assert lines[0].startswith(WIDER)
    assert lines[1].startswith(SHARED) and SHARED_WHAT in lines[1]


def test_a_file_without_either_has_no_warning() -> None:
    fine = WARNED.replace('approval_channel = "CGENERAL"', 'approval_channel = "CSECRET"')
    fine = fine.replace(f'[jobs.pubjob]\nid = "{BACKEND_ID}"',
                        '[jobs.pubjob]\nid = "aaaabbbbccccddddeeeeffff00001111"')
    assert config_warnings(parse_config(fine, source="buildbot.toml")) == []


def test_check_config_shows_both_warnings(tmp_path: Path) -> None:
    jobs = tmp_path / "buildbot.toml"
    jobs.write_text(WARNED)
    with FakeSlack() as slack:
        out = bot("check-config", env=good_env(slack, jobs, tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert WIDER in out.stdout and SHARED in out.stdout and SHARED_WHAT in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_the_log_at_start_shows_both_warnings(tmp_path: Path) -> None:
    jobs = tmp_path / "buildbot.toml"
    jobs.write_text(WARNED)
    with FakeSlack() as slack:
        env = good_env(slack, jobs, tmp_path)
        proc = bot_process(env)
        try:
            url = f"http://127.0.0.1:{env['PORT']}"

            def ready() -> bool:
                assert proc.poll() is None
                try:
                    return httpx.get(url + "/readyz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            slack.wait_for(ready, timeout=20, every=0.1)
        finally:
            proc.terminate()
            output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output
    assert WIDER in output and SHARED in output and SHARED_WHAT in output
