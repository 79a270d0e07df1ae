"""The ``rshell`` and ``rshell-server`` command lines: the only importers of click
(and the one-shot fast path, which imports none)."""
