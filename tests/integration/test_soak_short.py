"""A short run of the fault soak (``make soak`` is the full one): every fault type,
and afterwards every job terminal, none lost, no side effect run twice."""

from tests.support.soak import FAULTS, SoakConfig, run_soak


def test_a_short_fault_soak_loses_nothing_and_runs_nothing_twice(tmp_path):
    config = SoakConfig(jobs=40, faults=15, workers=2, concurrency=2, fault_every_s=1.5, drain_timeout_s=240)
    report = run_soak(tmp_path, config, log=lambda line: None)
    print("\n".join(report.lines()))
    assert set(report.faults) == set(FAULTS) and sum(report.faults.values()) >= config.faults
    assert report.lost == 0 and report.stuck == 0, report.lines()
    assert report.duplicates == 0 and report.double_commits == 0 and report.unaccounted == 0, report.lines()
    assert sum(report.by_status.values()) == config.jobs
