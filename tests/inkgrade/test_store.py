"""The exam store: optimistic versions, the append-only audit, and machine refreshes that keep reviews."""

from __future__ import annotations

import sqlite3

import pytest

from inkbase.errors import InputError
from inkgrade.store import ExamStore, StaleVersion


@pytest.fixture
def store(tmp_path):
    s = ExamStore.open(tmp_path, create=True)
    s.upsert_students([{"student_id": "s1", "name": "Ana"}])
    s.upsert_questions([{"question_id": "Q1", "position": 0, "max_points": 4, "granularity": 0.5}])
    s.put_item({"answer_id": "s1:Q1", "student_id": "s1", "question_id": "Q1", "ai_points": 2.5, "max_points": 4,
                "risk": 0.7, "risk_reason": "partial credit"})
    yield s
    s.close()


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="exam.sqlite: not found"):
        ExamStore.open(tmp_path / "nowhere")


def test_review_bumps_the_version_and_a_stale_write_changes_nothing(store):
    item = store.set_points("s1:Q1", 3.0, version=1, who="tester")
    assert (item.points, item.status, item.version) == (3.0, "reviewed", 2)
    with pytest.raises(StaleVersion):
        store.set_points("s1:Q1", 0.0, version=1, who="other")
    assert store.item("s1:Q1").points == 3.0
    assert [(a["old_points"], a["new_points"], a["who"]) for a in store.audit("s1:Q1")] == [(None, 3.0, "tester")]


def test_machine_refresh_keeps_the_reviewed_points(store):
    store.set_points("s1:Q1", 3.0, version=1, who="tester")
    store.put_item({"answer_id": "s1:Q1", "student_id": "s1", "question_id": "Q1", "ai_points": 1.0, "max_points": 4})
    item = store.item("s1:Q1")
    assert (item.ai_points, item.points, item.version) == (1.0, 3.0, 2)
    assert store.final_points() == {("s1", "Q1"): 3.0}


def test_audit_rows_cannot_be_changed(store):
    store.set_points("s1:Q1", 3.0, version=1, who="tester")
    with pytest.raises(sqlite3.DatabaseError, match="never changed"):
        store.conn.execute("UPDATE audit SET new_points = 0")
    with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
        store.conn.execute("DELETE FROM audit")


def test_a_second_connection_sees_every_acknowledged_change(store, tmp_path):
    store.set_points("s1:Q1", 3.5, version=1, who="tester")
    with ExamStore.open(tmp_path) as other:
        assert other.item("s1:Q1").points == 3.5
