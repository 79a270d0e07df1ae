#!/usr/bin/env python3
"""rshell against baselines and peers measured side by side in the same run, on loopback.

Absolute timings vary from machine to machine; what a change to rshell buys
or costs shows in the ratio against a baseline measured in the same run.
Samples alternate (A B C A B C ...) so that drift (CPU frequency, page cache,
other load) hits every side alike, and every figure is a median with its
p10/p90 and min/max spread.

    python benchmarks/bench.py                     # = --mode all: everything (~13 min)
    python benchmarks/bench.py --quick             # the same, smoke-sized (< 1 min)
    python benchmarks/bench.py --mode all --only concurrency,memory
    python benchmarks/bench.py --mode both         # plain, then TLS, local baselines only
    python benchmarks/bench.py --mode ssh          # rshell --ssh-bind vs sshd (< 1 min)

``--mode all`` (issue 6) starts three rshell servers, a private OpenSSH sshd
and, as its clients, OpenSSH's ssh, paramiko and asyncssh (rshell_bench/peers.py), and
measures: ``roundtrip`` (``true`` over one open connection: rshell vs an
in-process ``subprocess.run``, vs asyncssh and vs paramiko; and the spawn
floor, a minimal ``--floor-server`` process, the least a Python server can
do per command), ``cold`` (the
whole ``rshell ADDR -c true`` process vs a cold ``ssh ... true``),
``throughput`` (1 GiB of command output: rshell vs raw Python TLS/TCP
transfers and relay ceilings, the rshell CLI vs ``ssh``, asyncssh and
paramiko for information), ``concurrency`` (50 connections x 20 commands
from a fresh rshell_bench/load.py process per sample: rshell vs asyncssh and paramiko,
errors counted), ``memory`` (server memory per idle authenticated
connection, 200 held by load.py; sshd's for information), and the
terminal figures (rshell_bench/terminal.py): ``keystroke`` (a byte's echo
on an open remote terminal: rshell vs ``ssh -tt`` and asyncssh) and
``tty_output`` (``cat`` of 100 MiB on a remote pty: rshell vs ``ssh -tt``);
and ``fleet`` (rshell_bench/fleet.py, issue 15: ``echo ok`` on 100 hosts,
ports of 127.0.0.1, by rshell vs pdsh, parallel-ssh, clush and Ansible
against sshd, and rshell alone on 10, 100 and 1,000 hosts).

Modes ``plain``/``tls``/``both`` measure rshell against local baselines only:
``roundtrip`` (and the spawn floor), ``throughput`` (and the relay ceiling), ``cold`` (vs
``python -c pass``).  ``--mode ssh`` puts rshell's SSH listener
(``--ssh-bind``) beside OpenSSH's sshd, both driven by the same paramiko
client.  See benchmarks/README.md.

It starts its own servers on 127.0.0.1 with a temporary ``RSHELL_HOME``
(never the user's files), talks to 127.0.0.1 only, and stops everything it
started, by its own handles.  Needs ``cryptography`` (throwaway certificate
and keys); mode all and mode ssh also OpenSSH's sshd (and ssh) and the
``bench`` extra (paramiko, asyncssh): a peer missing fails that peer only.

This file is the entry only: the options, the figures and the measurement
machinery are the package ``rshell_bench`` beside it (see its __init__).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the package beside this file, however it is run
    sys.path.insert(0, str(HERE))

from rshell_bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
