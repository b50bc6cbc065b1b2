"""edgefleet device side: the agent, the formats both halves share, and the vision runtime."""

__version__ = "0.1.0"
