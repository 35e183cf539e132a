"""Publishing once under an idempotency key: a repeat gets the first answer, and a retry after a failure
resumes what the failed attempt logged instead of logging it again (the publish API's `Idempotency-Key`, the
outbox's batches)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from .broker import History, LoggedEvent, parse_event_id, stamp
from .bus import DomainEvent
from .dispatcher import Dispatcher, PerEvent
from .errors import InvalidEvent
from .idempotency import Answer, IdempotencyStore
from .router import route


def accepted(per_event: PerEvent) -> Answer:
    """The 202: how many domain events were accepted, and each one's eventId per stream."""
    return Answer(202, {"accepted": len(per_event),
                        "events": [{"event": name, "eventIds": {item.stream: item.event_id for item in items}}
                                   for name, items in per_event]})


def _encode_logged(per_event: PerEvent) -> str:
    return orjson.dumps([[name, [[i.stream, i.event, i.event_id, orjson.Fragment(i.body), i.logged_at] for i in items]]
                         for name, items in per_event]).decode()


def _decode_logged(raw: str) -> PerEvent:
    return [(name, [LoggedEvent(stream, event, event_id, parse_event_id(event_id)[1], orjson.dumps(payload), logged_at)
                    for stream, event, event_id, payload, logged_at in items])
            for name, items in orjson.loads(raw)]


CLOCK_SKEW_MS = 2000  # between the store's clock and the log's (one Redis: none; memory: one process)


async def already_logged(log: History, batch: Sequence[DomainEvent], since: int) -> PerEvent | None:
    """The batch's deliveries if a dead attempt logged them (each found in its stream since `since`), or None.

    Dedupe against the log: a delivery matches a kept event of its stream with the same wire event and the same
    payload (its `eventId` and `stream` aside), each kept event used once, in order.
    """
    routed = [(event.name, route(event.name, event.data)) for event in batch]
    kept = {stream: await log.read_since(stream, since - CLOCK_SKEW_MS)
            for stream in dict.fromkeys(d.stream for _, deliveries in routed for d in deliveries)}
    used: set[str] = set()
    per_event: PerEvent = []
    for name, deliveries in routed:
        items = []
        for d in deliveries:
            # The same bytes as the kept event once stamped with its id: compared as encoded, nothing decoded per
            # kept event (the payload's encoding is the serializer's, the same for both attempts).
            match = next((item for item in kept[d.stream] if item.event_id not in used and item.event == d.event
                          and stamp(d, *parse_event_id(item.event_id), item.logged_at).body == item.body), None)
            if match is None:
                return None
            used.add(match.event_id)
            items.append(match)
        per_event.append((name, items))
    return per_event


def refusal(status: int, code: str, message: str, **details: Any) -> Answer:
    """An error answer: `{"error": {code, message, ...details}}` with its HTTP status."""
    return Answer(status, {"error": {"code": code, "message": message, **details}})


def refused(exc: InvalidEvent) -> Answer:
    return refusal(400, exc.code, exc.message, **{k: v for k, v in exc.details.items() if v is not None})


async def publish_once(store: IdempotencyStore, dispatcher: Dispatcher, log: History, key: str,
                       fingerprint: str, validate: Callable[[], Sequence[DomainEvent]]) -> Answer:
    """Publish what `validate()` gives under `key`, once: a repeat gets the first answer and publishes nothing.

    An attempt that logged its events but could not fan them out (Redis fan-out down) answers 503 and keeps
    them; the retry fans out those same events, so they are in the log once and reach each socket once.
    An attempt that died between its log append and its record of it (one round trip) is found in the log.
    """
    claim = await store.claim(key, fingerprint)
    if isinstance(claim, Answer):
        return claim
    appending = False
    try:
        if claim.logged is not None:
            per_event = _decode_logged(claim.logged)
            await dispatcher.redeliver([item for _, items in per_event for item in items])
        else:
            try:
                batch = validate()
            except InvalidEvent as exc:
                answer = refused(exc)
                await store.answer(key, claim.token, answer)
                return answer

            async def keep(per_event: PerEvent) -> None:
                await store.logged(key, claim.token, _encode_logged(per_event))

            found = await already_logged(log, batch, claim.since) if claim.since is not None else None
            if found is not None:
                await keep(found)
                await dispatcher.redeliver([item for _, items in found for item in items])
                per_event = found
            else:
                appending = True
                per_event = await dispatcher.dispatch(batch, on_logged=keep)
    except BaseException:
        await _quietly(store.release(key, claim.token, may_have_logged=appending))
        raise
    answer = accepted(per_event)
    # Published: if the answer cannot be kept (Redis just went down), a retry fans the logged events out again,
    # with the same eventIds, which clients drop as seen. The publisher must still hear that it worked.
    await _quietly(store.answer(key, claim.token, answer))
    return answer


async def _quietly(call: Awaitable[None]) -> None:
    """Bookkeeping after the fact; if the store is down, the lease simply runs out."""
    try:
        await call
    except Exception:  # noqa: BLE001 - the original outcome is what the caller must see
        pass
