"""``bench.profile_path``: how py-spy's stacks are charged to the parts of the path."""

from __future__ import annotations

from bench.profile_path import charge, parse, perf_objects, syscalls

RAW = "\n".join(
    [
        # The loop itself (uvloop's C code shows as asyncio.run's frame).
        "main (tandem/cli.py:1);Runner.run (asyncio/runners.py:118) 5",
        # A commit that encodes: encoding by leaf, inside the commit inclusively.
        "Runner.run (asyncio/runners.py:118);GroupCommitter._write (tandem/session/commit.py:138);"
        "MemoryStore.append (tandem/storage/memory.py:115);"
        "encode_delta (tandem/storage/codec.py:31) 2",
        # A generic frame at the leaf is charged to the first frame above it with a part.
        "Runner.run (asyncio/runners.py:118);Replica.apply (tandem/merge/replica.py:80);"
        "__init__ (<string>:3);__eq__ (enum.py:200) 2",
        # The per-member queue of the gateway is fan-out.
        "Runner.run (asyncio/runners.py:118);Connection.send (tandem/server/collab.py:300) 1",
        "not a stack line",
    ]
)


def test_samples_are_charged_by_leaf_and_inclusively() -> None:
    stacks = parse(RAW)
    assert len(stacks) == 4
    by_leaf, inclusive, functions, total = charge(stacks)
    assert total == 10
    assert by_leaf["event loop and hand-offs (uvloop, tasks, futures, events)"] == 5
    assert by_leaf["encoding and parsing"] == 2
    assert by_leaf["commit (group committer, store)"] == 0
    assert inclusive["commit (group committer, store)"] == 2
    assert by_leaf["replica (Yjs mirror)"] == 2
    assert functions["__eq__ (enum.py)"] == 0 and functions["Replica.apply (replica.py)"] == 2
    assert by_leaf["fan-out (delivery core, per-member queue, per-tick flush)"] == 1
    assert sum(by_leaf.values()) == total


def test_strace_summaries_are_read_per_system_call() -> None:
    summary = "\n".join(
        [
            "% time     seconds  usecs/call     calls    errors syscall",
            "------ ----------- ----------- --------- --------- ----------------",
            " 70.01    0.304127          73      4163       406 futex",
            " 10.71    0.046529          97       478           fdatasync",
            "  0.00    0.000000           0         1           brk",
            "------ ----------- ----------- --------- --------- ----------------",
            "100.00    0.434431          19      4642       406 total",
        ]
    )
    assert syscalls(summary) == {"futex": 4163, "fdatasync": 478, "brk": 1}


def test_perf_reports_are_read_per_kind_of_object() -> None:
    report = "\n".join(
        [
            "# Overhead  Shared Object        Symbol",
            "    23.50%  libpython3.11.so.1.0  [.] _PyEval_EvalFrameDefault",
            "     8.10%  [kernel.kallsyms]     [k] finish_task_switch.isra.0",
            "     0.44%  [JIT] tid 18953       [.] 0x00007f3d840c538d",
            "     0.60%  loop.cpython-311-x86_64-linux-gnu.so  [.] __pyx_f_6uvloop_write",
            "     0.20%  libfoo.so             [.] bar",
        ]
    )
    shares, symbols = perf_objects(report)
    assert shares == {
        "CPython interpreter": 23.5,
        "kernel (system calls, TCP loopback, scheduling)": 8.1,
        "Node.js (V8, its JIT code)": 0.44,
        "uvloop and libuv": 0.6,
        "other": 0.2,
    }
    assert symbols[0] == (23.5, "libpython3.11.so.1.0", "_PyEval_EvalFrameDefault")
