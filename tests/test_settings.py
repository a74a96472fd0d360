"""Serve options declared once (settings.ServerSettings): flags, environment variables, precedence
(command line > environment > default), declared bounds, and the enums, through the real parser."""

from __future__ import annotations

import argparse

import pytest

from reward_server.cli import build_parser, chosen_log_level
from reward_server.settings import ModelControlMode, ServerSettings, serve_options, settings_from_options


def settings(repo, argv: list[str], environ: dict[str, str] | None = None) -> ServerSettings:
    """What `reward-server serve --model-repository REPO ARGV` builds with these variables set."""
    environ = environ or {}
    args = build_parser(environ).parse_args(["serve", "--model-repository", str(repo), *argv])
    return settings_from_options(vars(args), environ)


def test_settings_take_the_environment_when_no_flag_is_given(tmp_path):
    got = settings(
        tmp_path,
        [],
        {
            "REWARD_SERVER_PORT": "6001",
            "REWARD_SERVER_STRICT": "false",
            "REWARD_SERVER_GRACE_PERIOD": "2.5",
            "REWARD_SERVER_MODEL_CONTROL_MODE": "explicit",
            "REWARD_SERVER_LOAD_MODEL": "a, b",
            "REWARD_SERVER_METRICS_PORT": "0",
        },
    )
    assert (got.port, got.strict, got.grace_period_s) == (6001, False, 2.5)
    assert got.model_control_mode is ModelControlMode.EXPLICIT and got.load_models == ("a", "b")
    assert got.metrics_port == 0


def test_settings_take_the_flag_over_the_environment_when_both_are_given(tmp_path):
    environ = {
        "REWARD_SERVER_PORT": "6001",
        "REWARD_SERVER_STRICT": "false",
        "REWARD_SERVER_LOAD_MODEL": "a,b",
        "REWARD_SERVER_MODEL_CONTROL_MODE": "poll",
    }
    got = settings(
        tmp_path,
        ["--port", "6002", "--strict", "--model-control-mode", "explicit", "--load-model", "c"],
        environ,
    )
    assert (got.port, got.strict, got.load_models) == (6002, True, ("c",))
    assert got.model_control_mode is ModelControlMode.EXPLICIT


def test_settings_take_the_declared_defaults_when_neither_flag_nor_environment(tmp_path):
    got = settings(tmp_path, [])
    assert got == ServerSettings(model_repository=tmp_path)
    assert (got.port, got.strict, got.auth_token, got.load_models) == (50051, True, None, ())


def test_settings_take_the_repository_from_the_environment_when_the_flag_is_absent(tmp_path):
    environ = {"REWARD_SERVER_MODEL_REPOSITORY": str(tmp_path)}
    args = build_parser(environ).parse_args(["serve"])
    assert settings_from_options(vars(args), environ).model_repository == tmp_path


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REWARD_SERVER_PORT", "http"),
        ("REWARD_SERVER_STRICT", "maybe"),
        ("REWARD_SERVER_MODEL_CONTROL_MODE", "auto"),
        ("REWARD_SERVER_GRACE_PERIOD", ""),
        ("REWARD_SERVER_PORT", "70000"),
    ],
)
def test_settings_refuse_a_bad_environment_value_naming_it(tmp_path, variable, value):
    with pytest.raises(ValueError, match="REWARD_SERVER_PORT|--port" if value == "70000" else variable):
        settings(tmp_path, [], {variable: value})


def test_bad_environment_value_fails_serve_only_when_another_command_runs():
    args = build_parser({"REWARD_SERVER_PORT": "http"}).parse_args(["export", "m", "--repository", "r"])
    assert args.command == "export"


@pytest.mark.parametrize("token", ["", "  \n"])
def test_settings_refuse_an_empty_token_variable_when_no_token_file_is_given(tmp_path, token):
    with pytest.raises(ValueError, match="REWARD_SERVER_AUTH_TOKEN is set but empty"):
        settings(tmp_path, [], {"REWARD_SERVER_AUTH_TOKEN": token})


def test_settings_read_the_token_file_before_the_token_variable_when_both_are_set(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    environ = {"REWARD_SERVER_AUTH_TOKEN": "from-env"}
    assert settings(tmp_path, [], environ).auth_token == "from-env"
    assert settings(tmp_path, ["--auth-token-file", str(token_file)], environ).auth_token == "from-file"
    environ["REWARD_SERVER_AUTH_TOKEN_FILE"] = str(token_file)
    assert settings(tmp_path, [], environ).auth_token == "from-file"
    token_file.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        settings(tmp_path, [], environ)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"port": 70000}, r"--port must be in 0\.\.65535, got 70000"),
        ({"metrics_port": -1}, "--metrics-port must be in"),
        ({"grace_period_s": -1.0}, "--grace-period must be >= 0"),
        ({"max_connection_age_s": 0.0}, "--max-connection-age must be > 0"),
        ({"repository_poll_s": 0.0}, "--repository-poll-secs must be > 0"),
        ({"max_items_per_request": 0}, "--max-items-per-request must be >= 1"),
        ({"tokenizer_threads": 0}, "--tokenizer-threads must be >= 1"),
        ({"model_control_mode": "auto"}, "model control mode must be one of none, explicit, poll"),
        ({"load_models": ("a",)}, "--load-model needs --model-control-mode explicit"),
    ],
)
def test_settings_refuse_values_outside_the_declaration_when_built_directly(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message):
        ServerSettings(model_repository=tmp_path, **fields)


def test_settings_take_the_control_mode_as_text_when_built_directly(tmp_path):
    got = ServerSettings(model_repository=tmp_path, model_control_mode="poll")
    assert got.model_control_mode is ModelControlMode.POLL and got.model_control_mode == "poll"
    assert f"{got.model_control_mode}" == "poll"


def test_serve_help_names_the_environment_variable_and_default_of_every_option():
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    by_flag = {a.option_strings[0]: a for a in commands.choices["serve"]._actions if a.option_strings}
    declared = serve_options()
    assert len(declared) >= 20 and {"--port", "--auth-token-file", "--load-model"} <= {
        o.flag for o in declared
    }
    for opt in declared:
        action = by_flag[opt.flag]
        assert f"env {opt.env}" in action.help and opt.env == "REWARD_SERVER_" + opt.dest.upper()
        assert "required" in action.help if opt.required else "default: " in action.help


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "ERROR", "serve"],
        ["serve", "--log-level", "ERROR"],
        ["--log-level", "DEBUG", "serve", "--log-level", "ERROR"],
    ],
)
def test_log_level_is_accepted_when_given_before_or_after_the_command(tmp_path, argv):
    args = build_parser().parse_args([*argv, "--model-repository", str(tmp_path)])
    assert chosen_log_level(args) == "ERROR"
    assert (
        chosen_log_level(build_parser().parse_args(["serve", "--model-repository", str(tmp_path)])) == "INFO"
    )
