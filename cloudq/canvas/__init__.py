"""The canvas: signatures, chains, groups and chords (Celery's workflow primitives)."""

from cloudq.canvas.result import GroupResult
from cloudq.canvas.signature import Chain, Chord, Group, Signature, maybe_signature, signature

chain = Chain
group = Group
chord = Chord

__all__ = [
    "Chain", "Chord", "Group", "GroupResult", "Signature", "chain", "chord", "group",
    "maybe_signature", "signature",
]
