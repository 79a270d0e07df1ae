"""The daemon: listeners, sessions, authentication, admission, audit.
Never imports rshell.client or rshell.cli."""
