"""What a run ran on: the environment record and how resumed configs are compared."""

import torch

from seal.core.environment import ENVIRONMENTS, add_environment, config_differences, environment


def test_environment_names_versions_threads_and_the_models_device():
    env = environment(torch.nn.Linear(2, 2))
    assert env["device"] == "cpu" and env["torch_threads"] == torch.get_num_threads()
    assert env["torch"] == torch.__version__ and env["python"].count(".") == 2
    for name in ("seal", "transformers", "peft", "pysbd"):
        assert env[name], name  # installed, so a version is found
    assert environment()["device"] in ("cpu", "cuda")


def test_config_comparison_leaves_the_environments_out():
    a = {"seed": 0, "lr": 1e-3, ENVIRONMENTS: [{"torch": "2.13.0"}]}
    assert config_differences(a, {**a, ENVIRONMENTS: [{"torch": "2.9.0"}]}) == []
    assert config_differences(a, {"seed": 1, "lr": 1e-3}) == ["seed"]
    assert config_differences({"seed": 0}, {"seed": 0, "new_setting": 1}) == ["new_setting"]


def test_add_environment_appends_a_new_one_once():
    env, other = {"torch": "2.13.0"}, {"torch": "2.9.0"}
    assert add_environment({"seed": 0}, env) == {"seed": 0, ENVIRONMENTS: [env]}
    previous = {"seed": 0, ENVIRONMENTS: [other]}
    assert add_environment({"seed": 0}, env, previous)[ENVIRONMENTS] == [other, env]
    assert add_environment({"seed": 0}, other, previous)[ENVIRONMENTS] == [other]
