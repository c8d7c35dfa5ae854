"""Side-by-side benchmarks of datalayer against raw psycopg, SQLAlchemy, aiosql, COPY, pg_dump and redis-py."""
