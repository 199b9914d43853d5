"""Reading a batch file for ``renderfarm batch submit`` (pure)."""

from __future__ import annotations

import json

import pytest

from renderfarm.cli.batch import read_batch
from renderfarm.cli.params import ParamError


def test_json_lines_and_a_json_array_give_the_same_jobs():
    jobs = [{"kind": "probe", "input": "https://media.example/a.mp4"}, {"kind": "probe", "input": "/data/b.mp4"}]
    lines = "\n".join(json.dumps(job) for job in jobs) + "\n\n"
    assert read_batch(lines) == read_batch(json.dumps(jobs))
    assert read_batch(lines)[1]["input"] == "file:///data/b.mp4"


def test_a_relative_path_is_resolved_against_the_files_folder():
    assert read_batch('{"kind": "probe", "input": "clips/a.mp4"}', cwd="/srv/in")[0]["input"] == \
        "file:///srv/in/clips/a.mp4"


@pytest.mark.parametrize("text, says", [("", "no jobs"), ("[1, 2]", "job 0"), ('{"kind": "probe"}\nnot json', "line 2"),
                                        ("[{", "JSON array")])
def test_a_broken_file_names_the_problem(text, says):
    with pytest.raises(ParamError, match=says):
        read_batch(text)


def test_the_live_line_counts_what_ended_and_a_batch_is_done_when_nothing_is_active():
    from renderfarm.cli.batch import batch_finished, batch_line

    running = {"id": "b1", "count": 4, "counts": {"queued": 1, "running": 1, "retrying": 0, "succeeded": 1,
                                                  "failed": 1, "cancelled": 0}}
    line = batch_line(running, width=8).plain
    assert line.startswith("b1  ████░░░░  2/4  ") and "queued 1 · running 1 · succeeded 1 · failed 1" in line
    assert "retrying" not in line and not batch_finished(running)
    ended = running | {"counts": {"succeeded": 2, "failed": 1, "expired": 1}}
    assert batch_finished(ended) and "4/4" in batch_line(ended).plain
