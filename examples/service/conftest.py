# datalayer's plugin: a template database built from this project's migrations, a clone per test;
# with anyio's plugin (installed with datalayer[testing]) its async fixtures adb, adl_pool, adl_cache.
pytest_plugins = ["datalayer.testing"]
