"""``datalayer lint-migrations``: squawk's migration safety rules over every migration source of the project.

Before squawk, the rules across sources: a migration id defined in two sources is a finding, and with
``builtin = true`` so is a first migration of the service that does not depend on a built-in one.

The rule set is squawk's default, with these settings and exceptions:

* ``--assume-in-transaction``: yoyo runs every SQL migration in one transaction (PostgreSQL has
  transactional DDL), so a failed migration leaves nothing behind. That is why ``prefer-robust-stmts``
  (IF NOT EXISTS everywhere) stays quiet: rerunning after a failure starts from a clean slate, and
  IF NOT EXISTS would hide schema drift instead.
* ``--pg-version=15.0``: the oldest PostgreSQL we support.
* Rollback files are linted without ``ban-drop-table`` and ``ban-drop-function``: dropping what the
  forward migration created is their whole purpose.

Every forward migration sets ``lock_timeout`` and ``statement_timeout`` locally
(``require-lock-timeout``, ``require-statement-timeout``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from datalayer import _migration_sources as _sources
from datalayer.errors import ConfigError
from datalayer.project import Project, find_project

__all__ = ["ROLLBACK_EXCLUDED_RULES", "lint_migrations"]

COMMON_ARGS = ("--assume-in-transaction", "--pg-version=15.0", "--reporter=gcc")
ROLLBACK_EXCLUDED_RULES = ("ban-drop-table", "ban-drop-function")


def _squawk() -> str:
    local = Path(sys.executable).parent / "squawk"
    if local.exists():
        return str(local)
    found = shutil.which("squawk")
    if found is None:
        raise ConfigError("squawk is not installed; pip install squawk-cli (it is in datalayer's dev extra)")
    return found


def lint_migrations(directory: Path | None = None, *, project: Project | None = None) -> tuple[int, str]:
    """Run squawk over ``directory``, or over every migration source of ``project`` (default:
    ``find_project()``) after the rules across sources; returns (exit code, report). 0 means no finding."""
    if directory is not None:
        folders, findings = [directory], []
    else:
        sources = (project or find_project()).migration_sources()
        folders = [s.path for s in sources]
        findings = _sources.duplicate_problems(sources) + _sources.depends_problems(sources)
    forward = sorted(str(p) for d in folders for p in d.glob("*.sql") if not p.name.endswith(".rollback.sql"))
    rollback = sorted(str(p) for d in folders for p in d.glob("*.rollback.sql"))
    code, report = (1 if findings else 0), list(findings)
    if not forward and not rollback:
        return code, "\n".join(report)
    squawk = _squawk()
    for files, extra in ((forward, ()), (rollback, (f"--exclude={','.join(ROLLBACK_EXCLUDED_RULES)}",))):
        if not files:
            continue
        cmd = [squawk, *COMMON_ARGS, *extra, *files]  # our own binary and file names, no shell
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        code = max(code, r.returncode)
        report.append((r.stdout + r.stderr).strip())
    return code, "\n".join(line for line in report if line)
