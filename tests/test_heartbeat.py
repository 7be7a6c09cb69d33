"""Who is alive: intents name the process that holds them, and a process that stopped
beating has them settled at once, while a live one's wait out the grace. On every
available database."""

from __future__ import annotations

from pathlib import Path

from bot.heartbeat import Heartbeat
from bot.store import DEAD_AFTER, Store
from tests.test_store import add

GRACE = 120.0


def claimed(store: Store, owner: str, *, now: float = 1001.0) -> str:
    """A request moved to sending (its run call under way) by ``owner``."""
    store.owner = owner
    rid = add(store, now=now - 1)
    assert store.claim_request(id=rid, user_id="U1", now=now).ok
    return rid


def started(store: Store, owner: str, *, now: float = 1001.0) -> str:
    """A build recorded by ``owner``, whose channel post is under way (posting)."""
    rid = claimed(store, owner, now=now)
    request = store.get_request(rid)
    assert request is not None
    store.record_build(request=request, build_no="7", daily_build_number="20261207.1",
                       now=now, first_check_at=now + 15)
    return rid


def test_a_run_intent_of_a_live_owner_waits_for_the_grace(store: Store) -> None:
    store.beat(id="A", now=1000.0, host="h", pid=1)
    rid = claimed(store, "A")
    store.beat(id="A", now=1010.0, host="h", pid=1)
    assert store.stale_sending(older_than=1010.0 - GRACE, now=1010.0) == []
    stale = store.stale_sending(older_than=1001.0 + 1, now=1010.0)  # past the grace
    assert [r.id for r in stale] == [rid]


def test_a_run_intent_of_a_dead_owner_is_settled_at_once(store: Store) -> None:
    store.beat(id="A", now=1000.0, host="h", pid=1)
    rid = claimed(store, "A")
    now = 1000.0 + DEAD_AFTER + 1  # A's last beat is older than DEAD_AFTER
    assert [r.id for r in store.stale_sending(older_than=now - GRACE, now=now)] == [rid]


def test_an_owner_that_stopped_cleanly_is_dead_at_once(store: Store) -> None:
    store.beat(id="A", now=1000.0, host="h", pid=1)
    rid = claimed(store, "A")
    store.end_process("A")
    assert [r.id for r in store.stale_sending(older_than=1002.0 - GRACE, now=1002.0)] == [rid]
    assert store.processes_alive(now=1002.0) == []


def test_an_owner_never_seen_is_not_taken_for_dead(store: Store) -> None:
    """A row written by an older version (or a store without a heartbeat) keeps the
    grace rules: nobody can tell whether its owner lives."""
    claimed(store, "ghost")
    assert store.stale_sending(older_than=1005.0 - GRACE, now=1005.0 + DEAD_AFTER) == []


def test_an_announcement_of_a_dead_owner_is_claimed_once_by_another(store: Store) -> None:
    store.beat(id="A", now=1000.0, host="h", pid=1)
    rid = started(store, "A")
    store.owner = "B"
    store.beat(id="B", now=1020.0, host="h", pid=2)
    assert store.claim_unannounced(now=1005.0, stale_after=GRACE) == []  # A still alive
    (build,) = store.claim_unannounced(now=1000.0 + DEAD_AFTER + 1, stale_after=GRACE)
    assert build.id == rid
    # B now owns it and is alive: nobody else takes it before the grace
    assert store.claim_unannounced(now=1020.0, stale_after=GRACE) == []


def test_a_post_that_ended_unconfirmed_is_handed_over_after_the_retry_delay(
        store: Store) -> None:
    store.beat(id="A", now=1000.0, host="h", pid=1)
    rid = started(store, "A")
    store.beat(id="A", now=1003.0, host="h", pid=1)
    assert store.announce_failed(id=rid, now=1003.0, retry_in=5.0, stale_after=GRACE)
    assert store.claim_unannounced(now=1007.0, stale_after=GRACE) == []
    assert [b.id for b in store.claim_unannounced(now=1008.5, stale_after=GRACE)] == [rid]


def test_a_dead_owners_lease_is_taken_over_before_it_runs_out(store: Store) -> None:
    store.beat(id="A", now=1000.0, host="h", pid=1)
    rid = started(store, "A")
    (leased,) = store.lease_due(owner="A", now=1016.0, lease_seconds=60, limit=10)
    assert leased.id == rid
    store.beat(id="A", now=1016.0, host="h", pid=1)
    assert store.lease_due(owner="B", now=1020.0, lease_seconds=60, limit=10) == []
    (taken,) = store.lease_due(owner="B", now=1016.0 + DEAD_AFTER + 1, lease_seconds=60,
                               limit=10)
    assert taken.id == rid and taken.lease_token == leased.lease_token + 1  # fenced


class SteppingClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_process_that_missed_its_beats_is_not_fresh(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'hb.db'}")
    mono = SteppingClock()
    heartbeat = Heartbeat(store, clock=lambda: 1000.0, monotonic=mono)
    try:
        assert not heartbeat.fresh()  # never beat yet
        assert heartbeat.beat()
        assert heartbeat.fresh()
        mono.now += DEAD_AFTER / 2 + 0.1  # no beat since: others may soon take it for dead
        assert not heartbeat.fresh()
        assert heartbeat.beat() and heartbeat.fresh()
        assert store.processes_alive(now=1000.0) == [heartbeat.id]
        heartbeat.stop(clean=True)
        assert store.processes_alive(now=1000.0) == []
    finally:
        store.close()
