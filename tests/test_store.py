"""The store's exactly-once steps, on every available database."""

from __future__ import annotations

import threading
import uuid

from bot.lifecycle import ClaimReason, RequestState
from bot.store import Store

JOB_ID = "f9d6c8466d614a9788e9a0acf6c15f46"


def add(store: Store, *, user: str = "U1", now: float = 1000.0, ttl: float = 600.0) -> str:
    rid = uuid.uuid4().hex
    store.add_request(id=rid, state="pending", now=now, ttl=ttl, user_id=user, team_id="T1",
                      channel_id="C1", job_name="backend", job_id=JOB_ID,
                      command="backend codeBranch=master", body={"job_id": JOB_ID},
                      response_url="http://127.0.0.1/r")
    return rid


def test_only_one_of_many_concurrent_claims_wins(store: Store) -> None:
    rid = add(store)
    results = []
    barrier = threading.Barrier(8)

    def click() -> None:
        barrier.wait()
        results.append(store.claim_request(id=rid, user_id="U1", now=1001.0))

    threads = [threading.Thread(target=click) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.ok for r in results].count(True) == 1
    assert {r.reason for r in results if not r.ok} == {"running"}


def test_claim_by_someone_else_is_refused_and_leaves_it_pending(store: Store) -> None:
    rid = add(store)
    claim = store.claim_request(id=rid, user_id="U2", now=1001.0)
    assert (claim.ok, claim.reason) == (False, "not_yours")
    assert claim.reason is ClaimReason.NOT_YOURS
    assert store.get_request(rid).state == "pending"


def test_claim_after_expiry_marks_it_expired(store: Store) -> None:
    rid = add(store, now=1000.0, ttl=600.0)
    claim = store.claim_request(id=rid, user_id="U1", now=1600.0)
    assert (claim.ok, claim.reason) == (False, "expires_now")
    assert claim.reason is ClaimReason.EXPIRES_NOW
    assert store.get_request(rid).state == "expired"


def test_cancelled_request_cannot_be_claimed(store: Store) -> None:
    rid = add(store)
    assert store.move_request(id=rid, old=RequestState.PENDING, new=RequestState.CANCELLED,
                              now=1001.0)
    claim = store.claim_request(id=rid, user_id="U1", now=1002.0)
    assert (claim.ok, claim.reason) == (False, "cancelled")
    assert claim.reason is RequestState.CANCELLED


def test_missing_request(store: Store) -> None:
    assert store.claim_request(id="0" * 32, user_id="U1", now=1.0).reason is ClaimReason.MISSING


def start_build(store: Store, *, now: float = 1000.0) -> str:
    rid = add(store, now=now)
    claim = store.claim_request(id=rid, user_id="U1", now=now)
    assert claim.request is not None
    store.record_build(request=claim.request, build_no="20", daily_build_number="20261123.20",
                       now=now, first_check_at=now)
    return rid


def test_a_due_watch_is_leased_to_one_owner_at_a_time(store: Store) -> None:
    bid = start_build(store)
    first = store.lease_due(owner="a", now=1000.0, lease_seconds=60, limit=10)
    second = store.lease_due(owner="b", now=1001.0, lease_seconds=60, limit=10)
    assert [r.id for r in first] == [bid]
    assert second == []


def test_an_expired_lease_is_taken_over(store: Store) -> None:
    bid = start_build(store)
    store.lease_due(owner="a", now=1000.0, lease_seconds=60, limit=10)
    taken = store.lease_due(owner="b", now=1061.0, lease_seconds=60, limit=10)
    assert [r.id for r in taken] == [bid]
    # the old owner can no longer reschedule or report it
    assert not store.reschedule(id=bid, owner="a", next_check_at=2000.0, failures=0)
    assert not store.begin_report(id=bid, owner="a", result="success", duration_ms=1, now=1062.0)


def test_a_rescheduled_watch_is_not_due_until_its_time(store: Store) -> None:
    bid = start_build(store)
    store.lease_due(owner="a", now=1000.0, lease_seconds=60, limit=10)
    assert store.reschedule(id=bid, owner="a", next_check_at=1015.0, failures=0)
    assert store.lease_due(owner="a", now=1010.0, lease_seconds=60, limit=10) == []
    assert len(store.lease_due(owner="a", now=1015.0, lease_seconds=60, limit=10)) == 1


