"""Stores keep results, chord joins, revokes, locks and rate buckets."""

from cloudq.stores.base import Item, Store

__all__ = ["Item", "Store"]
