"""SSH-2 through paramiko: the ``--ssh-bind`` listener (``server``) and the
``ssh://`` client backend (``client``); ``_paramiko`` is the one door to
paramiko's private API.  Nothing outside this package imports paramiko."""
