"""The client: the ``Connection`` contract (api) above two backends that only
do I/O, native (native + handshake) and SSH (rshell.ssh.client); host-key
decisions (hostkeys), connection options and defaults (options), stdin
sources (stdin), the host-key probe (probe), and the one rule that makes
text from elsewhere safe to print on a terminal (screen).
Never imports rshell.server or rshell.exec."""
