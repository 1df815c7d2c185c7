"""Runners: the one execution path (``execute``) and the ways messages reach it."""
