"""The coordinator's Grid wrapper: how it waits for replies and when it gives up."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from fedcrm.server import app as coordinator
from fedcrm.server.app import FIRST_POLL_SECONDS, FederationAborted, _StoppableGrid


class _ScriptedGrid:
    """Answers message i on the ``ready[i]``-th pull (1-based), and counts the pulls."""

    def __init__(self, ready: list[int]) -> None:
        self.ready = ready
        self.pulls = 0

    def push_messages(self, messages: Any) -> list[str]:
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids: Any) -> list[Any]:
        self.pulls += 1
        wanted = set(message_ids)
        return [
            SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=f"m{i}"))
            for i, due in enumerate(self.ready)
            if due == self.pulls and f"m{i}" in wanted
        ]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(coordinator.time, "sleep", recorded.append)
    return recorded


def test_waits_back_off_from_first_poll_to_the_cap_and_start_over_on_replies(
    sleeps: list[float],
) -> None:
    inner = _ScriptedGrid(ready=[4, 9])
    grid = _StoppableGrid(inner, threading.Event(), poll=0.2)  # type: ignore[arg-type]
    replies = grid.send_and_receive([object(), object()])
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1"]
    assert inner.pulls == 9
    first = FIRST_POLL_SECONDS
    # pulls 1-3 empty: doubling; pull 4 answers m0: start over; pulls 5-8 empty; 9 answers m1
    expected = [2 * first, 4 * first, 8 * first, first, 2 * first, 4 * first, 8 * first]
    expected += [min(16 * first, 0.2)]
    assert sleeps == pytest.approx(expected)
    assert max(sleeps) <= 0.2


def test_waits_never_exceed_the_poll_cap(sleeps: list[float]) -> None:
    grid = _StoppableGrid(_ScriptedGrid(ready=[30]), threading.Event(), poll=0.05)  # type: ignore[arg-type]
    grid.send_and_receive([object()])
    assert len(sleeps) == 29
    assert max(sleeps) == pytest.approx(0.05)
    assert sleeps[-10:] == pytest.approx([0.05] * 10)


def test_stop_ends_the_wait(sleeps: list[float]) -> None:
    stop = threading.Event()
    inner = _ScriptedGrid(ready=[10**9])
    grid = _StoppableGrid(inner, stop, poll=0.2)  # type: ignore[arg-type]
    original_pull = inner.pull_messages

    def pull_then_stop(ids: Any) -> list[Any]:
        if inner.pulls == 3:
            stop.set()
        return original_pull(ids)

    inner.pull_messages = pull_then_stop  # type: ignore[method-assign]
    with pytest.raises(FederationAborted):
        grid.send_and_receive([object()])
    assert inner.pulls == 4
