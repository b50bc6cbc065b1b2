"""fleet-agent: the device's JSON command interface (see protocol.py)."""
