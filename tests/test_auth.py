"""Token, IAM password and AK/SK auth against the fake; secrets never leak."""

from __future__ import annotations

import calendar
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from bot.codearts.auth import (
    AkSkAuth,
    IamPasswordAuth,
    TokenAuth,
    canonical_query,
    canonical_uri,
    signature,
)
from bot.codearts.client import CodeArtsClient
from bot.codearts.errors import (
    ApiError,
    AuthError,
    CodeArtsError,
    NotSentError,
    OutcomeUnknownError,
)
from tests.fakes.codearts import IAM_PATH, FakeCodeArts

JOB = "f9d6c8466d614a9788e9a0acf6c15f46"
RUN = "/v3/jobs/build"
FAST = httpx.Timeout(2.0, connect=0.5)

# The test vectors published with the official Huawei Cloud SDK's request signer.
VECTOR_HOST = "service.endpoint.myhuaweicloud.com"
VECTOR_DATE = "20200608T023900Z"
VECTOR_GET = "cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842"
VECTOR_POST = "436b1ac0a1ae03705934bb70ef2f2e09f7bfed2117d731a38235053199323a1f"
VECTOR_BODY = b'{"name":"test","id":1}'


@pytest.fixture
def fake() -> Iterator[FakeCodeArts]:
    with FakeCodeArts() as f:
        f.add_job(JOB)
        yield f


def iam(fake: FakeCodeArts, **kwargs) -> IamPasswordAuth:
    kwargs.setdefault("password", fake.password)
    return IamPasswordAuth(kwargs.pop("endpoint", fake.url), user=fake.user, domain=fake.domain,
                           project=fake.project_name, timeout=FAST, **kwargs)


def client_with(fake: FakeCodeArts, auth: httpx.Auth) -> CodeArtsClient:
    return CodeArtsClient(fake.url, auth=auth, timeout=FAST, backoff=0.01)


def run(client: CodeArtsClient) -> str:
    return client.run_build({"job_id": JOB}).actual_build_number


# --------------------------------------------------------------------------- AK/SK


@pytest.mark.parametrize(("method", "body", "expected"), [
    ("GET", b"", VECTOR_GET), ("POST", VECTOR_BODY, VECTOR_POST),
])
def test_signature_matches_the_sdk_vectors(method, body, expected):
    headers = {"Host": VECTOR_HOST, "X-Sdk-Date": VECTOR_DATE}
    sig, names = signature(method, "/resources", [("size", "1")], headers, body, "SecretKey")
    assert (sig, names) == (expected, ["host", "x-sdk-date"])


@pytest.mark.parametrize(("method", "body", "expected"), [
    ("GET", None, VECTOR_GET), ("POST", VECTOR_BODY, VECTOR_POST),
])
def test_aksk_auth_writes_the_sdk_authorization_header(method, body, expected):
    at = calendar.timegm(time.strptime(VECTOR_DATE, "%Y%m%dT%H%M%SZ"))
    auth = AkSkAuth("AccessKey", "SecretKey", None, clock=lambda: at)
    request = httpx.Request(method, f"https://{VECTOR_HOST}/resources?size=1", content=body)
    signed = next(auth.sync_auth_flow(request))
    assert signed.headers["X-Sdk-Date"] == VECTOR_DATE
    assert signed.headers["Authorization"] == (
        f"SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-sdk-date, Signature={expected}")


def test_headers_with_underscores_are_not_signed():
    headers = {"Host": VECTOR_HOST, "X-Sdk-Date": VECTOR_DATE, "TEST_UNDERSCORE": "v"}
    sig, names = signature("GET", "/resources", [("size", "1")], headers, b"", "SecretKey")
    assert (sig, names) == (VECTOR_GET, ["host", "x-sdk-date"])


def test_canonical_uri_and_query_encoding():
    assert canonical_uri("/v3/jobs/a b") == "/v3/jobs/a%20b/"
    assert canonical_uri("/") == "/"
    assert canonical_query([("b", "2"), ("a", "x y"), ("a", "1")]) == "a=1&a=x%20y&b=2"
    assert canonical_query([("k", "a+b&c=d/e?~*!'()"), ("e", ""), ("u", "中 é")]) == (
        "e=&k=a%2Bb%26c%3Dd%2Fe%3F~%2A%21%27%28%29&u=%E4%B8%AD%20%C3%A9")


QUERIES = [
    {"q": "a b"},
    {"q": "中文 é", "name": "ünïcode"},
    {"r": "a+b&c=d/e?#~*!'()[]", "s": "100%"},
    {"empty": "", "x": "1"},
    [("k", "2"), ("k", "1"), ("k", "a b"), ("a", "z")],
]


@pytest.mark.parametrize("params", QUERIES)
def test_the_query_sent_is_the_query_signed(params):
    """httpx writes a space as '+'; the signer signs '%20': what is sent must be what is signed."""
    at = calendar.timegm(time.strptime(VECTOR_DATE, "%Y%m%dT%H%M%SZ"))
    auth = AkSkAuth("AccessKey", "SecretKey", None, clock=lambda: at)
    request = httpx.Request("GET", f"https://{VECTOR_HOST}/resources", params=params)
    signed = next(auth.sync_auth_flow(request))
    items = params.items() if isinstance(params, dict) else params
    assert signed.url.query.decode() == canonical_query(items)
    assert "+" not in signed.url.query.decode()


