"""Guessing is slow: failed credentials (Admin UI logins, publish API keys) are throttled per client address.

After each failure an address waits before its next try is even checked: `BLOCKS_RT_AUTH_FAILURE_DELAY_S`
(1 s), then twice as long after each further failure, and from `BLOCKS_RT_AUTH_LOCKOUT_AFTER` (5) failures on
it is refused for `BLOCKS_RT_AUTH_LOCKOUT_S` (300 s). A try that comes before its time is refused unchecked, even
with the right credentials (so guesses sent in parallel gain nothing, and learn nothing), and does not count as a
failure (a client retrying a few times too early is not locked out for it). A success forgets the address, as
does a quiet `FORGET_AFTER_S`. So a guesser gets 5 tries in its first 15 s, then one every 5 minutes.

A refused or failed try is answered after the address's wait (at most `TARPIT_S`, and at most the first delay):
a guesser that waits for each answer, as most do, then costs the gateway about one request a second instead of
as many as it can send (unanswered, a refusal is cheap, but a thousand a second still take a core's share).

The table is bounded (`MAX_ADDRESSES`, oldest forgotten first): an attacker with many addresses cannot grow it.
Failures are logged with the address and the door, never with what was tried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)

FORGET_AFTER_S = 3600.0  # without a failure
MAX_ADDRESSES = 10_000
TARPIT_S = 1.0


@dataclass
class _Failures:
    count: int
    last: float  # when the last failure was
    next_try: float  # when the address may try again


class GuessThrottle:
    """Failed tries of one door (`admin_login`, `api_key`), per client address, on an injectable clock."""

    def __init__(self, door: str, metrics: Metrics, *, delay_s: float = 1.0, lockout_after: int = 5,
                 lockout_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        """`delay_s` 0 turns the throttle off (a lab whose tests send wrong keys on purpose)."""
        self.door = door
        self._delay_s, self._lockout_after, self._lockout_s = delay_s, lockout_after, lockout_s
        self._clock = clock
        self._failures: dict[str, _Failures] = {}
        self._failed = metrics.child(metrics.guesses_failed, door)
        self._refused = metrics.child(metrics.guesses_refused, door)

    def wait_s(self, address: str) -> float:
        """Seconds before `address` may try again (0: now); a try refused for it is counted."""
        failures = self._failures.get(address)
        if failures is None:
            return 0.0
        now = self._clock()
        if now - failures.last > FORGET_AFTER_S:
            del self._failures[address]
            return 0.0
        wait = failures.next_try - now
        if wait <= 0:
            return 0.0
        self._refused.inc()
        return wait

    async def slow_answer(self, address: str) -> None:
        """Wait before answering a refused or failed try of `address` (see the module's docstring)."""
        failures = self._failures.get(address)
        wait = failures.next_try - self._clock() if failures is not None else 0.0
        if wait > 0:
            await asyncio.sleep(min(wait, self._delay_s, TARPIT_S))

    def failed(self, address: str) -> None:
        """`address` tried wrong credentials: it waits longer before its next try."""
        self._failed.inc()
        if not self._delay_s:
            return
        now = self._clock()
        failures = self._failures.pop(address, None)  # re-inserted last: the table forgets the oldest first
        count = 1 if failures is None else failures.count + 1
        delay = self._lockout_s if count >= self._lockout_after else self._delay_s * 2 ** (count - 1)
        self._failures[address] = _Failures(count, now, now + delay)
        while len(self._failures) > MAX_ADDRESSES:
            del self._failures[next(iter(self._failures))]
        log.warning("failed %s from %s (%d in a row; next try in %.0f s)", self.door, address or "?", count, delay)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def throttle(door: str, metrics: Metrics, settings: Settings) -> GuessThrottle:
    """The throttle of `door` as configured."""
    return GuessThrottle(door, metrics, delay_s=settings.auth_failure_delay_s,
                         lockout_after=settings.auth_lockout_after, lockout_s=settings.auth_lockout_s)
