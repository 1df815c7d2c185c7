"""The shop: a small example cloudq app (see ``tasks.py``) and a client that uses it."""
