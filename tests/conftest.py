"""Fixtures shared by several test files (kept small; none is autouse)."""
import pytest


@pytest.fixture
def private_data_dirs(tmp_path, monkeypatch):
    """Point the download folder and the decode cache at tmp_path, never at the user's home."""
    monkeypatch.setenv("MINIVIT_DATA", str(tmp_path / "data_home"))
    monkeypatch.setenv("MINIVIT_CACHE", str(tmp_path / "decode_cache"))
    return tmp_path


@pytest.fixture
def restore_kernel_choices():
    """Undo process-wide `kernels.select(...)` choices a test (or a Trainer's --kernels) makes."""
    from kernels import registry

    saved = dict(registry._SELECTED)
    yield
    registry._SELECTED.clear()
    registry._SELECTED.update(saved)
