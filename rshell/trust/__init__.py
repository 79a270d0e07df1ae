"""Keys, TLS, authorized_keys and known_hosts: the only importers of cryptography."""
