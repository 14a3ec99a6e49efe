"""Executors for kill-and-resume tests: they score like :func:`lsi.runner.serial` and record or stop."""
from __future__ import annotations


class Interrupted(RuntimeError):
    """Raised by :class:`StopAfter` in place of a killed process."""


class StopAfter:
    """Scores ``chunks`` chunks, then raises :class:`Interrupted` (the runner has stored what it got)."""

    def __init__(self, chunks: int):
        self.chunks = chunks

    def __call__(self, score, pending, bar):
        for done, chunk in enumerate(pending):
            if done == self.chunks:
                raise Interrupted(f"stopped after {done} chunks")
            yield chunk, score(chunk, bar)


class Counting:
    """Scores every pending chunk and records their first positions in ``scored``."""

    def __init__(self):
        self.scored: list[int] = []

    def __call__(self, score, pending, bar):
        for chunk in pending:
            self.scored.append(int(chunk[0]))
            yield chunk, score(chunk, bar)
