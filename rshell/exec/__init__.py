"""The one execution engine: starting a command under the session's policy,
streaming its output into a sink, limits, signals, stopping, reaping, and the
outcome both listeners report.  Knows no frames, sockets or paramiko."""
