class SessionExists(Exception):
    """A session with this id was already started."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Session {session_id!r} already exists. Choose another session_id, or omit it.")
