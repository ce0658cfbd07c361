"""What a study costs before it runs: the arithmetic by hand, the figures' sources named."""

from __future__ import annotations

import pytest
from study_helpers import tiny_spec, write_spec

from adaptseg.models import FCDiscriminator, build_generator
from study.run import main as run_main
from study.spec.arms import arm_config
from study.spec.loading import load_spec
from study.stages import cost


def test_asha_share_follows_the_rungs():
    spec = load_spec(write_spec_tmp({
        "scheduler": {"grace_period": 50, "reduction_factor": 3},
        "train": {"num_steps": 200, "schedule_steps": 200, "eval_every": 50},
    }))  # fmt: skip
    # Rungs at 50 and 150 of 200: every trial trains 50 steps, one in 3 the next 100, one in 9
    # the last 50.
    assert cost.asha_share(spec, 200) == pytest.approx((50 + 100 / 3 + 50 / 9) / 200)
    none = load_spec(write_spec_tmp({"scheduler": {"kind": "none"}}))
    assert cost.asha_share(none, 200) == 1.0


def write_spec_tmp(sections):
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    return write_spec(folder, tiny_spec(folder / "bench", **sections))


def test_a_checkpoint_holds_g_its_moments_and_each_d_with_adams_two():
    spec = load_spec(write_spec_tmp({}))
    cfg = arm_config(spec, "single_level")  # small backbone, Adam, single level, ndf 8
    model = build_generator(19, "small", False, 2)
    g_all = sum(t.numel() for t in model.state_dict().values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    d = sum(p.numel() for p in FCDiscriminator(19, 8).parameters())
    assert cost.checkpoint_bytes(cfg) == 4 * (g_all + 2 * trainable + 3 * d)


def test_stage_costs_are_trials_times_steps_and_evaluations():
    spec = load_spec(write_spec_tmp({"scheduler": {"kind": "none"}}))
    figure = cost.StepTime(step_s=0.5, image_s=0.1, device="cpu X", source="test")
    stages = cost.stage_costs(spec, {arm: figure for arm in spec.arms}, eval_images=8)
    # tiny_spec: 6 steps, an evaluation every 2 (3 of 8 images), 3 search trials per arm,
    # 2 confirm seeds; a confirm trial also scores 2 x 8 report images.
    trial = 6 * 0.5 + 3 * 8 * 0.1
    search = {c.stage: c for c in stages if c.stage.startswith("search")}
    assert search["search single_level"].hours_most == pytest.approx(3 * trial / 3600)
    (confirm,) = [c for c in stages if c.stage == "confirm"]
    assert confirm.trials == 2 * 2 and confirm.hours == pytest.approx(
        4 * (trial + 2 * 8 * 0.1) / 3600
    )
    keep = spec.checkpoint.num_to_keep
    per_trial = keep * cost.checkpoint_bytes(arm_config(spec, "single_level")) + 3 * (
        cost.RECORD_BYTES_PER_EVAL + cost.TABLE_BYTES_PER_EVAL
    )
    assert search["search single_level"].disk_bytes == 3 * per_trial


def test_the_dry_run_prices_the_study_with_a_calibration_naming_the_device(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec_path = write_spec(tmp_path, tiny_spec(tmp_path / "bench"))
    args = [str(spec_path), "--results", str(tmp_path / "results"), "--dry-run"]
    monkeypatch.setattr(cost, "RECORDED", tmp_path / "none.json")  # nothing recorded
    assert run_main(args) == 0
    out = capsys.readouterr().out
    assert "  no step time is known on this machine for arm(s) source_only, single_level" in out
    (total,) = [line for line in out.splitlines() if line.startswith("  total: ")]
    assert "device-hours unknown" in total and "of disk" in total  # disk needs no step time
    assert "  search single_level: 3 trials, device-hours unknown; " in out
    assert run_main([*args, "--calibrate"]) == 0
    out = capsys.readouterr().out
    (total,) = [line for line in out.splitlines() if line.startswith("  total: ")]
    assert "device-hours" in total and "of disk" in total
    (source,) = [line for line in out.splitlines() if line.startswith("  step times on ")]
    assert source.startswith("  step times on cpu ") and "(calibrated here on " in source
    assert run_main(args) == 0  # the calibration is kept for the next dry-run
    assert "(calibrated here on " in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_calibrate_is_refused_without_the_dry_run(tmp_path, capsys):
    spec_path = write_spec(tmp_path, tiny_spec(tmp_path / "bench"))
    assert run_main([str(spec_path), "--calibrate"]) == 2
    assert "--calibrate: expected with --dry-run" in capsys.readouterr().err
