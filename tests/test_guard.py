"""The guard rails' pure decisions: who may approve, how many approvals are left, when a
user's next build is allowed, and how the jobs file's rules become an ApprovalRule."""

from __future__ import annotations

import pytest

from bot.config import parse_config, parse_duration
from bot.lifecycle import (
    ApprovalRule,
    RequestState,
    approval_refusal,
    approvals_left,
    next_allowed,
)
from bot.policy import approval_rule, over_limit_problem, per_user_limit

JOB_ID = "f9d6c8466d614a9788e9a0acf6c15f46"
RULE = ApprovalRule(approvers=("UCAROL", "UALICE"), groups=("SLEADS", "SOPS"), needed=1,
                    channel=None, ttl=3600.0)


def groups(known: dict[str, frozenset[str] | None]):  # type: ignore[no-untyped-def]
    return lambda group: known.get(group, frozenset())


@pytest.mark.parametrize(("user", "known", "reason"), [
    ("UCAROL", {}, None),  # listed
    ("UALICE", {}, "self"),  # listed, but the requester
    ("UGRACE", {"SOPS": frozenset({"UGRACE"})}, None),  # a member of a listed group
    ("UALICE", {"SLEADS": frozenset({"UALICE"})}, "self"),
    ("UMALLORY", {}, "not_approver"),
    ("UMALLORY", {"SLEADS": None}, "unchecked"),  # one group could not be asked
    ("UGRACE", {"SLEADS": None, "SOPS": frozenset({"UGRACE"})}, None),  # another says yes
])
def test_who_may_approve(user: str, known: dict[str, frozenset[str] | None],
                         reason: str | None) -> None:
    assert approval_refusal(RULE, requester="UALICE", user=user,
                            members=groups(known)) == reason


def test_groups_are_not_asked_about_a_listed_approver() -> None:
    def never(group: str) -> frozenset[str] | None:
        raise AssertionError("asked")

    assert approval_refusal(RULE, requester="UALICE", user="UCAROL", members=never) is None


@pytest.mark.parametrize(("needed", "by", "left"), [
    (1, (), 1), (None, (), 1), (2, ("U1",), 1), (2, ("U1", "U2"), 0), (2, ("U1", "U1"), 1),
    (1, ("U1", "U2"), 0),
])
def test_approvals_left(needed: int | None, by: tuple[str, ...], left: int) -> None:
    assert approvals_left(needed, by) == left


@pytest.mark.parametrize(("starts", "limit", "expected"), [
    ([], 1, None),
    ([1000.0], None, None),
    ([1000.0], 2, None),
    ([1000.0, 2000.0], 2, 1000.0 + 3600),
    ([2000.0, 1000.0, 3000.0], 2, 2000.0 + 3600),  # the older of the last two
    ([-5000.0, 2000.0], 2, None),  # an hour ago no longer counts
    ([3500.0], 1, 3500.0 + 3600),
])
def test_next_allowed(starts: list[float], limit: int | None, expected: float | None) -> None:
    assert next_allowed(starts, limit=limit, now=3500.0) == expected


@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800.0), ("1h", 3600.0), ("2h30m", 9000.0), ("90s", 90.0), ("1h0m5s", 3605.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1d", "30", "m30", "1.5h", "-1h", "1h 30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="30m, 1h or 2h30m"):
        parse_duration(text)


CONFIG = parse_config(f"""
admins = ["UADMIN"]
max_per_user_per_hour = 5
[jobs.deploy]
id = "{JOB_ID}"
users = ["*"]
approvers = ["UCAROL"]
approvals = 1
approval_ttl = "10m"
max_per_user_per_hour = 2
[jobs.docs]
id = "0123456789abcdef0123456789abcdef"
users = ["*"]
""", source="x")


def test_a_job_with_approvers_gives_its_rule_and_its_raw_id_the_same() -> None:
    rule = approval_rule(CONFIG, "deploy")
    assert rule == ApprovalRule(("UCAROL",), (), 1, None, 600.0)
    assert approval_rule(CONFIG, JOB_ID.upper()) == rule
    assert approval_rule(CONFIG, "docs") is None
    assert approval_rule(CONFIG, "0123456789abcdef0123456789abcdef") is None
    assert approval_rule(CONFIG, "nosuchjob") is None


def test_the_limit_is_the_jobs_else_the_files_and_admins_have_none() -> None:
    assert per_user_limit(CONFIG, "deploy", "UBOB") == 2
    assert per_user_limit(CONFIG, "docs", "UBOB") == 5
    assert per_user_limit(CONFIG, "deploy", "UADMIN") is None
    assert per_user_limit(CONFIG, JOB_ID, "UBOB") is None  # raw IDs: admins only


def test_the_refusal_says_when_the_next_build_is_allowed() -> None:
    text = over_limit_problem("deploy", 2, next_at=1_800_000_000.0, now=1_800_000_000.0 - 601)
    assert text == ("You may start 2 builds of `deploy` per hour and have reached that: the "
                    "next one is allowed in 11 min (at 08:00 UTC).")
    assert "1 build of" in over_limit_problem("deploy", 1, next_at=10.0, now=0.0)


def test_two_run_clicks_at_once_on_two_replicas_stay_within_the_hourly_limit(
        pg_url: str) -> None:
    """Two questions of one user, Run clicked on both at the same instant through two
    stores (two replicas): with one build an hour allowed, at most one is claimed. The
    claims of a limited job take the job's lock first, so the second one counts the
    first."""
    import threading

    from bot.store import Store

    one, two = Store.from_url(pg_url), Store.from_url(pg_url)
    try:
        for round_no in range(12):
            ids = [f"r{round_no}a", f"r{round_no}b"]
            user = f"U{round_no}"
            for rid in ids:
                one.add_request(id=rid, state=RequestState.PENDING, now=1000.0, ttl=600,
                                user_id=user, team_id="T1", channel_id="C1", job_name="job",
                                job_id="a" * 32, command="job", body={}, response_url=None)
            gate = threading.Barrier(2)
            claims: list[bool] = []

            def click(store: Store, rid: str, user: str = user,
                      gate: threading.Barrier = gate, claims: list[bool] = claims) -> None:
                gate.wait()
                claims.append(store.claim_request(id=rid, user_id=user, now=1001.0,
                                                  limit=("job", 1)).ok)

            threads = [threading.Thread(target=click, args=(s, rid))
                       for s, rid in zip((one, two), ids, strict=True)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert sorted(claims) == [False, True], f"round {round_no}: {claims}"
    finally:
        one.close()
        two.close()
