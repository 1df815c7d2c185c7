"""Modules that only a hostile message names: importing one leaves a mark in the environment.

Nothing in the test suite imports them, so a test can check that decoding a message or a
result that names them did not import them (their import-time code did not run).
"""
