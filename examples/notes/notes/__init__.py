"""A small notes service on datalayer's public toolkit."""
