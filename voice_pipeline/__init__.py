"""callmeback's voice pipeline: the core that the control API builds on (never the reverse)."""
