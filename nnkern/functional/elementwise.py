"""Op surface of the 'elementwise' kernel family (validation and dispatch)."""

__all__ = []
