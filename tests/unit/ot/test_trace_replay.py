"""A real editing trace (bench/traces, CC BY 4.0) replayed through the OT core.

Every keystroke of ``sveltecomponent`` (19,749 patches) becomes a delta applied
to the document, one by one, composed in batches, and as wire JSON through
``Sequencer.submit``; each must end exactly at the trace's recorded final text.
"""

from __future__ import annotations

from pathlib import Path

from bench.ot_replay import (
    ascii_version,
    load,
    replay_apply,
    replay_composed,
    replay_sequencer,
    traces_dir,
    wire_ops,
)

from tandem.ot import Document


def test_the_vendored_traces_are_in_the_repository() -> None:
    folder = traces_dir()
    assert folder == Path(__file__).resolve().parents[3] / "bench" / "traces"
    names = sorted(path.name for path in folder.glob("*.json.gz"))
    assert names == ["automerge-paper.json.gz", "seph-blog1.json.gz", "sveltecomponent.json.gz"]
    assert "CC BY 4.0" in (folder / "README.md").read_text()


def test_sveltecomponent_replays_to_its_final_text() -> None:
    trace = load(traces_dir() / "sveltecomponent.json.gz")
    assert len(trace.patches) == 19_749
    for replay in (replay_apply, replay_composed):
        document = replay(trace)
        assert isinstance(document, Document)
        assert document.text() == trace.end
    # The server's path: wire JSON through Sequencer.submit.
    assert replay_sequencer(trace, wire_ops(trace)).text() == trace.end


def test_an_ascii_trace_is_its_own_ascii_version() -> None:
    trace = load(traces_dir() / "sveltecomponent.json.gz")
    assert ascii_version(traces_dir(), trace) is trace
    blog = load(traces_dir() / "seph-blog1.json.gz")
    assert ascii_version(traces_dir(), blog) is None  # non-ASCII, and no ascii_only/ here
