from dataclasses import dataclass

import pytest

from lib.config import ParamsError, deep_merge, from_dict, load_section


@dataclass(frozen=True)
class Loss:
    lambda_: float = 0.0
    objective: str = "additive"
    names: tuple[str, ...] = ()
    path: str | None = None


def test_unknown_key_fails_and_names_it():
    with pytest.raises(ParamsError, match=r"unknown key\(s\) \['lamda'\]"):
        from_dict(Loss, {"lamda": 0.3}, "loss")


def test_lambda_maps_to_lambda_field_and_ints_become_floats():
    got = from_dict(Loss, {"lambda": 1, "names": ["a", "b"]}, "loss")
    assert got.lambda_ == 1.0 and isinstance(got.lambda_, float)
    assert got.names == ("a", "b")


@pytest.mark.parametrize(
    "data, msg",
    [
        ({"lambda": "high"}, "expected a number"),
        ({"objective": 3}, "expected a string"),
        ({"lambda": True}, "expected a number"),
    ],
)
def test_wrong_types_fail(data, msg):
    with pytest.raises(ParamsError, match=msg):
        from_dict(Loss, data, "loss")


def test_optional_accepts_null():
    assert from_dict(Loss, {"path": None}).path is None


def test_result_is_frozen():
    got = from_dict(Loss, {})
    with pytest.raises(AttributeError):
        got.objective = "x"  # type: ignore[misc]


def test_missing_section_names_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("seed: 1\n")
    with pytest.raises(ParamsError, match="section 'loss' is missing"):
        load_section(Loss, "loss", p)


def test_repo_params_load_into_every_known_section():
    from lib.data import DataParams, SplitParams
    from lib.models import ModelParams

    for cls, section in ((DataParams, "data"), (SplitParams, "split"), (ModelParams, "model")):
        assert load_section(cls, section) is not None


def test_deep_merge_keeps_untouched_keys():
    assert deep_merge({"a": {"x": 1, "y": 2}, "b": 3}, {"a": {"y": 5}}) == {
        "a": {"x": 1, "y": 5},
        "b": 3,
    }


def _section_classes():
    from lib.data import DataParams, SplitParams
    from lib.figures import PlotParams
    from lib.generate import GenerateParams
    from lib.judge import JudgeParams
    from lib.models import ModelParams
    from lib.prompts import PromptParams
    from lib.scoring import ScoreParams
    from lib.stats import StatsParams
    from lib.train import GemParams, LoraParams, LossParams, TrainParams

    return {
        "model": ModelParams,
        "data": DataParams,
        "split": SplitParams,
        "lora": LoraParams,
        "train": TrainParams,
        "loss": LossParams,
        "gem": GemParams,
        "generate": GenerateParams,
        "prompts": PromptParams,
        "score": ScoreParams,
        "judge": JudgeParams,
        "stats": StatsParams,
        "plot": PlotParams,
    }


@pytest.mark.parametrize("profile", [None, "configs/smoke.yaml", "configs/qwen3-8b-qlora.yaml"])
def test_params_and_every_profile_load_into_every_section(profile):
    """A typo in params.yaml or a shipped profile fails here, not minutes into a dvc repro."""
    from lib.config import read_params

    params = read_params("params.yaml")
    if profile:
        params = deep_merge(params, read_params(profile))
    classes = _section_classes()
    assert set(params) - {"seed", "eval_split", "launcher"} == set(classes)
    assert params["eval_split"] in {"test", "val"}  # dvc.yaml reads data/split/<eval_split>.parquet
    assert params["launcher"].split()[0] in {"python", "accelerate", "torchrun"}
    for section, cls in classes.items():
        from_dict(cls, params[section], section)
