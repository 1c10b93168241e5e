"""Every declared option (charrnn/config.py) accepts exactly its documented range, through the
API and the CLI. The cases are generated from the declarations, so options added later are
covered too."""
import math

import pytest
from click.testing import CliRunner

from charrnn import CharRNNError, ModelConfig, OptionError, SampleConfig, TrainConfig
from charrnn.config import ExportConfig, NoveltyConfig, ReportConfig, ServeConfig
from charrnn.cli.commands import main
from charrnn.options import Spec, check_value, declared
from charrnn.api import train_run
from conftest import tiny_config

CONFIGS = {"model": ModelConfig, "train": TrainConfig, "sample": SampleConfig,
           "report": ReportConfig, "novelty": NoveltyConfig, "serve": ServeConfig,
           "export": ExportConfig}


def bad_values(item):
    """Values outside the option's range: the edges, non-finite numbers, huge numbers."""
    spec, values = item.spec, []
    if item.type is float:
        values += [math.nan, math.inf, -math.inf]
    if item.type in (int, float) and not spec.choices:
        step = 1 if item.type is int else 1e-9
        if spec.low is not None:
            values.append(item.type(spec.low) if spec.low_open else item.type(spec.low - step))
        if spec.high is not None:
            values.append(item.type(spec.high) if spec.high_open else item.type(spec.high + step))
    if item.type is int:
        values += [1.5, "3"]                 # not whole numbers
    if spec.choices:
        values.append("no-such-choice")
    return values


def good_values(item):
    spec = item.spec
    if spec.choices:
        return list(spec.choices)
    values = [item.default] if item.default is not None else []
    if item.type in (int, float):
        if spec.low is not None and not spec.low_open:
            values.append(item.type(spec.low))
        if spec.high is not None and not spec.high_open:
            values.append(item.type(spec.high))
    return values


CASES = [(kind, item, value) for kind, cls in CONFIGS.items() for item in declared(cls)
         for value in bad_values(item)]
GOOD = [(kind, item, value) for kind, cls in CONFIGS.items() for item in declared(cls)
        for value in good_values(item)]


def _id(case):
    kind, item, value = case
    return f"{kind}.{item.name}={value!r}"


@pytest.mark.parametrize("kind, item, value", CASES, ids=map(_id, CASES))
def test_values_outside_the_range_are_refused_through_the_api(kind, item, value):
    config = CONFIGS[kind](**({"out": "somewhere"} if kind == "export" else {}))
    setattr(config, item.name, value)
    with pytest.raises(OptionError) as raised:
        config.validate()
    assert raised.value.name == item.name
    assert str(raised.value).startswith(f"{item.name} must be")


@pytest.mark.parametrize("kind, item, value", GOOD, ids=map(_id, GOOD))
def test_values_inside_the_range_are_accepted(kind, item, value):
    check_value(item, value)


def _cli_cases():
    cases = []
    for kind, item, value in CASES:
        if not item.spec.cli or isinstance(value, str) and value != "no-such-choice" \
                or item.type is int and isinstance(value, float) or item.type is bool:
            continue      # click's own type check covers these
        cases.append((kind, item, value))
    return cases


CLI_CASES = _cli_cases()


@pytest.mark.parametrize("kind, item, value", CLI_CASES, ids=map(_id, CLI_CASES))
def test_values_outside_the_range_are_one_line_errors_naming_the_flag(kind, item, value, corpus,
                                                                      tmp_path):
    text = "nan" if isinstance(value, float) and math.isnan(value) else str(value)
    if item.spec.parse is not None:           # durations: "0s", "inf" is no duration
        text = f"{value}s" if isinstance(value, (int, float)) and math.isfinite(value) else "inf"
    if kind in ("sample", "serve", "export"):      # checked before the run is looked for
        args = [kind, str(tmp_path / "no-run"), item.flag, text]
    elif kind == "report":
        args = ["viz", str(tmp_path / "no-run"), str(corpus), item.flag, text]
    else:
        args = ["train", str(corpus), "--out", str(tmp_path / "run"), item.flag, text]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert item.flag in lines[0] or "cannot read time" in lines[0] or \
        "time must be" in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_an_unknown_option_through_the_api_is_a_clear_error(corpus, tmp_path):
    from charrnn.api import train_config
    with pytest.raises(CharRNNError, match="unknown training option 'hidden'"):
        train_config(str(corpus), str(tmp_path / "run"), hidden=3)


def _another(item):
    if item.spec.choices:
        return next(c for c in item.spec.choices if c != item.default)
    if item.type is bool:
        return not item.default
    return item.default + (1 if item.type is int else 0.1)


def test_model_shape_cannot_change_on_resume_but_may_be_repeated(corpus, tmp_path):
    from charrnn.api import train_config
    fixed = [item for item in declared(ModelConfig) if item.spec.cli and not item.spec.on_resume]
    assert {"cell", "layers", "hidden_size", "expansion", "mlp_ratio"} <= {i.name for i in fixed}
    for item in fixed:             # no run saved yet: the saved values are the defaults
        with pytest.raises(OptionError, match="cannot change when a run is resumed"):
            train_config(str(corpus), str(tmp_path / "run"), resume=True,
                         **{item.name: _another(item)})
        if item.name not in ("expansion", "mlp_ratio"):          # (min cells only, below)
            config = train_config(str(corpus), str(tmp_path / "run"), resume=True,
                                  **{item.name: item.default})
            assert getattr(config.model, item.name) == item.default


@pytest.mark.parametrize("name, value", [("expansion", 2), ("mlp_ratio", 4), ("expansion", 1)])
def test_a_min_cell_option_given_to_another_cell_is_an_error_even_at_its_default(
        corpus, tmp_path, name, value):
    from charrnn.api import train_config
    with pytest.raises(OptionError, match=f"{name} applies to mingru and minlstm only, not gru"):
        train_config(str(corpus), str(tmp_path / "run"), cell="gru", **{name: value})
    config = train_config(str(corpus), str(tmp_path / "run"), cell="mingru", **{name: value})
    assert getattr(config.model, name) == value


def test_the_old_spellings_still_work():
    assert TrainConfig.from_dict({"clip": 0.5}).grad_clip == 0.5
    result = CliRunner().invoke(main, ["train", "--help"])
    assert "--grad-clip, --clip" in result.output


def test_only_limited_values_have_a_range_in_words():
    assert Spec("x", low=0, low_open=True).range_text() == "> 0"
    assert Spec("x", choices=("a", "b")).range_text() == "one of a, b"
    assert not Spec("x").bounded and Spec("x").range_text() == ""


def test_a_whole_number_for_a_float_option_trains(corpus, tmp_path):
    # From Python, beta1 = 0 is an int; torch's AdamW refuses betas of mixed types.
    config = tiny_config(tmp_path / "run", steps=2)
    config.beta1, config.lr = 0, 1
    train_run(str(corpus), config)
    assert (config.beta1, config.lr) == (0.0, 1.0)
    assert isinstance(config.beta1, float) and isinstance(config.lr, float)
