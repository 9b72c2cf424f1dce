import pytest

from charrnn.core.config import Config, parse_duration
from charrnn.core.config_files import load_config, parse_set
from charrnn.core.errors import ConfigError


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\nhidden_size = 128\n[train]\nlr = 0.01\nbatch_size = 8\n")
    cfg = load_config(path, {"train.lr": 0.005})
    assert cfg.model.hidden_size == 128
    assert cfg.train.lr == 0.005 and cfg.train.batch_size == 8
    assert cfg.model.num_layers == Config().model.num_layers


def test_to_toml_round_trips(tmp_path):
    cfg = load_config(overrides={"model.cell": "gru", "train.max_time": "1h30m"})
    path = tmp_path / "out.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg


@pytest.mark.parametrize("overrides, message", [
    ({"model.hiden_size": 3}, "unknown config key model.hiden_size"),
    ({"trian.lr": 1.0}, r"unknown config section \[trian\]"),
    ({"train.lr": "fast"}, "train.lr must be of type float"),
    ({"train.batch_size": 2.5}, "train.batch_size must be of type int"),
    ({"train.compile": 1}, "train.compile must be of type bool"),
    ({"train.lr": 0.0}, "train.lr must be > 0"),
    ({"train.lr": -1.0}, "train.lr must be > 0"),
    ({"model.dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
    ({"model.hidden_size": 0}, "model.hidden_size must be > 0"),
    ({"train.seq_len": -5}, "train.seq_len must be > 0"),
    ({"model.cell": "transformer"}, "model.cell must be one of"),
    ({"train.device": "gpu"}, "train.device must be"),
    ({"train.max_time": "ten minutes"}, "train.max_time must be a duration"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_malformed_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model\nhidden_size = ")
    with pytest.raises(ConfigError, match="malformed TOML in .*bad.toml"):
        load_config(path)


def test_wrong_type_in_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[model]\nnum_layers = "two"\n')
    with pytest.raises(ConfigError, match="model.num_layers must be of type int"):
        load_config(path)


def test_parse_set():
    assert parse_set("train.lr=3e-4") == ("train.lr", 3e-4)
    assert parse_set("model.cell=gru") == ("model.cell", "gru")
    assert parse_set("train.compile=true") == ("train.compile", True)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_set("nonsense")


def test_parse_duration():
    assert parse_duration("90s") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("") == 0
    assert parse_duration("12") == 12


def test_command_line_flags_come_from_the_config_fields():
    from click.testing import CliRunner

    from charrnn.cli import main
    from charrnn.cli.train import _flag_overrides
    from charrnn.core.config import flags

    listed = flags()
    assert {f.key for f in listed} >= {"model.cell", "model.hidden_size", "train.lr",
                                       "train.max_time", "train.precision", "train.compile"}
    out = CliRunner().invoke(main, ["train", "--help"]).output
    for f in listed:
        assert f.flag in out, f.flag
    assert _flag_overrides({"model": "gru", "hidden_size": None, "max_time": "1m"}) == {
        "model.cell": "gru", "train.max_time": "1m"}
