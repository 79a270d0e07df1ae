"""What the tests share, one module per kind of helper (the fixtures that use
them live in tests/conftest.py):

- ``procs``: bounded polls, /proc scans by process group, pid files, a
  process's descriptors, threads and memory;
- ``cli``: the real ``rshell`` entry points as a user runs them (captured,
  or on a pseudo-terminal), and the one-line error a failure must be;
- ``servers``: a real ``rshell-server`` subprocess, and the same daemon in
  this process on 127.0.0.1:0 for tests about the wire, not the process;
- ``wire``: the protocol by hand, for tests that play a peer no rshell
  client would be (raw frames, garbage, replays).

Must not import tests.conftest (conftest imports these).
"""
