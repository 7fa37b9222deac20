"""Input validation of the training options (luab_fast.train.config): YAML configs checked value by value as
argparse checks the command line, and validate()'s ranges. Every error names the option as the user wrote it."""

from __future__ import annotations

import dataclasses
import re

import pytest

from luab_fast.train.config import load_config


def _yaml(tmp_path, text: str, *argv: str):
    """load_config on a YAML file holding ``text``, plus command-line ``argv``."""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return load_config(["--config", str(path), *argv])


def _in_file(tmp_path, message: str) -> str:
    """The regex of a message about the YAML file that _yaml writes."""
    return re.escape(f"--config {tmp_path / 'run.yaml'}: {message}")


# ---- the file itself --------------------------------------------------------------------------------------------


def test_config_directory_is_not_called_missing(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"--config {tmp_path} is a directory, expected a YAML file")):
        load_config(["--config", str(tmp_path)])


def test_config_missing_file(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"--config {tmp_path / 'no.yaml'} does not exist")):
        load_config(["--config", str(tmp_path / "no.yaml")])


@pytest.mark.parametrize("text, kind", [("- lr\n- 0.1\n", "list"), ("- a\n", "list"), ("just a string\n", "str"),
                                        ("3\n", "int")])
def test_yaml_config_that_is_not_a_mapping(tmp_path, text, kind):
    with pytest.raises(ValueError, match=_in_file(tmp_path, f"expected a mapping of option: value, got a {kind}")):
        _yaml(tmp_path, text)


def test_yaml_config_syntax_error_names_the_line(tmp_path):
    with pytest.raises(ValueError, match=_in_file(tmp_path, "invalid YAML at line 2: mapping values are not allowed")):
        _yaml(tmp_path, "lr: 0.1\n  seed: 1\n")


def test_yaml_config_empty_file_is_the_defaults(tmp_path):
    cfg = _yaml(tmp_path, "# nothing yet\n")
    assert dataclasses.replace(cfg, config=None) == load_config([])


def test_yaml_config_cannot_name_another_config(tmp_path):
    with pytest.raises(ValueError, match=_in_file(tmp_path, "a config file cannot name another config")):
        _yaml(tmp_path, "config: other.yaml\n")


def test_yaml_config_option_given_twice_as_dash_and_underscore(tmp_path):
    with pytest.raises(ValueError, match=_in_file(tmp_path, "batch_size: option given twice")):
        _yaml(tmp_path, "batch-size: 8\nbatch_size: 16\n")


def test_yaml_config_unknown_option_still_an_error(tmp_path):
    with pytest.raises(ValueError, match=_in_file(tmp_path, "unknown option(s) ['True', 'bach_size']")):
        _yaml(tmp_path, "bach_size: 8\non: 1\n")  # an unquoted on: key is a YAML bool


def test_config_error_is_exit_code_2_not_a_traceback(tmp_path, capsys):
    from luab_fast.train.run import main

    assert main(["--config", str(tmp_path)]) == 2
    assert f"error: --config {tmp_path} is a directory" in capsys.readouterr().err


# ---- each value against its field's type --------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ('batch_size: "eight"', "batch_size: expected an integer, got 'eight' (str)"),
    ("seed: true", "seed: expected an integer, got True (bool)"),
    ("epochs: 2.5", "epochs: expected an integer, got 2.5 (float)"),
    ("lr: fast", "lr: expected a number, got 'fast' (str)"),
    ("lr: [0.1]", "lr: expected a number, got [0.1] (list)"),
    ("lambda-heat: false", "lambda-heat: expected a number, got False (bool)"),
    ("model: 3", "model: expected a string, got 3 (int)"),
    ("model: null", "model: expected a string, got null"),
    ("data: [a, b]", "data: expected a string, got ['a', 'b'] (list)"),
    ('compare: "maybe"', "compare: expected true or false, got 'maybe' (str)"),
    ("strict: 1", "strict: expected true or false, got 1 (int)"),
    ("val_data: [a=X, 3]", "val_data: expected a string or a list of strings, got ['a=X', 3] (list)"),
    ("val_data: {a: X}", "val_data: expected a string or a list of strings, got {'a': 'X'} (dict)"),
    ("pool: foo", "pool: expected one of avg, attention, got 'foo'"),
    ("baseline_pool: max", "baseline_pool: expected one of avg, attention, got 'max'"),
    ("compile: maybe", "compile: expected one of auto, on, off, got 'maybe'"),
    ("demo-size: huge", "demo-size: expected one of default, tiny, got 'huge'"),
])
def test_yaml_config_value_of_the_wrong_type(tmp_path, text, message):
    with pytest.raises(ValueError, match=_in_file(tmp_path, message)):
        _yaml(tmp_path, text + "\n")


