"""The local side of a remote terminal: raw mode, window size, escapes."""
