import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from fmlab.data import idx as data
from fmlab.data.idx import DataError


def idx_bytes(arr: np.ndarray) -> bytes:
    """An independent IDX writer: magic 0x0000 08 ndim, big-endian dims, raw bytes."""
    return struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_reader_matches_an_independent_parse_of_the_real_files():
    for name in data.FILES:
        path = data.find_file(name)
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        magic, n = struct.unpack(">II", raw[:8])
        ndim = magic & 0xFF
        dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        ref = np.frombuffer(raw[4 + 4 * ndim :], np.uint8).reshape(dims)
        got = data.load_file(name)
        assert got.shape == ref.shape and np.array_equal(got, ref)


def test_check_reports_hashes_and_balanced_classes():
    rep = data.check()
    assert rep["ok"]
    labels = [f for f in rep["files"] if f["name"] == "train-labels-idx1-ubyte"][0]
    assert set(labels["per_class"].values()) == {6000}


def write_set(d: Path, gz: bool = True, **replace: bytes) -> None:
    """Copies of the real files (so hashes match) with some replaced."""
    d.mkdir(parents=True, exist_ok=True)
    for name in data.FILES:
        raw = replace.get(name) or data.read_bytes(data.find_file(name))
        (d / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw, 1) if gz else raw)


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    write_set(d, gz=False)
    return d


def test_raw_and_gz_both_read(good_dir):
    assert data.check(good_dir)["ok"]


@pytest.mark.parametrize("case", ["truncated", "magic", "hash", "labels", "count", "garbage_gz"])
def test_bad_files_name_the_file(tmp_path, good_dir, case):
    name = "train-labels-idx1-ubyte"
    good = (good_dir / name).read_bytes()
    for f in good_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    bad = {
        "truncated": good[:-100],
        "magic": b"\x00\x00\x09\x01" + good[4:],
        "hash": good[:-1] + bytes([(good[-1] + 1) % 10]),
        "labels": good[:-1] + b"\x0c",
        "count": idx_bytes(np.zeros(59_999, np.uint8)),
        "garbage_gz": b"\x1f\x8b" + b"not really gzip",
    }[case]
    (tmp_path / name).write_bytes(bad)
    with pytest.raises(DataError) as e:
        data.load_file(name, tmp_path)
    assert str(tmp_path / name) in str(e.value)


def test_missing_file_in_data_dir_names_it_and_the_fix(tmp_path):
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        data.find_file("t10k-images-idx3-ubyte", tmp_path)


def test_split_is_stratified_disjoint_and_fixed():
    from fmlab.config.schema import DataConfig

    a = data.load(DataConfig())
    assert (len(a.train), len(a.val), len(a.test)) == (55_000, 5_000, 10_000)
    assert set(np.bincount(a.val.y.numpy())) == {500}
    b = data.load(DataConfig())
    assert np.array_equal(a.val.x.numpy(), b.val.x.numpy())
    sub = data.load(DataConfig(train_subset=1000))
    assert len(sub.train) == 1000 and set(np.bincount(sub.train.y.numpy())) == {100}
    few = data.load(DataConfig(test_subset=2000))  # a stratified slice of the test set, the same every time
    assert len(few.test) == 2000 and set(np.bincount(few.test.y.numpy())) == {200}
    assert np.array_equal(few.test.x.numpy(), data.load(DataConfig(test_subset=2000)).test.x.numpy())
    rows = {x.tobytes() for x in a.test.x.numpy()}
    assert all(x.tobytes() in rows for x in few.test.x.numpy())  # test images, nothing else
    # no validation image is also a training image
    tr = {x.tobytes() for x in a.train.x.numpy()[:20000]}
    assert not any(x.tobytes() in tr for x in a.val.x.numpy())


def test_fetch_from_a_local_server_verifies_and_writes_atomically(tmp_path, good_dir):
    served = tmp_path / "served"
    write_set(served, gz=True)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}/"
    try:
        dest = tmp_path / "dest"
        paths = data.fetch(url, dest)
        assert sorted(p.name for p in paths) == sorted(n + ".gz" for n in data.FILES)
        assert data.check(dest)["ok"]
        # a corrupted upstream file: error, and nothing of it lands
        name = "t10k-labels-idx1-ubyte"
        raw = gzip.decompress((served / f"{name}.gz").read_bytes())
        (served / f"{name}.gz").write_bytes(gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 10])))
        dest2 = tmp_path / "dest2"
        with pytest.raises(DataError, match="SHA-256"):
            data.fetch(url, dest2)
        assert not (dest2 / f"{name}.gz").exists() and not list(dest2.glob(".*"))
        assert hashlib.sha256(gzip.decompress((dest / f"{name}.gz").read_bytes())).hexdigest() == data.FILES[name][0]
    finally:
        srv.shutdown()
