"""Transports move encoded task messages between senders and workers."""

from cloudq.transports.base import OutgoingMessage, ReceivedMessage, Transport

__all__ = ["OutgoingMessage", "ReceivedMessage", "Transport"]
