"""What a worker does after a task that is part of a canvas has its outcome stored.

* Success with steps left: the next step is expanded with the return value and sent.
* Failure (or revoked, expired, rejected) with steps left: the chain's own result is stored
  as that failure, so ``chain.get()`` raises it instead of waiting forever.
* Either way, when the task (or the chain it started) is a chord member, it is counted:

  1. ``UpdateItem chord#G#s<k>`` adds the member's index to its shard's set only if absent
     (shards of 1,000 keep items ~4 KB however big the chord). A redelivered member fails
     that condition and reads the shard once, to finish step 2 if a crash cut it short.
  2. A shard that became complete is added to ``chord#G``'s ``shards_done`` set (idempotent).
  3. When every shard is complete, ``put_if_absent chord#G#fired {"by": index}`` claims the
     callback; the claimer reads the members' results (BatchGetItem, 100 per call, in order),
     sends the body with them (or stores it FAILURE with ChordError), then marks the claim
     ``sent``. A delivery that finds the claim taken stops — unless the claim is its own and
     not marked sent (it crashed in between): then it sends again. Exactly once, except that
     a crash between sending and marking can send twice; never lost.

Per header member: one write, no read (plus one write per 1,000 members, and the firing).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from cloudq import states
from cloudq.canvas.apply import Plan, expand, member_id, result_id, run_plan
from cloudq.errors import ChordError, MessageError, TaskRevokedError
from cloudq.redaction import cut

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.message import Envelope

logger = logging.getLogger(__name__)

SHARD_SIZE = 1000


def succeeded(app: App, envelope: Envelope, retval: Any) -> None:
    """Continue the chain, or count the chord member, after a success."""
    if envelope.chain:
        plan = Plan()
        try:
            expand(app, envelope.chain[0], (retval,), plan, rest=envelope.chain[1:],
                   membership=envelope.chord, parent=envelope)
        except MessageError as exc:  # the program's error: fail the chain
            logger.error("task %s[%s]: next step of its chain cannot be sent: %s",
                         envelope.task, envelope.id, exc)
            failed(app, envelope, exc)
            return
        run_plan(app, plan)
    elif envelope.chord:
        member_done(app, envelope.chord)


def failed(app: App, envelope: Envelope, exc: BaseException) -> None:
    """Break the chain (its result becomes this failure) and count the chord member."""
    if envelope.chain:
        final = result_id(envelope.chain[-1])
        if final:
            app.backend.save(final, states.FAILURE, exc=exc, name=envelope.chain[-1].get("task"),
                             reason=f"step {envelope.task}[{envelope.id}] of its chain failed")
    if envelope.chord:
        member_done(app, envelope.chord)


def member_done(app: App, membership: dict[str, Any]) -> None:
    group_id, index, size = membership["id"], int(membership["index"]), int(membership["size"])
    store, ttl_s = app.store, app.backend.expires_s
    shard = index // SHARD_SIZE
    shard_key = f"chord#{group_id}#s{shard}"
    count = store.add_new_member(shard_key, "done", str(index), ttl_s=ttl_s)
    if count is None:  # delivered again: finish what the first delivery may not have
        item = store.get(shard_key) or {}
        count = len(item.get("done", ()))
    if count < min(SHARD_SIZE, size - shard * SHARD_SIZE):
        return
    shards = -(-size // SHARD_SIZE)
    if shards > 1 and store.add_to_set(f"chord#{group_id}", "shards_done", [str(shard)],
                                       ttl_s=ttl_s) < shards:
        return
    fire(app, group_id, index)


def fire(app: App, group_id: str, index: int) -> None:
    store, ttl_s = app.store, app.backend.expires_s
    claim_key = f"chord#{group_id}#fired"
    claim_item = {"by": index, "sent": False, "at": time.time()}
    if not store.put_if_absent(claim_key, claim_item, ttl_s=ttl_s):
        claim = store.get(claim_key) or {}
        # The same member again, unsent, and older than half a visibility timeout: its worker
        # was killed mid-way (a live one re-hides its message every third of a timeout, so
        # the message cannot be back sooner); a younger claim is a duplicate running now.
        age_s = time.time() - float(claim.get("at", 0))
        abandoned = (int(claim.get("by", -1)) == index and not claim.get("sent")
                     and age_s > app.settings.visibility_timeout / 2)
        if not abandoned:
            return  # fired, or being fired right now (perhaps by another copy of this member)
        logger.warning("chord %s: sending the callback again after an interrupted attempt",
                       group_id)
    try:
        _send_body(app, group_id)
    except BaseException:
        store.delete(claim_key)  # let the redelivered member claim it again
        raise
    store.put(claim_key, {**claim_item, "sent": True}, ttl_s=ttl_s)


def _send_body(app: App, group_id: str) -> None:
    chord = app.store.get(f"chord#{group_id}")
    if chord is None:
        logger.error("chord %s: its join item is gone (expired?); the callback cannot run",
                     group_id)
        return
    body, size = chord["body"], int(chord["size"])
    metas = app.backend.get_many([member_id(group_id, i) for i in range(size)])
    broken = next((m for m in metas.values() if m.state in states.PROPAGATE_STATES), None)
    if broken is None:
        plan = Plan()
        results = [metas[member_id(group_id, i)].result for i in range(size)]
        try:
            expand(app, body, (results,), plan, rest=list(chord.get("chain") or []),
                   membership=chord.get("membership"))
            run_plan(app, plan)
        except MessageError as exc:  # the program's error: fail the chord
            _fail_body(app, group_id, chord, exc)
    else:
        _fail_body(app, group_id, chord, ChordError(_dependency_failed(broken)))


def _dependency_failed(meta: Any) -> str:
    if meta.state == states.REVOKED:
        reason = (meta.extra or {}).get("reason") or "revoked"
        return f"dependency {meta.task_id} was {reason}: {TaskRevokedError.__name__}"
    return f"dependency {meta.task_id} raised {cut(repr(meta.result))}"


def _fail_body(app: App, group_id: str, chord: dict[str, Any], exc: Exception) -> None:
    from cloudq.followups import send_errbacks
    from cloudq.message import Envelope

    body = chord["body"]
    body_id = result_id(body)
    logger.info("chord %s: its callback fails: %s", group_id, exc)
    stand_in = Envelope(id=body_id or group_id, task=body.get("task") or "chord",
                        chain=list(chord.get("chain") or []), chord=chord.get("membership"),
                        link_error=list(body.get("options", {}).get("link_error", [])))
    if body_id:
        app.backend.save(body_id, states.FAILURE, exc=exc, name=stand_in.task)
    send_errbacks(app, stand_in, exc, "")
    failed(app, stand_in, exc)
