"""An async FastAPI service on datalayer's public API: users, their analyses, file metadata, cached stats."""
