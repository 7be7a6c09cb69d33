"""Masking (bot/masking.py): a table of real-looking build output, each line with the exact
text that may be shown, the PEM state carried across a log's pages, and, through the real
path (signed requests, the Slack and CodeArts stand-ins, a real database), a failed
build's log tail, a CodeArts error and a secret-named parameter that never reach Slack."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import messages as msg
from bot.codearts.answers import step_from
from bot.codearts.errors import ApiError, BadResponseError, NotSentError, describe
from bot.logtail import TailBuffer
from bot.masking import MASK, PEM_MAX_LINES, Masker, mask_text, secret_name
from tests.harness import CONFIG, OTHER_ID, Bot, running_bot

# (a line as a build prints it, the line as Slack may show it)
MASKED = [
    # credentials in URLs: the user may stay, the password goes
    ("Cloning into 'app'... https://ci:Hunter2@git.example.com/org/app.git",
     "Cloning into 'app'... https://ci:****@git.example.com/org/app.git"),
    ("DATABASE_URL=postgresql://app:DbPass99@db/app",
     "DATABASE_URL=postgresql://app:****@db/app"),
    ("[INFO] Connecting to redis://:pw@cache:6379/0",
     "[INFO] Connecting to redis://:****@cache:6379/0"),
    ("remote: https://oauth2:glpat-AbCdEfGhIjKlMnOpQrSt@gitlab.example.com/g/p.git",
     "remote: https://oauth2:****@gitlab.example.com/g/p.git"),
    ("jdbc:mysql://root:p@ss;w0rd@mysql:3306/shop",
     "jdbc:mysql://root:****@mysql:3306/shop"),
    # JSON, YAML, properties, env: the whole value, quoted or not, of any length
    ('{"secret": "p@ss w0rd"}', '{"secret": "****"}'),
    ('{"client_secret":"abc$%^&*()def","user":"bob"}', '{"client_secret":"****","user":"bob"}'),
    ('  "npmAuthToken": "npm_s3cr3t", "retries": 3', '  "npmAuthToken": "****", "retries": 3'),
    ('{"api_key": 12345, "region": "cn-north-4"}', '{"api_key": ****, "region": "cn-north-4"}'),
    ("password=Sp3c!al;chars", "password=****"),
    ("DB_PASS=abc", "DB_PASS=****"),
    ("pass=x", "pass=****"),
    ("TOKEN=short", "TOKEN=****"),
    ("api_key=abcd", "api_key=****"),
    ("export AUTH_HEADER='Basic Zm9vOmJhcg=='", "export AUTH_HEADER='****'"),
    ("    passphrase: my long phrase", "    passphrase: ****"),
    ("  db_password: \"two words\"  # from vault", "  db_password: \"****\"  # from vault"),
    ("spring.datasource.password = s3cr3t value", "spring.datasource.password = ****"),
    ("x-api-key: 0f0f0f0f", "x-api-key: ****"),
    ("X-Auth-Token: MIIfake", "X-Auth-Token: ****"),
    ("HUAWEI_SK=abc123", "HUAWEI_SK=****"),
    ("//registry.npmjs.org/:_authToken=abc-def", "//registry.npmjs.org/:_authToken=****"),
    ("[INFO] mvn deploy -Dpassword=x -DskipTests", "[INFO] mvn deploy -Dpassword=**** -DskipTests"),
    ("helm upgrade app ./chart --set db.password=abc --set image.tag=1.4.2",
     "helm upgrade app ./chart --set db.password=**** --set image.tag=1.4.2"),
    ("kubectl create secret generic db --from-literal=password=s3cret -n prod",
     "kubectl create secret generic db --from-literal=password=**** -n prod"),
    ("curl -s 'https://api.example.com/v1/items?token=abc&page=2'",
     "curl -s 'https://api.example.com/v1/items?token=****"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", "aws_secret_access_key = ****"),
    # password flags
    ("+ docker login -u ci -p Hunter2xyz swr.cn-north-4.myhuaweicloud.com",
     "+ docker login -u ci -p **** swr.cn-north-4.myhuaweicloud.com"),
    ("sshpass -p 'x' ssh deploy@10.0.0.5", "sshpass -p '****' ssh deploy@10.0.0.5"),
    ("mysql -h db -u root -pDbPass99 shop < dump.sql",
     "mysql -h db -u root -p**** shop < dump.sql"),
    ("helm registry login swr.example.com -u admin -p Zx9!q",
     "helm registry login swr.example.com -u admin -p ****"),
    ("podman login --username ci --password Hunter2 quay.io",
     "podman login --username ci --password **** quay.io"),
    ("git-credential-helper --token s3cr3t-value --host github.com",
     "git-credential-helper --token **** --host github.com"),
    ("docker login --password=Hunter2 -u ci", "docker login --password=**** -u ci"),
    ("curl -fsS -u admin:S3cret https://nexus.example.com/repo",
     "curl -fsS -u admin:**** https://nexus.example.com/repo"),
    ('curl --user="deploy:two words" -T app.war https://x',
     'curl --user="deploy:****" -T app.war https://x'),
    ('const cfg = {password:"p w", user: "bob"}', 'const cfg = {password:"****", user: "bob"}'),
    # headers: the whole value
    ("> Authorization: Basic dXNlcjpwYXNz", "> Authorization: ****"),
    ("curl -v -H 'Authorization: Bearer abc.def' https://x.example.com",
     "curl -v -H 'Authorization: ****' https://x.example.com"),
    ("> Proxy-Authorization: Basic Zm9vOmJhcg==", "> Proxy-Authorization: ****"),
    ("> Cookie: session=abc; theme=dark", "> Cookie: ****"),
    ("< Set-Cookie: JSESSIONID=abc123; Path=/; HttpOnly", "< Set-Cookie: ****"),
    ('{"headers": {"Authorization": "SDK-HMAC-SHA256 Access=HPUAX"}, "n": 1}',
     '{"headers": {"Authorization": "****"}, "n": 1}'),
    # tokens by their shape
    ("POST https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXX",
     "POST https://hooks.slack.com/services/****"),
    ("notify: xoxb-1234-5678-abcdefgh failed", "notify: **** failed"),
    ("using xapp-1-A0123-4567-abcdef", "using ****"),
    ("echo ghp_0123456789abcdefghijABCDEFGHIJ | gh auth login --with-token",
     "echo **** | gh auth login --with-token"),
    ("pushing with github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
     "pushing with ****"),
    ("clone failed for glpat-AbCdEfGhIjKlMnOpQrSt", "clone failed for ****"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig-nature",
     "jwt ****"),
    ("Using Bearer eyJhbGciOi.x-y_z for the API", "Using Bearer **** for the API"),
    ("iam token MII" + "A" * 60, "iam token ****"),
    ("using AK HPUAEXAMPLEAK0123456 now", "using AK **** now"),
    ("OPENAI_KEY sk-proj-abcdefghijklmnopqrstuv1234 set", "OPENAI_KEY **** set"),
    ("secret key wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12 leaked", "secret key **** leaked"),
]

UNCHANGED = [
    "commit 0123456789abcdef0123456789abcdef01234567",
    "HEAD is now at 3f2a9c1 Merge pull request #42 from org/feature",
    "[INFO] Tests run: 128, Failures: 0, Errors: 0, Skipped: 2",
    "Tests passed: 12",
    "✓ 42 passing tests (3 s)",
    "[INFO] BUILD SUCCESS",
    "[INFO] Total time:  01:02 min",
    "[INFO] Finished at: 2026-12-07T04:21:23Z",
    "Build #20261207.15 finished",
    "tokenizer: bpe",
    "keyboard_layout=us",
    "monkey: patched",
    "Author: Jane Doe <jane@example.com>",
    "authentication succeeded",
    "keys: 3 loaded",
    "bypass_cache=true",
    "Incorrect password for user bob",
    "npm ERR! code E401 Incorrect or missing password.",
    "WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
    "echo $PW | docker login --password-stdin -u ci swr.example.com",
    "Login Succeeded",
    "docker run -p 8080:80 nginx:1.25.3",
    "ssh -p 2222 git@github.com",
    "docker run -u 1000:1000 -v /cache:/cache maven:3.9-eclipse-temurin-17 mvn -B verify",
    "curl -u admin https://nexus.example.com (password asked on the terminal)",
    "image: quay.io/keycloak/keycloak:21.0",
    "grep: /etc/passwd: Permission denied",
    "PWD=/home/build/workspace",
    "Step 5/9 : RUN npm ci --omit=dev",
    "npm notice New minor version of npm available! 10.2.4 -> 10.5.0",
    "added 1289 packages, and audited 1290 packages in 34s",
    "Downloaded from central: https://repo.maven.apache.org/maven2/org/x/x/1.0/x-1.0.jar",
    "From https://github.com/org/app",
    "git@github.com:org/app.git",
    "deployment.apps/backend configured",
    "secret/db-credentials created",
    "Release \"backend\" has been upgraded. Happy Helming!",
    "> GET /v1/items?page=2 HTTP/1.1",
    "< HTTP/1.1 200 OK",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "src/main/java/com/example/service/OrderService.java:[42,17] cannot find symbol",
    "Using Bearer token authentication",
    "task=compile_everything",
    "version: 1.4.2-SNAPSHOT",
    "Python 3.11.6",
]


def masked(line: str) -> str:
    return Masker().line(line)


@pytest.mark.parametrize("raw,expected", MASKED)
def test_a_secret_is_masked_whole_and_the_rest_of_the_line_kept(raw: str, expected: str) -> None:
    assert masked(raw) == expected


@pytest.mark.parametrize("line", UNCHANGED)
def test_ordinary_build_output_is_left_alone(line: str) -> None:
    assert masked(line) == line


def test_the_table_is_large_and_masking_twice_changes_nothing() -> None:
    assert len(MASKED) + len(UNCHANGED) >= 60
    for raw, expected in MASKED:
        assert mask_text(expected) == expected, raw


@pytest.mark.parametrize("name,secret", [
    ("DB_PASS", True), ("client_secret", True), ("x-api-key", True), ("AUTH_HEADER", True),
    ("passphrase", True), ("Cookie", True), ("githubToken", True), ("HUAWEI_SK", True),
    ("ak", True), ("credentialsId", True), ("passedToken", True),
    ("passed", False), ("tokenizer", False), ("keyboard", False), ("monkey", False),
    ("author", False), ("keys", False), ("PWD", False), ("task", False), ("codeBranch", False),
    ("target", False), ("bypass", False),
])
def test_what_counts_as_a_secret_name(name: str, secret: bool) -> None:
    assert secret_name(name) is secret


def test_known_values_are_masked_whatever_they_look_like() -> None:
    assert mask_text("sent abc-def-ghi to x", ["abc-def-ghi", "", "ab"]) == f"sent {MASK} to x"


# --- PEM blocks: every line, from BEGIN to END -----------------------------------------

KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
       "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n"
       "QyNTUxOQAAACDxEXAMPLEbodyline2\n"
       "-----END OPENSSH PRIVATE KEY-----")


def test_a_pem_block_is_masked_line_by_line_and_what_follows_is_not() -> None:
    text = f"writing key\n  {KEY.replace(chr(10), chr(10) + '  ')}\ndone: 3 files"
    assert mask_text(text) == f"writing key\n  {MASK}\n  {MASK}\n  {MASK}\n  {MASK}\ndone: 3 files"


def test_a_pem_block_on_one_line_is_masked_and_the_line_goes_on() -> None:
    assert (mask_text("cert=-----BEGIN CERTIFICATE-----MIIBdata-----END CERTIFICATE----- ok")
            == f"cert={MASK} ok")


def test_a_begin_without_end_stops_masking_after_its_limit() -> None:
    lines = ["-----BEGIN RSA PRIVATE KEY-----", *(["QUFBQUFB"] * (PEM_MAX_LINES + 5))]
    shown = mask_text("\n".join(lines)).split("\n")
    assert shown[:PEM_MAX_LINES] == [MASK] * PEM_MAX_LINES  # BEGIN and 199 lines
    assert shown[PEM_MAX_LINES:] == ["QUFBQUFB"] * 6


def test_the_log_tail_masks_a_pem_block_split_across_pages_and_pushed_out_lines() -> None:
    """The BEGIN line is pushed out of a short tail, and pages end mid-line: the body
    lines still shown are masked, the unfinished last line too."""
    body = [f"c2VjcmV0bGluZXt{i:02d}" for i in range(40)]
    log = "\n".join(["$ cat id_rsa", "-----BEGIN RSA PRIVATE KEY-----", *body])
    tail = TailBuffer(keep=5)
    for start in range(0, len(log), 7):  # pages of 7 characters
        tail.feed(log[start:start + 7])
    assert tail.lines() == [MASK] * 5  # the last of them unfinished, masked all the same
    tail.feed("\n-----END RSA PRIVATE KEY-----\n[ERROR] exit 1\n")
    assert tail.lines()[-2:] == [MASK, "[ERROR] exit 1"]
    assert not any("c2VjcmV0" in line for line in tail.lines())


def test_a_yaml_secret_block_is_masked_to_its_end() -> None:
    text = "db:\n  password: |\n    first line\n\n    second\n  user: bob\nstage: deploy"
    assert mask_text(text) == (f"db:\n  password: {MASK}\n    {MASK}\n\n    {MASK}\n"
                               "  user: bob\nstage: deploy")


def test_a_line_without_end_is_masked_before_its_head_is_dropped() -> None:
    tail = TailBuffer(keep=3)
    tail.feed("ok\npassword=" + "s3cr3t" * 6000)  # far longer than a line the tail keeps
    tail.feed("more-of-it")
    assert tail.lines() == ["ok", f"password={MASK}"]


def test_masking_reads_a_hostile_line_in_linear_time() -> None:
    """Long runs that could make a pattern backtrack (dashes, words, quotes, URLs)."""
    for unit in ("a-", "--A", "a=", '"a":', "https://a:", "eyJ-", "-p ", "a_--"):
        line = unit * (100_000 // len(unit))
        started = time.perf_counter()
        mask_text("docker login " + line)
        assert time.perf_counter() - started < 5.0, unit


# --- CodeArts' errors -------------------------------------------------------------------

def test_codearts_errors_are_masked_when_they_are_made() -> None:
    said = 'refused: {"password": "Hunter2xyz"} from https://ci:Hunter2xyz@git.example.com/x'
    api = ApiError(400, "DEVCB.00031001", said, "req-1")
    told = describe(api)
    for text in (str(api), api.error_msg, told.why, told.sentence, told.detail):
        assert "Hunter2xyz" not in text and MASK in text
    assert "req-1" in str(api) and "DEVCB.00031001" in told.why
    bad = BadResponseError(502, None, "<html>token=abc123def</html>")
    assert "abc123def" not in bad.snippet and "abc123def" not in describe(bad).detail
    lost = NotSentError("GET", "/v3/jobs", 2, "proxy said Authorization: Basic Zm9vOmJhcg==")
    assert "Zm9v" not in str(lost) and "Zm9v" not in lost.reason


# --- through the real path: nothing secret reaches Slack ---------------------------------

SECRETS_CONFIG = CONFIG + f"""
[jobs.release]
id = "{OTHER_ID}"
description = "Release"
users = ["*"]
channels = ["CBUILDS"]
allow_extra_params = true
"""

LOG = "\n".join([
    *(f"[INFO] step {i}" for i in range(20)),
    "+ git clone https://ci:Hunter2xyz@git.example.com/org/app.git",
    "+ docker login -u ci -p DockerPw77 swr.example.com",
    '{"client_secret":"abc$%^&*()def"}',
    "DB_PASS=Sp3c!al;chars",
    "-----BEGIN RSA PRIVATE KEY-----",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUKeyBody",
    "-----END RSA PRIVATE KEY-----",
    "> Cookie: session=CookieVal99",
    "POST https://hooks.slack.com/services/T0001/B0002/HookSecret123",
    "[ERROR] push refused: denied",
])
LEAKS = ["Hunter2xyz", "DockerPw77", "abc$%^", "Sp3c!al", "KeyBody", "CookieVal99",
         "HookSecret123", "RunPw-4711", "ErrPw-0815"]


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, config=SECRETS_CONFIG) as b:
        b.codearts.add_job(OTHER_ID, duration=3600)
        yield b


def everything_slack_got(bot: Bot) -> str:
    return "\n".join(json.dumps(call.params) for call in bot.slack.all_calls())


def shown(message: dict[str, Any]) -> str:
    parts = [message.get("text", "")]
    for block in message.get("blocks") or []:
        if block.get("type") == "section":
            parts.append(block["text"]["text"])
        elif block.get("type") == "context":
            parts += [e["text"] for e in block["elements"]]
    return "\n".join(parts)


def test_secrets_in_parameters_a_log_tail_and_an_error_never_reach_slack(bot: Bot) -> None:
    # a secret-named parameter: masked in the question and the channel message, sent as is
    rid, url = bot.confirmation("release DB_PASSWORD=RunPw-4711 version=1.4.2")
    question = shown(bot.slack.responses(url)[0])
    assert f"`DB_PASSWORD` = `{MASK}`" in question and "`version` = `1.4.2`" in question
    assert bot.click(msg.RUN, rid, response_url=url).status_code == 200
    bot.wait_idle()
    bot.slack.wait_for(lambda: (b := bot.store.get_build(rid)) is not None and b.message_ts)
    (run,) = bot.codearts.requests_to("/v3/jobs/build", "POST")
    assert {"name": "DB_PASSWORD", "value": "RunPw-4711"} in run.body["parameter"]
    (announced,) = [c for c in bot.slack.calls("chat.postMessage") if not c.get("thread_ts")]
    assert f"`DB_PASSWORD` = `{MASK}`" in shown(announced)

    # the build fails: its log tail comes in the thread, every secret masked
    bot.codearts.set_log(OTHER_ID, 1, LOG)
    bot.codearts.set_status(OTHER_ID, 1, "FAILED")
    bot.clock.advance(16)
    bot.runtime.watcher.run_once()
    (reply,) = [c for c in bot.slack.calls("chat.postMessage") if c.get("thread_ts")]
    tail = shown(reply)
    assert "[ERROR] push refused: denied" in tail
    assert "https://ci:****@git.example.com" in tail and "-p ****" in tail
    assert "DB_PASS=****" in tail and "Cookie: ****" in tail

    # CodeArts refuses the next run with a secret in its words
    bot.codearts.fail_next(400, {"error_code": "DEVCB.00031001", "error_msg":
                                 "bad parameter password=ErrPw-0815 in "
                                 "https://ci:ErrPw-0815@git.example.com"},
                           path_prefix="/v3/jobs/build")
    rid2, url2 = bot.confirmation("release version=1.4.3")
    assert bot.click(msg.RUN, rid2, response_url=url2).status_code == 200
    bot.wait_idle()
    refused = shown(bot.wait_response(url2, 2)[-1])
    assert "CodeArts refused" in refused and "password=****" in refused

    got = everything_slack_got(bot)
    for secret in LEAKS:
        assert secret not in got, secret


def test_step_names_and_echoed_commands_are_masked() -> None:
    step = step_from({"name": "deploy with token=s3cr3t-step", "status": "running"})
    assert step is not None and step.name == f"deploy with token={MASK}"
    for message in (msg.expired("release", "release DB_PASSWORD=RunPw-4711 v=1", minutes=5),
                    msg.queue_ended("release", "expired", command="release api_key='a b'",
                                    minutes=3)):
        text = json.dumps(message)
        assert "RunPw-4711" not in text and "a b" not in text and MASK in text
