"""``python -m cloudq.cli``: the same as the ``cloudq`` command."""

from cloudq.cli import main

main()
