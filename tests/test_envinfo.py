"""``d2lopt env``'s recommendations: starting points, consistent with the course's measurements."""

from __future__ import annotations

import pytest

from d2lopt import TrainConfig
from d2lopt.envinfo import environment_report, format_report, recommend_settings, recommend_workers


def _report(cores: int, **changes) -> dict:
    """This machine's report with another core count (what the recommendation depends on)."""
    return environment_report() | {"cpu_cores": cores} | changes


@pytest.mark.parametrize(
    ("cores", "workers"), [(1, 0), (2, 0), (3, 1), (4, 2), (8, 4), (64, 32)]
)  # fmt: skip
def test_workers_need_a_spare_core(cores: int, workers: int) -> None:
    # on 1-2 cores the training step keeps every core busy: 05's sweeps find workers do not
    # help there; beyond that, the article's half-the-cores rule (C8) as the starting point
    assert recommend_workers(cores) == workers
    assert recommend_settings(_report(cores))["num_workers"] == workers


@pytest.mark.parametrize("cores", [1, 2, 4, 16])
def test_recommendations_make_a_valid_train_config(cores: int) -> None:
    rec = recommend_settings(_report(cores))
    fields = set(TrainConfig.field_names())
    config = TrainConfig(**{k: v for k, v in rec.items() if k in fields})  # validates
    assert (config.prefetch_factor is None) == (config.num_workers == 0)
    assert config.persistent_workers == (config.num_workers > 0)


@pytest.mark.parametrize("cores", [0, -1, 2.0, True, None])
def test_recommend_workers_rejects_a_bad_core_count(cores) -> None:
    with pytest.raises(ValueError, match="cores: must be"):
        recommend_workers(cores)


def test_text_report_says_the_settings_are_a_starting_point_to_measure() -> None:
    two = _report(2)
    text = format_report(two, recommend_settings(two))
    assert "rules of thumb, not measurements" in text
    assert "d2lopt tune-loader --dataset" in text
    assert "--num-workers         0 (no spare core among 2" in text
    assert "--prefetch-factor     - (needs workers)" in text
    eight = _report(8)
    text = format_report(eight, recommend_settings(eight))
    assert "--num-workers         4 (half the 8 cores" in text
    assert "--prefetch-factor     2\n" in text
