"""The client API: ``connect()`` and the ``Connection`` contract, with its
native backend here and its SSH backend in rshell.ssh.client.
Never imports rshell.server or rshell.exec."""
