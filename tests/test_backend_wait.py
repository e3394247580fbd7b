"""The shared wait loop of the backend boundary (bench/backends/base.py), table-driven."""

from __future__ import annotations

import pytest

from bench.backends.base import JobState, JobStatus, wait


class ScriptedHandle:
    """A handle whose poll() walks through a fixed list of states (the last one repeats)."""

    def __init__(self, states: list[JobState]):
        self.states, self.polls, self.cancelled = list(states), 0, None

    def poll(self) -> JobStatus:
        state = self.states[min(self.polls, len(self.states) - 1)]
        self.polls += 1
        if self.cancelled:
            return JobStatus(JobState.CANCELLED, reason=self.cancelled)
        return JobStatus(state, reason="boom" if state is JobState.FAILED else None)

    def cancel(self, reason: str) -> None:
        self.cancelled = reason


R, S, F, P, X = JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.PENDING, JobState.RESTARTING
CASES = [
    ("succeeds after running", [P, R, R, S], 10.0, S, 4, None),
    ("fails fast", [R, F], 10.0, F, 2, "boom"),
    ("restarts then succeeds", [R, X, R, S], 10.0, S, 4, None),
    ("times out and is cancelled", [R], 0.05, F, None, "timed out"),
]


@pytest.mark.parametrize(("name", "states", "timeout", "final", "polls", "reason"), CASES, ids=[c[0] for c in CASES])
def test_wait(name, states, timeout, final, polls, reason):
    handle = ScriptedHandle(states)
    seen = []
    status = wait(handle, timeout_s=timeout, poll_interval_s=0.01, on_poll=lambda s: seen.append(s.state))
    assert status.state is final
    if polls is not None:
        assert handle.polls == polls and seen == states[:polls]
    if reason is None:
        assert status.reason is None
    else:
        assert reason in status.reason
    assert (handle.cancelled is not None) == (reason == "timed out")
