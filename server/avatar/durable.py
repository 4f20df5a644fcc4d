"""What makes the avatar saga durable: a stored record of each saga in flight, its lease,
and the dead-letter list.

A saga that has to generate (a cache miss) first records itself
(:meth:`SagaLedger.begin`): user, saga id, prompt hash, owner node and a lease. While it
works, :meth:`SagaLedger.renew` (called by the saga's keeper every third of the lease)
extends the lease of every saga this node runs. A saga that ends in any way but a
cancellation forgets its record (:meth:`SagaLedger.end`); one that fails after its retries
also leaves a :class:`~server.store.base.DeadLetter` with the reason
(:meth:`SagaLedger.dead_letter`).

So a record outlives its saga only when the process stopped mid-saga. The keeper then finds
it (:meth:`SagaLedger.claimable`): at once when this node is its owner (a restart of the
same node), else once its lease ended (the owner died) — and claims it atomically in the
store, so two nodes never both resume one saga.

The owner is the node's name: host name and port, the same after a restart of one node and
different between the nodes of a cluster.
"""

from __future__ import annotations

import logging
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.store.base import DeadLetter, SagaRecord, Store

if TYPE_CHECKING:
    from server.state import Clock

log = logging.getLogger(__name__)

MAX_REASON = 300
"""Characters of an error kept as a dead letter's reason."""


def node_name(port: int) -> str:
    """This node's owner name for saga leases: ``host:port``."""
    return f"{socket.gethostname()}:{port}"


def reason_of(error: BaseException) -> str:
    """A dead letter's reason: the error's type and message on one line, cut to
    :data:`MAX_REASON` characters."""
    message = " ".join(str(error).split())
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text[:MAX_REASON]


@dataclass(frozen=True, slots=True)
class Held:
    """A saga this node runs: its user and id (what renewing its lease needs)."""

    user_id: str
    saga_id: str


class SagaLedger:
    """The saga records and dead letters of one node in ``store``; see the module doc.

    Store errors are raised to the caller (:class:`~server.errors.StoreError`).
    """

    def __init__(
        self, store: Store, *, owner: str, lease_s: float, clock: Clock, max_attempts: int = 3
    ) -> None:
        if lease_s <= 0 or max_attempts < 1:
            raise ValueError(f"need lease_s > 0 and max_attempts >= 1: {lease_s}, {max_attempts}")
        self.owner = owner
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self._store = store
        self._clock = clock
        self._held: dict[str, Held] = {}

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _lease_end(self, now_ms: int) -> int:
        return now_ms + int(self.lease_s * 1000)

    @property
    def held(self) -> frozenset[str]:
        """Ids of the sagas this node runs now."""
        return frozenset(self._held)

    async def begin(self, user_id: str, cache_hash: str) -> SagaRecord:
        """Record a new saga of ``user_id`` for the image of ``cache_hash``, held by us."""
        now = self._now_ms()
        record = SagaRecord(
            user_id, uuid.uuid4().hex, cache_hash, self.owner, now, self._lease_end(now)
        )
        # Held before it is stored: the keeper never mistakes it for an interrupted one.
        self.hold(record)
        await self._store.put_saga(record)
        return record

    def hold(self, record: SagaRecord) -> None:
        """Count ``record`` among the sagas this node runs (renewed by :meth:`renew`)."""
        self._held[record.saga_id] = Held(record.user_id, record.saga_id)

    def drop(self, record: SagaRecord) -> None:
        """Stop renewing ``record`` without ending it: its lease runs out, and a later
        round (here or on another node) claims it again."""
        self._held.pop(record.saga_id, None)

    async def end(self, record: SagaRecord | None) -> None:
        """Forget the saga of ``record`` (nothing for ``None``: a saga that never recorded)."""
        if record is None:
            return
        try:
            await self._store.end_saga(record.user_id, record.saga_id)
        finally:
            self._held.pop(record.saga_id, None)

    async def dead_letter(
        self,
        record: SagaRecord | None,
        *,
        user_id: str,
        cache_hash: str,
        state: str,
        mood: str,
        reason: str,
    ) -> DeadLetter:
        """Keep a failed saga in the dead-letter list; the letter."""
        letter = DeadLetter(
            user_id=user_id,
            failed_at=self._now_ms(),
            saga_id=record.saga_id if record else uuid.uuid4().hex,
            cache_hash=cache_hash,
            reason=reason,
            state=state,
            mood=mood,
            attempts=record.attempts if record else 1,
        )
        await self._store.add_dead_letter(letter)
        return letter

    async def renew(self) -> None:
        """Extend the lease of every saga this node runs; let go of those another node took
        over or that ended meanwhile."""
        until = self._lease_end(self._now_ms())
        for held in list(self._held.values()):
            kept = await self._store.renew_saga(held.user_id, held.saga_id, self.owner, until)
            if not kept and self._held.pop(held.saga_id, None) is not None:
                log.info("avatar saga %s is no longer ours (ended or taken over)", held.saga_id)

    async def claimable(self) -> list[SagaRecord]:
        """Interrupted sagas this node has now claimed: its own left by a stopped process,
        and other nodes' whose lease ended. Each claim counts one more attempt."""
        now = self._now_ms()
        claimed = []
        for record in await self._store.resumable_sagas(self.owner, now_ms=now):
            if record.saga_id in self._held:
                continue  # running here
            mine = await self._store.claim_saga(
                record.user_id,
                record.saga_id,
                self.owner,
                now_ms=now,
                lease_until=self._lease_end(now),
            )
            if mine is not None:
                self.hold(mine)
                claimed.append(mine)
        return claimed