@pytest.mark.parametrize("params", QUERIES)
def test_signed_queries_are_accepted_by_the_fake(fake, params):
    with client_with(fake, AkSkAuth(fake.ak, fake.sk, fake.project_id)) as c:
        run(c)
    with httpx.Client(auth=AkSkAuth(fake.ak, fake.sk, fake.project_id), timeout=FAST) as http:
        answer = http.get(f"{fake.url}/v4/jobs/{JOB}/1/record-info", params=params)
    assert answer.status_code == 200, answer.text


def test_signed_requests_are_accepted_by_the_fake(fake):
    with client_with(fake, AkSkAuth(fake.ak, fake.sk, fake.project_id)) as c:
        assert run(c) == "1"
        assert c.build_state(JOB, 1).status == "RUNNING"
    sent = fake.requests_to(RUN)[0].headers
    assert sent["x-project-id"] == fake.project_id
    assert "SignedHeaders=content-type;host;x-project-id;x-sdk-date" in sent["authorization"]


def test_wrong_secret_key_is_rejected_as_401(fake):
    with (
        client_with(fake, AkSkAuth(fake.ak, "wrong-sk", fake.project_id)) as c,
        pytest.raises(ApiError) as info,
    ):
        run(c)
    assert info.value.status == 401 and info.value.error_code == "APIGW.0301"
    assert "credentials" in info.value.hint and fake.builds(JOB) == []


# --------------------------------------------------------------------------- token


def test_token_is_sent_as_x_auth_token(fake):
    with client_with(fake, TokenAuth(fake.token)) as c:
        run(c)
    assert fake.requests[0].headers["x-auth-token"] == fake.token


def test_missing_or_wrong_token_is_the_gateway_401(fake):
    with client_with(fake, TokenAuth("not-a-token")) as c, pytest.raises(ApiError) as info:
        run(c)
    assert info.value.status == 401 and "APIGW.0301" in str(info.value)
    assert len(fake.requests_to(RUN)) == 1  # a fixed token is not retried


# --------------------------------------------------------------------------- IAM


def test_iam_login_sends_the_documented_body_and_caches_the_token(fake):
    auth = iam(fake)
    with client_with(fake, auth) as c:
        run(c)
        run(c)
        c.build_state(JOB, 1)
    logins = fake.requests_to(IAM_PATH)
    assert len(logins) == 1 and fake.logins == 1
    assert logins[0].body == {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": fake.user, "password": fake.password, "domain": {"name": fake.domain}}}},
        "scope": {"project": {"name": fake.project_name}}}}
    tokens = {r.headers["x-auth-token"] for r in fake.requests if r.path != IAM_PATH}
    assert len(tokens) == 1 and tokens.pop().startswith("MIIfake")


def test_token_is_renewed_shortly_before_it_expires(fake):
    now = [time.time()]
    auth = iam(fake, clock=lambda: now[0])
    with client_with(fake, auth) as c:
        run(c)
        now[0] += 86400 - 700  # still more than 10 minutes left: reuse
        run(c)
        assert fake.logins == 1
        now[0] += 200  # within 10 minutes of expires_at: log in again before it runs out
        run(c)
        assert fake.logins == 2


def test_short_lived_tokens_are_renewed_at_half_life():
    with FakeCodeArts(token_lifetime=60) as fake:
        fake.add_job(JOB)
        now = [time.time()]
        auth = iam(fake, clock=lambda: now[0])
        with client_with(fake, auth) as c:
            run(c)
            now[0] += 20
            run(c)
            now[0] += 15
            run(c)
        assert fake.logins == 2


