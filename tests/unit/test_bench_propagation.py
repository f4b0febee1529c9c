"""``python -m bench``'s table: who is compared with whom, and how repeats are counted."""

from __future__ import annotations

from typing import Any

from bench.propagation import cpu_times, markdown, rows, scaled, steal_share, table, verdicts


def run(
    repeat: int, p99: float, cpu: float, *, lost: int = 0, delivered: int = 1000
) -> dict[str, Any]:
    return {
        "repeat": repeat,
        "clients": 10_000,
        "docs": 1000,
        "connected": 10_000,
        "p50": p99 / 4,
        "p95": p99 / 2,
        "p99": p99,
        "p999": p99 * 2,
        "max": p99 * 3,
        "delivered": delivered,
        "lost": lost,
        "serverCpu": cpu,
        "serverRss": 100 * 2**20,
        "generatorCpu": 1.0,
    }


RUNS = {
    "tandem-pg": [run(0, 10, 1.0), run(1, 30, 3.0), run(2, 10, 1.0)],
    "tandem-memory": [run(0, 5, 0.5), run(1, 5, 0.5)],
    "sharedb-pg": [run(2, 5, 2.0), run(0, 40, 2.0), run(1, 20, 2.0)],
    "hocuspocus": [run(0, 4, 0.4), run(1, 6, 0.6)],
    "relay": [run(0, 1, 0.1)],
}


def test_durable_peers_face_durable_tandem_and_in_memory_peers_in_memory_tandem() -> None:
    by_name = {row.name: row for row in rows(RUNS)}
    assert list(by_name) == ["tandem-memory", "tandem-pg", "relay", "sharedb-pg", "hocuspocus"]
    assert by_name["sharedb-pg"].versus == "tandem-pg"
    assert by_name["hocuspocus"].versus == "tandem-memory"
    assert by_name["tandem-pg"].versus == ""
    # Medians: tandem-pg p99 10 vs 20; CPU per 1,000 deliveries 1.0 vs 2.0.
    assert by_name["sharedb-pg"].p99_ratio == 0.5
    assert by_name["sharedb-pg"].cpu_ratio == 0.5
    assert by_name["sharedb-pg"].p999 == 40 and by_name["sharedb-pg"].max == 60
    assert by_name["sharedb-pg"].each == "5/15 40/120 20/60"


def test_wins_pair_runs_of_the_same_repeat_not_the_same_position() -> None:
    by_name = {row.name: row for row in rows(RUNS)}
    # sharedb-pg's runs are listed out of order: by position tandem-pg's p99 would be lower
    # twice (10 < 5? 30 < 40, 10 < 20); by repeat only in repeat 0 (10 < 40).
    assert by_name["sharedb-pg"].p99_wins == "1/3"
    assert by_name["sharedb-pg"].cpu_wins == "2/3"
    # Only repeats both measured count: the relay ran once.
    assert by_name["relay"].p99_wins == "0/1"
    assert by_name["hocuspocus"].p99_wins == "1/2"


def test_a_peer_without_its_tandem_falls_back_to_the_default_one() -> None:
    runs = {"tandem": [run(0, 10, 1.0)], "sharedb-pg3": [run(0, 5, 1.0)]}
    assert {row.name: row.versus for row in rows(runs)} == {"tandem": "", "sharedb-pg3": "tandem"}
    assert {row.name: row.versus for row in rows({"sharedb": [run(0, 5, 1)]})} == {"sharedb": ""}


def test_the_ten_thousand_editor_bar_needs_the_p99_and_nothing_lost() -> None:
    runs = {"tandem": [run(0, 40, 1.0), run(1, 60, 1.0), run(2, 40, 1.0, lost=1)]}
    assert verdicts("10000c-1000d", runs) == ["tandem: p99 < 50 ms with 0 lost in 1 of 3 runs"]
    assert verdicts("200c-20t", runs) == []
    assert "p99 < 50 ms with 0 lost in 1 of 3 runs" in table("10000c-1000d", runs)
    assert "| tandem | 10000 |" in markdown({"10000c-1000d": runs})


def test_a_scaled_scenario_keeps_its_shape() -> None:
    spec = {"clients": 10_000, "typists": 1, "rate": 1, "docs": 1000, "connect-rate": 500}
    assert scaled(spec, 1) is spec
    assert scaled(spec, 0.05) == {**spec, "clients": 500, "docs": 50}
    # Never fewer clients than a typist and a reader per document.
    assert scaled({"clients": 200, "typists": 20, "rate": 5, "docs": 1}, 0.01)["clients"] == 21


def test_host_steal_is_the_share_of_all_cpu_time_between_two_readings() -> None:
    # /proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice
    before = cpu_times("cpu  100 0 50 800 10 0 0 40 7 0\ncpu0 50 0 25 400 5 0 0 20 0 0\n")
    after = cpu_times("cpu  160 0 70 900 10 0 0 100 9 0\ncpu0 80 0 35 450 5 0 0 50 0 0\n")
    assert before == (40, 1000) and after == (100, 1240)
    assert steal_share(before, after) == 60 / 240
    assert steal_share(None, after) is None
    assert steal_share(after, after) is None  # no time passed: no share, not a division by zero
    assert cpu_times("intr 1 2 3\n") is None
