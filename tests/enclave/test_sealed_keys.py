"""Keys sealed under the root key: created once, exclusively (no link(): Gramine has none)."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

from healthid.enclave.sealed_keys import read_settled, write_new


def test_write_new_creates_once_with_the_mode_given(tmp_path: Path) -> None:
    path = tmp_path / "k.sealed.json"
    assert write_new(path, '{"a": 1}', 0o600) is True
    assert write_new(path, '{"a": 2}', 0o600) is False  # the first writer wins
    assert json.loads(path.read_text()) == {"a": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_reader_waits_for_a_key_file_another_process_is_still_writing(tmp_path: Path) -> None:
    path = tmp_path / "k.sealed.json"
    path.write_text('{"kid": "abc", "wrapp')  # created, not yet complete

    def finish() -> None:
        time.sleep(0.2)
        path.write_text('{"kid": "abc", "wrapped": "xyz"}')

    writer = threading.Thread(target=finish)
    writer.start()
    try:
        assert json.loads(read_settled(path)) == {"kid": "abc", "wrapped": "xyz"}
    finally:
        writer.join()


def test_a_file_that_never_completes_is_returned_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "k.sealed.json"
    path.write_text("not json")
    assert read_settled(path, attempts=2) == "not json"  # the caller refuses it
