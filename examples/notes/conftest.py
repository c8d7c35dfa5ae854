# datalayer's plugin: a template database built from this project's migrations, a clone per test.
pytest_plugins = ["datalayer.testing"]
