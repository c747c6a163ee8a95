"""The sequence number survives restarts and never goes back."""

from __future__ import annotations

from edgemon.state import SeqCounter


def test_seq_survives_restart(tmp_path):
    counter = SeqCounter(tmp_path)
    assert [counter.next() for _ in range(3)] == [1, 2, 3]
    again = SeqCounter(tmp_path)
    assert again.next() == 4
    assert (tmp_path / "seq").read_text() == f"{4:>20}\n", "one fixed-width record, rewritten in place"


def test_a_file_of_the_earlier_format_is_read_and_rewritten(tmp_path):
    (tmp_path / "seq").write_text("41\n")
    counter = SeqCounter(tmp_path)
    assert counter.next() == 42
    assert int((tmp_path / "seq").read_text()) == 42


def test_stdout_mode_continues_after_the_seq_an_mqtt_run_stored_in_the_buffer(make_agent, state_dir):
    from edgemon.buffer import Buffer

    buf = Buffer(state_dir / "buffer.db")
    buf.append("t", 500, b"{}")
    buf.close()
    assert make_agent().cycle()["seq"] == 501


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
