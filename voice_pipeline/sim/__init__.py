"""Local stand-ins that speak the providers' real wire protocols (protocols.md).

They are the pipeline's counterpart, not its mirror: they share nothing with the pipeline's
internals, so a test against them checks the pipeline against the protocol.
"""
