"""Settings: where values come from, which source wins, and how bad ones are reported."""

from __future__ import annotations

import types
from datetime import timedelta

import pytest

import cloudq
from cloudq.config import SETTING_NAMES
from cloudq.stores.memory import MemoryStore
from cloudq.transports.memory import MemoryTransport


def new_app(**settings: object) -> cloudq.App:
    return cloudq.App("t", transport=MemoryTransport(), store=MemoryStore(),
                      set_as_current=False, **settings)


# -- sources and precedence ------------------------------------------------------------------------
def test_defaults_apply_when_nothing_is_configured() -> None:
    app = new_app()

    assert app.conf.region == "us-east-1"
    assert app.conf.task_default_queue == "default"
    assert app.conf.result_expires == timedelta(days=1)
    assert app.conf.max_receive_count == 5


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDQ_REGION", "eu-west-1")
    monkeypatch.setenv("CLOUDQ_TASK_ALWAYS_EAGER", "true")
    monkeypatch.setenv("CLOUDQ_VISIBILITY_TIMEOUT", "120")

    app = new_app()

    assert app.conf.region == "eu-west-1"
    assert app.conf.task_always_eager is True
    assert app.conf.visibility_timeout == 120


def test_config_object_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDQ_REGION", "eu-west-1")
    app = new_app()

    app.config_from_object({"region": "ap-south-1"})

    assert app.conf.region == "ap-south-1"


def test_keyword_arguments_override_config_object_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDQ_REGION", "eu-west-1")
    app = new_app(region="us-west-2")

    app.config_from_object({"region": "ap-south-1", "queue_prefix": "from-object-"})

    assert app.conf.region == "us-west-2"
    assert app.conf.queue_prefix == "from-object-"


def test_explicit_writes_win_as_the_latest_word() -> None:
    app = new_app(region="us-west-2")
    app.config_from_object({"region": "ap-south-1"})

    app.conf.update(region="eu-central-1")
    assert app.conf.region == "eu-central-1"

    app.conf.region = "eu-north-1"
    assert app.conf.region == "eu-north-1"
    assert app.settings.region == "eu-north-1"


def test_config_from_object_takes_upper_case_module_attributes() -> None:
    settings_module = types.ModuleType("shop_settings")
    settings_module.REGION = "sa-east-1"  # type: ignore[attr-defined]
    settings_module.TASK_DEFAULT_QUEUE = "shop"  # type: ignore[attr-defined]
    settings_module.helper = "ignored: not a setting and not upper case"  # type: ignore[attr-defined]
    app = new_app()

    app.config_from_object(settings_module)

    assert app.conf.region == "sa-east-1"
    assert app.conf["TASK_DEFAULT_QUEUE"] == "shop"


def test_config_from_object_takes_a_class() -> None:
    class Config:
        task_track_started = True
        max_receive_count = 9

    app = new_app()

    app.config_from_object(Config)

    assert app.conf.task_track_started is True
    assert app.conf.max_receive_count == 9


# -- errors ----------------------------------------------------------------------------------------
def test_unknown_keyword_setting_is_named_with_a_suggestion() -> None:
    with pytest.raises(cloudq.ConfigError, match=r"unknown setting 'regoin'.*did you mean 'region"):
        new_app(regoin="eu-west-1")


def test_unknown_setting_in_update_is_named_and_changes_nothing() -> None:
    app = new_app(region="eu-west-1")

    with pytest.raises(cloudq.ConfigError, match=r"'task_default_queu'.*'task_default_queue'"):
        app.conf.update(task_default_queu="x")

    assert app.conf.task_default_queue == "default"
    assert app.conf.region == "eu-west-1"


def test_unknown_upper_case_name_in_config_object_is_an_error() -> None:
    class Config:
        VISIBILITY_TIMEOUT_S = 30

    with pytest.raises(cloudq.ConfigError, match=r"visibility_timeout_s.*'visibility_timeout'"):
        new_app().config_from_object(Config)


def test_reading_an_unknown_setting_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="unknown setting 'no_such_thing'"):
        _ = new_app().conf.no_such_thing


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("visibility_timeout", "soon"),
        ("visibility_timeout", 0),
        ("max_receive_count", -1),
        ("task_default_priority", 10),
        ("worker_pool", "gevent"),
        ("task_default_queue", "has spaces"),
        ("result_expires", "tomorrow"),
    ],
)
def test_ill_typed_setting_is_a_config_error_naming_it(name: str, value: object) -> None:
    with pytest.raises(cloudq.ConfigError, match=name):
        new_app(**{name: value})


def test_ill_typed_write_leaves_the_previous_value_in_place() -> None:
    app = new_app(visibility_timeout=90)

    with pytest.raises(cloudq.ConfigError, match="visibility_timeout"):
        app.conf.visibility_timeout = "later"

    assert app.conf.visibility_timeout == 90


def test_ill_typed_environment_value_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDQ_MAX_RECEIVE_COUNT", "many")

    with pytest.raises(cloudq.ConfigError, match="max_receive_count"):
        new_app()


# -- structured values -----------------------------------------------------------------------------
def test_environment_json_dict_becomes_a_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = '{"shop.emails.*": "mail", "shop.pdf.*": {"queue": "pdf"}}'
    monkeypatch.setenv("CLOUDQ_TASK_ROUTES", routes)

    app = new_app()

    assert app.conf.task_routes == {"shop.emails.*": "mail", "shop.pdf.*": {"queue": "pdf"}}
    assert app.router.route("shop.emails.send", (), {}, {}) == {"queue": "mail"}


def test_environment_value_that_is_not_json_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDQ_TASK_ROUTES", "{not json")

    with pytest.raises(cloudq.ConfigError, match="task_routes"):
        new_app()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (3600, timedelta(hours=1)),
        (1.5, timedelta(seconds=1.5)),
        ("7200", timedelta(hours=2)),
        (timedelta(days=3), timedelta(days=3)),
    ],
)
def test_result_expires_takes_seconds_or_a_timedelta(given: object, expected: timedelta) -> None:
    app = new_app(result_expires=given)

    assert app.conf.result_expires == expected
    assert app.settings.result_expires_s == int(expected.total_seconds())


def test_result_expires_from_environment_is_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDQ_RESULT_EXPIRES", "600")

    assert new_app().settings.result_expires_s == 600


def test_changing_result_expires_changes_the_ttl_of_stored_results() -> None:
    app = new_app(result_expires=60)
    assert app.backend.expires_s == 60

    app.conf.result_expires = timedelta(hours=1)

    assert app.backend.expires_s == 3600


def test_every_setting_can_be_read_and_listed() -> None:
    app = new_app()

    assert set(app.conf) == SETTING_NAMES
    assert set(app.conf.as_dict()) == SETTING_NAMES
    assert {"region", "endpoint_url", "signing_key", "message_size_limit"} <= SETTING_NAMES
