"""The Python client: ``state`` is the pure protocol state machine, ``connection`` the I/O."""
