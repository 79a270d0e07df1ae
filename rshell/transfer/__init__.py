"""File transfer: rshell cp, Connection.put/get and their rules (issue 14)."""
