import os
import zipfile

import numpy as np
import pytest

from trainer.data.rows import RowFile, SpooledRows, npz_rows, write_npz
from trainer.errors import DataError


def test_spooled_rows_are_read_back_by_row_and_leave_no_file(tmp_path):
    rng = np.random.default_rng(0)
    pieces = [rng.integers(0, 256, (k, 3, 5, 5), dtype=np.uint8) for k in (4, 0, 7)]
    spool = SpooledRows(tmp_path, (3, 5, 5))
    for piece in pieces:
        spool.append(piece)
    whole = np.concatenate(pieces)
    assert len(spool) == 11 and list(tmp_path.iterdir()) == []  # anonymous: nothing to clean up after a crash
    assert np.array_equal(spool.take(np.array([10, 0, 5, 5])), whole[[10, 0, 5, 5]])
    with pytest.raises(IndexError):
        spool.take(np.array([11]))
    with pytest.raises(ValueError, match="expected"):
        spool.append(np.zeros((1, 3, 5, 4), np.uint8))
    spool.close()


def test_write_npz_is_what_np_load_and_npz_rows_read(tmp_path):
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 256, (9, 2, 3), dtype=np.uint8)
    spool = SpooledRows(tmp_path, (2, 3))
    spool.append(rows[:5])
    spool.append(rows[5:])
    labels = np.arange(9)
    write_npz(tmp_path / "x.npz", {"labels": labels, "images": spool, "empty": np.zeros(0, np.int64)})
    spool.close()
    with np.load(tmp_path / "x.npz", allow_pickle=False) as data:
        assert np.array_equal(data["images"], rows) and np.array_equal(data["labels"], labels)
        assert data["empty"].shape == (0,)
    with zipfile.ZipFile(tmp_path / "x.npz") as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    in_place = npz_rows(tmp_path / "x.npz", "images")
    assert in_place is not None and np.array_equal(in_place.take(np.array([8, 1])), rows[[8, 1]])
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]


def test_npz_rows_of_a_compressed_or_non_uint8_member_is_none(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", images=np.zeros((2, 3), np.uint8))
    np.savez(tmp_path / "f.npz", images=np.zeros((2, 3), np.float32))
    assert npz_rows(tmp_path / "c.npz", "images") is None and npz_rows(tmp_path / "f.npz", "images") is None


def test_row_file_reports_truncation_and_closes_its_descriptor(tmp_path):
    path = tmp_path / "rows.u8"
    path.write_bytes(bytes(range(30)))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(200):  # a reused worker opens thousands over its life
        rows = RowFile(path, (10,))
        assert rows.take(np.array([2]))[0].tolist() == list(range(20, 30))
        del rows
    assert len(os.listdir("/proc/self/fd")) <= before + 1
    with pytest.raises(DataError, match="truncated"):
        RowFile(path, (10,)).take(np.array([3]))
