"""The replay guard remembers signatures for the signature window, and no longer."""

from __future__ import annotations

from bot.replay import ReplayGuard


def test_a_signature_passes_once_within_the_window() -> None:
    now = [0.0]
    guard = ReplayGuard(window=300, clock=lambda: now[0])
    assert guard.first_time("v0=a") and not guard.first_time("v0=a")
    assert guard.first_time("v0=b")
    now[0] = 301.0
    assert guard.first_time("v0=a")  # Bolt refuses such an old timestamp anyway


def test_memory_is_bounded() -> None:
    guard = ReplayGuard(max_entries=3, clock=lambda: 0.0)
    for sig in "abcde":
        assert guard.first_time(sig)
    assert len(guard._seen) == 3