def test_result_is_reported_once(store: Store) -> None:
    bid = start_build(store)
    store.lease_due(owner="a", now=1000.0, lease_seconds=60, limit=10)
    assert store.begin_report(id=bid, owner="a", result="success", duration_ms=5, now=1001.0)
    assert not store.begin_report(id=bid, owner="a", result="success", duration_ms=5, now=1001.0)
    store.finish_report(id=bid)
    assert store.lease_due(owner="a", now=9999.0, lease_seconds=60, limit=10) == []
    assert store.watching_count() == 0


def test_many_owners_split_many_watches_without_overlap(store: Store) -> None:
    ids = {start_build(store) for _ in range(30)}
    got: dict[str, list[str]] = {}
    barrier = threading.Barrier(3)

    def lease(owner: str) -> None:
        barrier.wait()
        got[owner] = [r.id for r in store.lease_due(owner=owner, now=1000.0,
                                                        lease_seconds=60, limit=12)]

    threads = [threading.Thread(target=lease, args=(o,)) for o in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leased = [i for v in got.values() for i in v]
    assert len(leased) == len(set(leased))
    assert set(leased) <= ids
    assert len(leased) == 30


def test_audit_rows_keep_what_happened(store: Store) -> None:
    store.audit(decision="denied", now=1.0, user_id="U1", channel_id="C1", job="backend",
                parameters=[{"name": "a", "value": "b"}], detail="not allowed")
    (row,) = store.audit_rows()
    assert (row["decision"], row["user_id"], row["job"]) == ("denied", "U1", "backend")
    assert '"value": "b"' in row["parameters"]


def test_an_announcement_whose_poster_died_is_reclaimed_once(store: Store) -> None:
    bid = start_build(store, now=1000.0)
    assert store.claim_unannounced(now=1100.0, stale_after=300) == []  # its poster may be alive
    first = store.claim_unannounced(now=1301.0, stale_after=300)
    second = store.claim_unannounced(now=1301.0, stale_after=300)
    assert [r.id for r in first] == [bid] and second == []
    store.set_announced(id=bid, channel="C1", ts="1.2")
    assert store.claim_unannounced(now=9999.0, stale_after=300) == []


def test_starting_a_build_writes_its_audit_row_in_the_same_step(store: Store) -> None:
    bid = start_build(store)
    (row,) = store.audit_rows(request_id=bid)
    assert (row["decision"], row["build_no"], row["daily_build_number"]) == \
        ("started", "20", "20261123.20")


def test_prune_forgets_finished_work_but_keeps_the_audit_log(store: Store) -> None:
    old = start_build(store, now=1000.0)
    store.lease_due(owner="a", now=1000.0, lease_seconds=60, limit=10)
    store.begin_report(id=old, owner="a", result="success", duration_ms=1, now=1001.0)
    store.finish_report(id=old)
    cancelled = add(store, now=1000.0)
    store.move_request(id=cancelled, old=RequestState.PENDING, new=RequestState.CANCELLED,
                       now=1000.0)
    running = start_build(store, now=1000.0)  # still watched: kept
    pending = add(store, now=1000.0)  # still answerable in principle: kept
    assert store.prune(before=5000.0) == 3
    assert store.get_build(old) is None and store.get_request(old) is None
    assert store.get_request(cancelled) is None
    assert store.get_build(running) is not None and store.get_request(pending) is not None
    assert store.audit_rows(request_id=old)  # the audit log stays


def test_an_oversized_audit_detail_is_capped_and_says_so(store: Store) -> None:
    store.audit(decision="invalid", now=1.0, user_id="U1", channel_id="C1", job="x" * 5000,
                detail="y" * 850_000, parameters=[{"name": "a", "value": "z" * 100_000}])
    (row,) = store.audit_rows()
    assert len(row["detail"]) <= 4096 and row["detail"].endswith("characters cut]")
    assert len(row["parameters"]) <= 4096 and len(row["job"]) <= 200


def test_old_audit_rows_are_pruned_in_batches(store: Store) -> None:
    for at in range(1, 8):
        store.audit(decision="denied", now=float(at))
    assert store.prune_audit(before=5.0, batch=3) == 3
    assert store.prune_audit(before=5.0, batch=3) == 1
    assert store.prune_audit(before=5.0, batch=3) == 0
    assert [r["at"] for r in store.audit_rows()] == [5.0, 6.0, 7.0]
