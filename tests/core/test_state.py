"""The sequence number survives restarts and never goes back."""

from __future__ import annotations

from edgemon.state import SeqCounter


def test_seq_survives_restart(tmp_path):
    counter = SeqCounter(tmp_path)
    assert [counter.next() for _ in range(3)] == [1, 2, 3]
    again = SeqCounter(tmp_path)
    assert again.next() == 4
    assert (tmp_path / "seq").read_text() == "4\n"


def test_corrupt_seq_file_restarts_at_zero_with_a_log(tmp_path, caplog):
    (tmp_path / "seq").write_text("garbage")
    assert SeqCounter(tmp_path).next() == 1
    assert "corrupt seq file" in caplog.text


def test_agent_seq_continues_across_agents(make_agent, pm):
    first = make_agent()
    assert [first.cycle()["seq"] for _ in range(2)] == [1, 2]
    first.close()
    second = make_agent()
    assert second.cycle()["seq"] == 3
