"""FastAPI integration (being written)."""
