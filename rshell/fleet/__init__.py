"""Fleets: one command on many hosts (issue 15)."""
