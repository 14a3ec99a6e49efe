"""``--ray ADDRESS`` fails fast (issue 23, item 6): an unreachable cluster before any feature extraction or
full-data fit, a process joined to another cluster refused. No Ray cluster is started here."""
import socket
import types

import pytest

from prerequisites import require_module

ray = require_module("ray", "pip install -e '.[cluster]'", module_level=True)

import lsi.cli.compute  # noqa: E402
from lsi.cli import main  # noqa: E402
from lsi.distributed import RayExecutor, check_cluster  # noqa: E402


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_address_is_an_error_before_the_features_are_read(features_file, tmp_path, capsys,
                                                                         monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the cluster is checked before the features are loaded and the model is fitted")

    monkeypatch.setattr(lsi.cli.compute, "load_inputs", never)
    monkeypatch.setattr(lsi.cli.compute, "compute_lsi", never)
    port = _closed_port()
    out = tmp_path / "R.parquet"
    assert main(["compute", "--features", str(features_file), "--ray", f"127.0.0.1:{port}", "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (f"lsi compute: error: No Ray cluster answers at 127.0.0.1:{port} (no TCP connection within "
                   f"5 s). Check the address and that 'ray start --head' runs there.\n")
    assert not out.exists() and not (tmp_path / "R.parquet.parts").exists()
    assert not ray.is_initialized()


def test_a_malformed_address_is_a_clear_error(capsys, tmp_path, features_file):
    assert main(["compute", "--features", str(features_file), "--ray", "not an address", "--out",
                 str(tmp_path / "R.parquet"), "--quiet"]) == 2
    assert "is not host:port, ray://host:port or 'auto'" in capsys.readouterr().err


def _joined(monkeypatch, gcs_address):
    """As if this process had called ``ray.init`` for the cluster at ``gcs_address``."""
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: types.SimpleNamespace(gcs_address=gcs_address))


def test_a_process_joined_to_another_cluster_is_refused(monkeypatch):
    _joined(monkeypatch, "10.0.0.5:6379")
    with pytest.raises(ValueError, match="already joined the Ray cluster at 10.0.0.5:6379, not 127.0.0.1:6379"):
        RayExecutor("127.0.0.1:6379")
    check_cluster("10.0.0.5:6379")  # the same cluster
    check_cluster(None)             # whichever this process joined
    RayExecutor(None)