def test_one_login_for_ten_threads(fake):
    fake.hang(0.2, path_prefix=IAM_PATH)  # a slow IAM widens the race
    auth = iam(fake)
    barrier = threading.Barrier(10)
    errors: list[BaseException] = []

    def work(c: CodeArtsClient) -> None:
        barrier.wait()
        try:
            run(c)
        except Exception as exc:
            errors.append(exc)

    with client_with(fake, auth) as c:
        threads = [threading.Thread(target=work, args=(c,)) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == [] and fake.logins == 1 and len(fake.builds(JOB)) == 10


def test_a_401_triggers_one_fresh_login_and_one_retry(fake):
    auth = iam(fake)
    with client_with(fake, auth) as c:
        run(c)
        fake.unauthorized_once(path_prefix=RUN)
        assert run(c) == "2"
    assert fake.logins == 2 and len(fake.requests_to(RUN)) == 3
    assert len(fake.builds(JOB)) == 2  # the refused request created nothing


def test_expired_token_is_replaced_after_the_gateway_refuses_it(fake):
    auth = iam(fake)
    with client_with(fake, auth) as c:
        run(c)
        fake.revoke_tokens()
        assert run(c) == "2"
    assert fake.logins == 2


def test_a_second_401_after_relogin_is_an_api_error_not_a_loop(fake):
    auth = iam(fake)
    with client_with(fake, auth) as c:
        fake.fail_next(401, count=5, path_prefix=RUN)
        with pytest.raises(ApiError) as info:
            run(c)
    assert info.value.status == 401
    assert fake.logins == 2 and len(fake.requests_to(RUN)) == 2


def test_many_threads_hitting_401_share_one_relogin(fake):
    auth = iam(fake)
    with client_with(fake, auth) as c:
        run(c)
        fake.revoke_tokens()
        threads = [threading.Thread(target=run, args=(c,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(fake.builds(JOB)) == 9 and fake.logins <= 3


def test_wrong_password_is_an_auth_error_without_the_password(fake):
    secret = "Wr0ng-Pa55word!"
    with client_with(fake, iam(fake, password=secret)) as c, pytest.raises(AuthError) as info:
        run(c)
    err = info.value
    assert err.status == 401 and err.error_code == "401"
    assert "password is wrong" in err.error_msg and "operator" in err.hint
    assert secret not in str(err) and secret not in repr(err)
    assert fake.requests_to(RUN) == []  # nothing reached CodeArts


def test_iam_password_echoed_in_an_error_is_scrubbed():
    secret = "s3cret-pw"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"code": 400, "message": f"bad {secret}"}})

    auth = IamPasswordAuth("https://iam.test", user="u", password=secret, domain="d",
                           project="p", http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(AuthError) as info:
        next(auth.sync_auth_flow(httpx.Request("GET", "https://codearts.test/")))
    assert secret not in str(info.value)


def test_iam_down_is_an_auth_error(fake):
    fake.iam_down()
    with client_with(fake, iam(fake)) as c, pytest.raises(AuthError) as info:
        run(c)
    assert info.value.status == 503 and "try again later" in str(info.value)
    assert fake.requests_to(RUN) == []


def test_iam_unreachable_is_an_auth_error_with_no_status(fake):
    with (
        socket_closed_url() as url,
        client_with(fake, iam(fake, endpoint=url)) as c,
        pytest.raises(AuthError) as info,
    ):
        run(c)
    assert info.value.status is None and "ConnectError" in info.value.error_msg
    assert fake.requests_to(RUN) == []


def test_iam_answer_without_subject_token_is_an_auth_error(fake):
    fake.fail_next(201, {"token": {"expires_at": "2099-01-01T00:00:00.000000Z"}},
                   path_prefix=IAM_PATH)
    with client_with(fake, iam(fake)) as c, pytest.raises(AuthError) as info:
        run(c)
    assert "X-Subject-Token" in str(info.value)


def test_auth_error_is_a_codearts_error():
    assert issubclass(AuthError, CodeArtsError)


class socket_closed_url:
    """A loopback URL where nothing listens."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"http://127.0.0.1:{s.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        pass


# --------------------------------------------------------------------------- secrets


def test_secrets_never_reach_logs_reprs_or_errors(fake, caplog):
    caplog.set_level(logging.DEBUG)  # root: includes httpx's and httpcore's own loggers
    for name in ("httpx", "httpcore", "bot"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    iam_auth = iam(fake)
    token_auth = TokenAuth(fake.token)
    aksk_auth = AkSkAuth(fake.ak, fake.sk, fake.project_id)
    errors: list[CodeArtsError] = []
    objects: list[object] = [iam_auth, token_auth, aksk_auth]
    for auth in (iam_auth, token_auth, aksk_auth):
        with client_with(fake, auth) as c:
            objects.append(c)
            run(c)
            fake.unauthorized_once(path_prefix=RUN)
            errors += _collect(lambda: run(c))  # IAM: re-login; others: ApiError
            fake.fail_next(500, path_prefix=RUN)
            errors += _collect(lambda: run(c))
            fake.html_next(200, path_prefix=RUN)
            errors += _collect(lambda: run(c))
            fake.drop_next(path_prefix=RUN)
            errors += _collect(lambda: run(c))
    with client_with(fake, iam(fake, password="another-secret-pw")) as c:
        errors += _collect(lambda: run(c))
    issued = {r.headers["x-auth-token"] for r in fake.requests if "x-auth-token" in r.headers}
    signatures = {r.headers["authorization"] for r in fake.requests if "authorization" in r.headers}
    secrets = ({fake.password, "another-secret-pw", fake.token, fake.sk, fake.ak}
               | issued | signatures)
    assert len(issued) >= 3 and any(isinstance(e, OutcomeUnknownError) for e in errors)
    texts = [caplog.text] + [repr(o) for o in objects] + [str(e) for e in errors] + \
        [repr(e) for e in errors] + [repr(vars(e)) for e in errors]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    logging.getLogger("httpcore").setLevel(logging.NOTSET)
    logging.getLogger("bot").setLevel(logging.NOTSET)


def _collect(call) -> list[CodeArtsError]:
    try:
        call()
    except CodeArtsError as exc:
        return [exc]
    return []


def test_not_sent_error_says_nothing_started():
    err = NotSentError("POST", RUN, 4, "ConnectError")
    assert "nothing was started" in str(err) and err.attempts == 4
