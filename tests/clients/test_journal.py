"""The bridge's pure parts: journal on disk, reconnect policy, phone state (no event loop)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clients.bridge.journal import Journal, JournalCorrupt, JournalFull, JournalLocked
from clients.bridge.phonestate import Applied, PhoneState


def frames(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"ts": 1_700_000_000_000 + i, "hr": 60.0 + i % 40} for i in range(start, start + n)]


def test_journal_replays_unacked_frames_and_cursor_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Journal(path) as journal:
        ids = journal.append(frames(5), {"offset": 50})
        journal.append(frames(3, 5), {"offset": 80})
        journal.ack(ids[:4])
    with Journal(path) as journal:
        assert [f["ts"] for _, f in journal.pending()] == [f["ts"] for f in frames(4, 4)]
        assert journal.cursor == {"offset": 80}
        new = journal.append(frames(1, 8))
        assert new[0] > ids[-1] + 3  # ids are never reused


def test_journal_cuts_a_torn_last_line_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Journal(path) as journal:
        journal.append(frames(2), {"offset": 1})
    with path.open("ab") as file:
        file.write(b'{"op": "add", "ids": [3], "fra')  # the crash came mid-write
    with Journal(path) as journal:
        assert len(journal) == 2
        assert journal.cursor == {"offset": 1}
        journal.append(frames(1, 2))
    with Journal(path) as journal:
        assert len(journal) == 3


def test_journal_refuses_damage_before_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b'garbage\n{"op": "base", "next_id": 1, "cursor": null}\n')
    with pytest.raises(JournalCorrupt):
        Journal(path).open()


def test_journal_compacts_to_the_pending_frames(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Journal(path, compact_bytes=1024, compact_after=3) as journal:
        for i in range(20):
            journal.ack(journal.append(frames(5, i * 5), {"i": i}))
        keep = journal.append(frames(2, 100), {"i": 20})
        assert journal.compactions >= 3
        size_with_pending = path.stat().st_size
    assert size_with_pending < 1024
    with Journal(path) as journal:
        assert [i for i, _ in journal.pending()] == keep
        assert journal.cursor == {"i": 20}


def test_journal_is_bounded(tmp_path: Path) -> None:
    with Journal(tmp_path / "j", max_pending=10) as journal:
        journal.append(frames(8))
        with pytest.raises(JournalFull):
            journal.append(frames(3, 8))
        assert journal.room == 2


def test_a_second_process_cannot_open_a_journal_in_use(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Journal(path):
        with pytest.raises(JournalLocked):
            Journal(path).open()
        code = (
            "import sys; from pathlib import Path; from clients.bridge.journal import Journal, "
            "JournalLocked\ntry: Journal(Path(sys.argv[1])).open()\n"
            "except JournalLocked: sys.exit(7)"
        )
        child = subprocess.run(
            [sys.executable, "-c", code, str(path)], env={**os.environ}, timeout=30
        )
        assert child.returncode == 7


def snapshot(version: int, state_hash: str, **fields: object) -> dict[str, object]:
    return {
        "op": "snapshot",
        "user_id": "u",
        "version": version,
        "state_hash": state_hash,
        "state": "calm",
        "mood": "content",
        "energy": 70,
        "image_url": None,
        **fields,
    }


def test_a_delta_applies_only_on_its_base_version() -> None:
    phone = PhoneState()
    assert phone.apply_delta({"version": 1, "base": 0, "state_hash": "a", "changes": {}}) is (
        Applied.GAP
    )
    assert phone.apply_snapshot(snapshot(3, "h3"))
    delta = {"version": 4, "base": 3, "state_hash": "h4", "changes": {"mood": "anxious"}, "t": 9}
    assert phone.apply_delta(delta) is Applied.APPLIED
    assert (phone.version, phone.state_hash, phone.fields["mood"]) == (4, "h4", "anxious")
    assert phone.apply_delta(delta) is Applied.STALE
    skipped = {"version": 6, "base": 5, "state_hash": "h6", "changes": {"mood": "happy"}}
    assert phone.apply_delta(skipped) is Applied.GAP
    assert phone.version == 4
    coalesced = {"version": 6, "base": 4, "state_hash": "h6", "changes": {"mood": "happy"}}
    assert phone.apply_delta(coalesced) is Applied.APPLIED


def test_phone_state_survives_a_save_and_load() -> None:
    phone = PhoneState()
    phone.apply_snapshot(snapshot(7, "h7", image_url="/media/x.png"))
    again = PhoneState.from_json(phone.to_json())
    assert again.view() == phone.view()
    assert not again.apply_snapshot(snapshot(7, "h7"))  # same hash: nothing to show
    with pytest.raises(ValueError):
        PhoneState.from_json(b"[]")
