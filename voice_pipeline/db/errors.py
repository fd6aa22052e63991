"""The database layer's exceptions. Their messages are one line, safe to print (no passwords)."""


class DatabaseError(Exception):
    """Base class of this package's errors."""


class DatabaseUnavailable(DatabaseError):
    """The server cannot be started or reached, or refused our credentials."""


class MigrationError(DatabaseError):
    """A migration file is malformed, was changed after being applied, or failed to apply."""
