"""The ``recalibrated`` measurement: the channel-shuffle control with batch-norm statistics re-estimated."""
import pandas as pd
import pytest

from stabkit import runs
from stabkit.runs.measurements import MEASUREMENT_FACTS, check_options

TINY = dict(task="twopoints", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25, batch_size=32,
            shuffles=(0, 1), measure=("output", "layers", "recalibrated"))


def _run(tmp_path, **kw):
    cfg = runs.RunConfig(**{**TINY, **kw})
    path = runs.run(cfg, tmp_path, device="cpu", progress=False)
    return cfg, path, pd.read_parquet(path / "layers.parquet"), pd.read_parquet(path / "recalibrated.parquet")


def test_without_batchnorm_the_rows_are_those_of_layers(tmp_path):
    _, _, lay, rec = _run(tmp_path, net="LeNet")
    assert not rec.batchnorm.any() and (rec.images == 0).all() and not rec.recalibrated.any()
    cols = ["state", "shuffle", "layer", "D_f", "G_f", "R_f"]
    pd.testing.assert_frame_equal(rec[cols].reset_index(drop=True), lay[cols].reset_index(drop=True))


def test_batchnorm_net_is_measured_with_recalibrated_running_statistics(tmp_path):
    cfg, path, lay, rec = _run(tmp_path, net="VGG11bn", options={"recalibrated": {"images": 48}})
    assert rec.batchnorm.all() and set(rec.recalibrated) == {False, True}
    assert (rec.images == rec.recalibrated * 48).all()
    # the same network measured as `layers` does comes with the control: one network compared with itself
    cols = ["state", "shuffle", "layer", "D_f", "G_f", "R_f"]
    plain = rec[~rec.recalibrated]
    pd.testing.assert_frame_equal(plain[cols].reset_index(drop=True), lay[cols].reset_index(drop=True))
    rec = rec[rec.recalibrated]
    assert sorted(set(zip(rec.state, rec.shuffle))) == [("init", 0), ("init", 1), ("trained", 0), ("trained", 1)]
    assert rec.test_err.between(0, 1).all()
    # at init `layers` uses batch statistics, `recalibrated` running statistics: the numbers differ
    key = ["state", "shuffle", "layer"]
    both = lay.merge(rec, on=key, suffixes=("", "_rec"))
    init = both[both.state == "init"]
    assert len(init) and not (init.R_f - init.R_f_rec).abs().lt(1e-12).all()
    # deterministic: measuring again gives the same table
    again = runs.remeasure(path, measure=["recalibrated"], device="cpu", out_dir=tmp_path / "re")
    pd.testing.assert_frame_equal(again["recalibrated"], pd.read_parquet(path / "recalibrated.parquet"),
                                  check_like=True)


def test_the_measurement_declares_its_table_and_checks_its_options():
    assert MEASUREMENT_FACTS["recalibrated"].tables == ("recalibrated",)
    assert not MEASUREMENT_FACTS["recalibrated"].grad
    with pytest.raises(ValueError, match="options.recalibrated.images"):
        check_options({"recalibrated": {"images": 1}})
    with pytest.raises(ValueError, match="unknown key"):
        check_options({"recalibrated": {"n": 5}})
