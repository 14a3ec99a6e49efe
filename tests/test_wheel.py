"""The distribution: a wheel built from the checkout installs into a fresh venv and works outside the checkout."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.mark.slow
def test_the_wheel_installs_and_runs_lsi_compute_and_published_load_outside_the_checkout(tmp_path):
    """pip builds the wheel; a fresh venv installs it (its dependencies are this interpreter's, through a
    .pth file, so torch is not installed again); from a folder outside the checkout, ``lsi compute
    --dataset digits`` writes a table and ``lsi.published.load`` reads a published value shipped in the
    wheel. The checkout is not importable there (no PYTHONPATH, another working directory)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LSI_PUBLISHED", "LSI_PROJECT")}
    source = tmp_path / "source"   # a copy: building in the checkout would leave an .egg-info there
    shutil.copytree(ROOT / "lsi", source / "lsi", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--wheel-dir", tmp_path / "dist", "-q"],
         env=env)
    wheel, = (tmp_path / "dist").glob("laplace_sample_information-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], env=env)
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], env=env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    out = work / "digits.parquet"
    _run([venv / "bin" / "lsi", "compute", "--dataset", "digits", "--indices", "0:20", "--solver", "newton-step",
          "--quiet", "--out", out], cwd=work, env=env)
    check = ("import lsi, lsi.published as p; t = lsi.load_table('digits.parquet'); "
             "v = p.load('imdb-3000-converged'); "
             "print(lsi.__file__, len(t), len(v), v.attrs['published']['name'], len(p.names()))")
    where, rows, published_rows, name, count = _run([python, "-c", check], cwd=work, env=env).stdout.split()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT / "lsi")
    assert int(rows) == 20 and int(published_rows) == 3000 and name == "imdb-3000-converged"
    assert int(count) == len(list((ROOT / "lsi" / "published_values").glob("*.parquet")))