@pytest.mark.parametrize("text, name, value", [
    ("lr: 1e-3", "lr", 0.001),  # PyYAML (YAML 1.1) reads 1e-3 without a dot as a string
    ('lr: "2.5e-4"', "lr", 2.5e-4),
    ("weight_decay: 0", "weight_decay", 0.0),
    ('seed: "1"', "seed", 1),
    ('max-steps: "5"', "max_steps", 5),
    ("max_steps: null", "max_steps", None),
    ("workers: ~", "workers", None),
    ("val_data: some/dir", "val_data", ["some/dir"]),
    ("val_data: [a=X, b=Y]", "val_data", ["a=X", "b=Y"]),
    ("compile: on", "compile", "on"),  # YAML 1.1 reads an unquoted on as true
    ("compile: off", "compile", "off"),
    ("compile: auto", "compile", "auto"),
    ('compare: "false"', "compare", False),
    ('compare: "Off"', "compare", False),
    ("compare: no", "compare", False),
    ('resume: "yes"', "resume", True),
    ("deterministic: true", "deterministic", True),
])
def test_yaml_config_value_converted_as_on_the_command_line(tmp_path, text, name, value):
    got = getattr(_yaml(tmp_path, text + "\n"), name)
    assert got == value and type(got) is type(value)


def test_yaml_config_with_every_kind_of_field(tmp_path):
    cfg = _yaml(tmp_path, "data: imgs\nval-data: [iid=a, ood=b]\nbackend: null\nmodel: resnet18\npool: avg\n"
                          "output_stride: 32\nepochs: 2\nmax_steps: 7\nlr: 0.01\nheat-sigma: 2\ncompare: false\n"
                          "out: runs/x\nseed: 3\ncompile: off\ndevice: cpu\nworkers: 2\ndemo_size: tiny\n")
    assert (cfg.data, cfg.val_data, cfg.backend, cfg.model, cfg.pool) == ("imgs", ["iid=a", "ood=b"], None,
                                                                           "resnet18", "avg")
    assert (cfg.output_stride, cfg.epochs, cfg.max_steps, cfg.lr, cfg.heat_sigma) == (32, 2, 7, 0.01, 2.0)
    assert (cfg.compare, cfg.out, cfg.seed, cfg.compile, cfg.device, cfg.workers, cfg.demo_size) == (
        False, "runs/x", 3, "off", "cpu", 2, "tiny")
    assert isinstance(cfg.heat_sigma, float)


def test_yaml_config_command_line_overrides_the_file(tmp_path):
    cfg = _yaml(tmp_path, "batch_size: 8\nlr: 1e-3\ncompare: false\nval_data: x=X\npool: avg\n",
                "--batch-size", "16", "--compare", "--val-data", "y=Y", "--pool", "attention")
    assert (cfg.batch_size, cfg.compare, cfg.val_data, cfg.pool) == (16, True, ["y=Y"], "attention")
    assert cfg.lr == 0.001 and cfg.epochs == 3  # from the file, and the default


# ---- validate(): ranges, on the command line and from a file ------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--warmup-steps", "-1"], "--warmup-steps must be >= 0, got -1"),
    (["--heat-sigma", "0"], "--heat-sigma must be > 0, got 0.0"),
    (["--heat-sigma", "-1"], "--heat-sigma must be > 0, got -1.0"),
    (["--lr", "nan"], "--lr must be finite, got nan"),
    (["--out", ""], "--out must not be empty, got ''"),
    (["--out", "  "], "--out must not be empty, got '  '"),
    # checks that were there before stay
    (["--lr", "-1"], "--lr must be >= 0, got -1.0"),
    (["--crop-scale", "1.5"], "--crop-scale must be in (0, 1], got 1.5"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1), got 1.0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda, got 'tpu'"),
])
def test_config_out_of_range(argv, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(argv)


@pytest.mark.parametrize("option", ["--lr", "--weight-decay", "--lambda-point", "--lambda-heat", "--heat-sigma",
                                    "--label-smoothing", "--crop-scale"])
def test_config_float_option_must_be_finite(option):
    with pytest.raises(ValueError, match=re.escape(f"{option} must be finite, got inf")):
        load_config([option, "inf"])


def test_yaml_config_values_are_validated_too(tmp_path):
    with pytest.raises(ValueError, match=re.escape("--lr must be finite, got inf")):
        _yaml(tmp_path, "lr: .inf\n")
    with pytest.raises(ValueError, match=re.escape("--seed must be >= 0, got -2")):
        _yaml(tmp_path, "seed: -2\n")


def test_config_edges_that_are_fine():
    cfg = load_config(["--seed", "0", "--warmup-steps", "0", "--heat-sigma", "0.01", "--out", "o"])
    assert (cfg.seed, cfg.warmup_steps, cfg.heat_sigma, cfg.out) == (0, 0, 0.01, "o")
