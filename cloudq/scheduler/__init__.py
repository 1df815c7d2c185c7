"""Periodic tasks: schedules, the local beat, and EventBridge export and sync."""

from cloudq.scheduler.schedules import crontab, schedstate, schedule, solar

__all__ = ["crontab", "schedstate", "schedule", "solar"]
