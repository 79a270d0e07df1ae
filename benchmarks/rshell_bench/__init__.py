"""rshell's benchmark (benchmarks/bench.py is its entry; see benchmarks/README.md).

One measurement machinery, every figure a module:

- ``core``: the alternating sampler and the contenders (``Side``) it samples;
  ``stats``: medians, spreads, ratios, targets, the figures' JSON shapes
- ``report``: the tables and results.json; ``cli``: the options and a run
- ``plans``: modes, figures, sample counts; ``modes``: each mode start to end
- ``contenders``: rshell servers and clients, the rig; ``bounds``: the raw
  sender, relay ceiling and spawn floor; ``openssh``: sshd and ssh; ``peers``:
  paramiko and asyncssh; ``procs``: processes and /proc; ``load``: the load
  worker (a process of its own)
- figures: ``roundtrip``, ``stream``, ``cold``, ``concurrency``, ``memory``,
  ``terminal`` (keystroke echo and output through a pty, issue 13)

Not installed: imported from benchmarks/ (the entry's folder).
"""
