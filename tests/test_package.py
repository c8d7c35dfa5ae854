"""The package as users get it: public API, and a wheel installed outside the source tree."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest
from helpers import ROOT, clean_env, url_of

import datalayer
from datalayer.testing import TestServer


def test_all_is_sorted_and_importable() -> None:
    assert datalayer.__all__ == sorted(datalayer.__all__)
    for name in datalayer.__all__:
        assert getattr(datalayer, name) is not None, name


def test_errors_share_one_root() -> None:
    errors = [getattr(datalayer, n) for n in datalayer.__all__ if n.endswith(("Error", "Found", "Conflict",
                                                                              "Unknown", "Exhausted", "Unavailable"))]
    assert len(errors) >= 10
    assert all(issubclass(e, datalayer.DataLayerError) for e in errors)


@pytest.mark.slow
def test_wheel_installed_outside_the_tree_runs_a_query(tmp_path: Path, datalayer_server: TestServer) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=600, check=False)
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("sqlfirst_datalayer-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    # Dependencies come from this test environment; datalayer itself only from the wheel.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "deps.pth").write_text("\n".join(deps) + "\n")
    py = env_dir / "bin" / "python"
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
                           str(wheel)], capture_output=True, text=True, timeout=600, check=False)
    if inst.returncode != 0:  # pip without --python support: install by unpacking
        import zipfile

        zipfile.ZipFile(wheel).extractall(site)
    janitor = datalayer_server.janitor("dl_wheel_check")
    janitor.drop()
    with janitor:
        env = clean_env(DATABASE_URL=url_of(datalayer_server.target_for("dl_wheel_check")))
        code = (
            "import datalayer, pathlib\n"
            "from datalayer import setup_database, connection, user_repo\n"
            "from datalayer._paths import sql_dir, migrations_dir\n"
            "print(pathlib.Path(datalayer.__file__).resolve())\n"
            "print(sql_dir()); print(migrations_dir())\n"
            "print(setup_database())\n"
            "with connection() as db:\n"
            "    u = user_repo.create(db, username='wheel', email='w@example.com', hashed_password='h')\n"
            "    print(user_repo.get_by_id(db, u.id) == u)\n"
        )
        r = subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(str(site)), lines
    assert lines[1].startswith(str(site)) and lines[1].endswith("_data/sql")
    assert lines[2].startswith(str(site)) and lines[2].endswith("_data/migrations")
    assert "0001.core-tables" in lines[3]
    assert lines[4] == "True"


def test_psycopg_wait_seam_is_what_the_deadline_overrides() -> None:
    # The per-call deadline (datalayer/_connection.py) overrides psycopg's undocumented
    # Connection.wait(gen, interval, timeout) and relies on its timeout raising an OperationalError.
    # pyproject pins psycopg to the range this was checked on; this test fails when the seam moves.
    import inspect

    import psycopg
    from psycopg import errors

    params = list(inspect.signature(psycopg.Connection.wait).parameters)
    assert params == ["self", "gen", "interval", "timeout"], params
    assert issubclass(errors._WaitTimeout, psycopg.OperationalError)
