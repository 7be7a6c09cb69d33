"""The replay guard remembers each signature until its own timestamp leaves the window
Bolt accepts, whenever it was first seen, and never grows without bound."""

from __future__ import annotations

import pytest
from slack_sdk.signature import SignatureVerifier

from bot.replay import MARGIN, WINDOW, ReplayGuard


class Now:
    """A seam clock: epoch seconds that only move when told."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def now(self) -> float:  # slack_sdk's Clock interface
        return self.t


def test_a_signature_passes_once_while_its_timestamp_is_accepted() -> None:
    now = Now()
    guard = ReplayGuard(clock=now)
    ts = int(now.t)
    assert guard.admit("v0=a", str(ts)) == "new"
    assert guard.admit("v0=a", str(ts)) == "replay"
    assert guard.admit("v0=b", str(ts)) == "new"
    now.t = ts + WINDOW  # the last moment Bolt still accepts it
    assert guard.admit("v0=a", str(ts)) == "replay"
    now.t = ts + WINDOW + MARGIN + 1  # Bolt refuses it now; the guard may forget it
    assert guard.admit("v0=c", str(int(now.t))) == "new"
    assert guard.size == 1


def test_a_future_dated_signature_is_kept_until_its_own_window_ends() -> None:
    """Signed 4 minutes ahead, first seen now: Bolt accepts it for 9 minutes."""
    now = Now()
    guard = ReplayGuard(clock=now)
    first_seen = now.t
    ts = int(first_seen) + 240
    assert guard.admit("v0=future", str(ts)) == "new"
    for later in (301, 311, 539):
        now.t = first_seen + later
        assert guard.admit("v0=future", str(ts)) == "replay", later


def test_the_kept_window_matches_what_bolts_verifier_accepts() -> None:
    """Whatever Bolt's verifier would still accept, the guard still remembers."""
    now = Now()
    verifier = SignatureVerifier("secret", clock=now)  # type: ignore[arg-type]
    guard = ReplayGuard(clock=now)
    start = int(now.t)
    for offset in (-300, -120, 0, 120, 300):
        ts = start + offset
        sig = verifier.generate_signature(timestamp=str(ts), body="x")
        assert sig is not None
        now.t = start
        assert guard.admit(sig, str(ts)) == "new"
        for moment in range(start - 400, start + 700, 7):
            now.t = float(moment)
            if verifier.is_valid(body="x", timestamp=str(ts), signature=sig):
                assert guard.admit(sig, str(ts)) == "replay", (offset, moment - start)


def test_memory_is_bounded_and_full_refuses_instead_of_forgetting() -> None:
    now = Now()
    guard = ReplayGuard(max_entries=3, clock=now)
    ts = str(int(now.t))
    for sig in "abc":
        assert guard.admit(sig, ts) == "new"
    assert guard.admit("d", ts) == "full"  # refused, and "a" is still remembered
    assert guard.admit("a", ts) == "replay"
    assert guard.size == 3
    now.t += WINDOW + MARGIN + 1  # their windows have passed: room again
    assert guard.admit("d", str(int(now.t))) == "new"
    assert guard.size == 1


@pytest.mark.parametrize("timestamp", [None, "", "soon", str(10**12)])
def test_an_odd_timestamp_is_kept_for_a_window_from_now(timestamp: str | None) -> None:
    now = Now()
    guard = ReplayGuard(clock=now)
    assert guard.admit("v0=odd", timestamp) == "new"
    now.t += WINDOW
    assert guard.admit("v0=odd", timestamp) == "replay"
