"""A memory budget shared by the decode workers, so that they do not multiply the peak.

Each decode asks for the bytes it will hold (``ImageFile.cost(reduction)``: a JPEG decoded at
reduced scale asks for that much less) before it reads the file and gives them back when its
pixels are no longer needed. Requests are served strictly in order:
the decodes run ahead of a consumer that takes results in input order, so a later file must
never take the memory an earlier one is waiting for (that would deadlock). A request larger than
the whole budget is served alone, once everything else has been given back. ``close`` wakes every
waiter with ``BudgetClosed`` (a stopped run).
"""

from __future__ import annotations

import itertools
import threading


class BudgetClosed(Exception):
    """The run stopped while this decode waited for memory."""


class MemoryBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self._free = self.capacity
        self._condition = threading.Condition()
        self._tickets = itertools.count()
        self._serving = 0  # the ticket whose turn it is
        self._closed = False

    def acquire(self, amount: int) -> int:
        """Block until ``amount`` bytes (at most the capacity) are free and it is this request's
        turn; return the amount taken (give exactly that back to ``release``)."""
        amount = min(max(0, int(amount)), self.capacity)
        with self._condition:
            ticket = next(self._tickets)
            while not self._closed and (ticket != self._serving or self._free < amount):
                self._condition.wait()
            if self._closed:
                raise BudgetClosed
            self._serving += 1
            self._free -= amount
            self._condition.notify_all()
        return amount

    def release(self, amount: int) -> None:
        with self._condition:
            self._free = min(self.capacity, self._free + amount)
            self._condition.notify_all()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
