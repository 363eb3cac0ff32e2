"""engine.runtime.usage's pure parts: the CPU percentage between two samples."""

from engine.runtime.usage import cpu_percent


def test_cpu_percent_is_busy_time_over_elapsed_time() -> None:
    before = {"cpu_ns": 1_000, "sampled_ns": 10_000}
    assert cpu_percent(before, {"cpu_ns": 501_000, "sampled_ns": 1_010_000}) == 50.0
    assert cpu_percent(before, {"cpu_ns": 2_001_000, "sampled_ns": 1_010_000}) == 200.0
    assert cpu_percent(before, {"cpu_ns": 1_000, "sampled_ns": 10_000}) == 0.0
    assert cpu_percent(before, {"cpu_ns": 0, "sampled_ns": 20_000}) == 0.0  # counter reset
