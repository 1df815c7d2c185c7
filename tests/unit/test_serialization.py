"""The JSON codec: the types tasks take and return come back as themselves, or fail clearly."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from pydantic import BaseModel

from cloudq import serialization
from cloudq.errors import DecodeError, EncodeError, RemoteTaskError
from cloudq.serialization import TAG, Decoding, dumps, loads, to_jsonable


class Address(BaseModel):
    street: str
    moved_in: date


class Customer(BaseModel):
    name: str
    joined: datetime
    balance: Decimal
    address: Address


class CardDeclined(Exception):
    def __init__(self, card: str, amount: int) -> None:
        super().__init__(card, amount)
        self.card = card
        self.amount = amount


def round_trip(value: object) -> object:
    return loads(dumps(value))


@pytest.mark.parametrize(
    "value",
    [
        None, True, 0, -7, 2.5, "text", "ünïcødé", [], {}, [1, "a", None],
        datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 3, 1, 12, 30),
        date(2026, 2, 28),
        time(23, 59, 1),
        Decimal("12345678901234567890.000000001"),
        UUID("12345678-1234-5678-1234-567812345678"),
        b"\x00\xffbinary",
        (1, "two", 3.0),
        ((1, 2), [3, (4, (5,))], {"t": (6,)}),
        {"a", "b", "c"},
        {(1, 2), (3, 4)},
    ],
    ids=repr,
)
def test_value_comes_back_with_its_type(value: object) -> None:
    back = round_trip(value)

    assert back == value
    assert type(back) is type(value)


def test_nested_containers_keep_their_inner_types() -> None:
    value = {"when": [datetime(2026, 1, 1, tzinfo=UTC)], "amounts": (Decimal("1.10"),)}

    back = round_trip(value)

    assert back == value
    assert isinstance(back["when"][0], datetime)  # type: ignore[index]
    assert isinstance(back["amounts"], tuple)  # type: ignore[index]


def test_bytearray_comes_back_as_bytes() -> None:
    assert round_trip(bytearray(b"abc")) == b"abc"


def test_pydantic_model_the_decoding_allows_comes_back_as_the_model() -> None:
    customer = Customer(
        name="Ada", joined=datetime(2026, 1, 2, 3, 4, tzinfo=UTC), balance=Decimal("10.50"),
        address=Address(street="1 Loop", moved_in=date(2020, 5, 1)),
    )

    back = loads(dumps(customer), Decoding(models=(Customer,)))

    assert isinstance(back, Customer)
    assert back == customer


def test_pydantic_model_the_decoding_does_not_allow_comes_back_as_its_fields() -> None:
    back = loads(dumps(Address(street="1 Loop", moved_in=date(2020, 5, 1))),
                 Decoding(models=(Customer,)))

    assert back == {"street": "1 Loop", "moved_in": "2020-05-01"}


def test_pydantic_model_a_strict_decoding_does_not_allow_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"value\[0\]: model type 'tests\.unit\..*:Address' "
                       "is not allowed"):
        loads(dumps([Address(street="1 Loop", moved_in=date(2020, 5, 1))]),
              Decoding(models=(Customer,), strict=True))


def test_builtin_exception_comes_back_with_type_and_args() -> None:
    back = round_trip(ValueError("bad value", 42))

    assert type(back) is ValueError
    assert back.args == ("bad value", 42)  # type: ignore[attr-defined]


def test_importable_custom_exception_comes_back_as_itself() -> None:
    back = round_trip(CardDeclined("4242", 100))

    assert isinstance(back, CardDeclined)
    assert (back.card, back.amount) == ("4242", 100)


def test_exception_of_unknown_type_comes_back_as_remote_task_error_naming_it() -> None:
    encoded = json.dumps({TAG: "exception", "type": "gone.module.PaymentError",
                          "message": "card declined", "v": ["card declined"]})

    back = loads(encoded)

    assert isinstance(back, RemoteTaskError)
    assert back.exc_type == "gone.module.PaymentError"
    assert "gone.module.PaymentError: card declined" in str(back)


def test_user_dict_holding_the_tag_key_comes_back_unchanged() -> None:
    value = {TAG: "tuple", "v": [1, 2]}

    back = round_trip(value)

    assert back == value
    assert type(back) is dict


def test_plain_json_passes_through_untagged() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": {}}}

    assert json.loads(dumps(value)) == value


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"x": [object()]}, "kwargs['x'][0]"),
        ({"x": {"y": (1, lambda: 0)}}, "kwargs['x']['y'][1]"),
        ({"files": [1, 2, open]}, "kwargs['files'][2]"),
    ],
)
def test_value_that_is_not_serialisable_is_named_by_its_path(value: object, path: str) -> None:
    with pytest.raises(EncodeError) as caught:
        to_jsonable(value, "kwargs")

    assert str(caught.value).startswith(f"{path}: object of type ")
    assert "is not JSON serialisable" in str(caught.value)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_rejected(number: float) -> None:
    with pytest.raises(EncodeError, match=r"args\[1\]: .* is not valid JSON"):
        to_jsonable([1, number], "args")


def test_non_string_dict_keys_are_rejected() -> None:
    with pytest.raises(EncodeError, match=r"kwargs\['m'\]: dict key 1 is a int"):
        to_jsonable({"m": {1: "one"}}, "kwargs")


def test_exception_with_unserialisable_args_keeps_its_message() -> None:
    back = round_trip(KeyError(object()))

    assert isinstance(back, KeyError)
    assert "object object at" in str(back)


def test_unknown_tag_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="unknown value tag 'pickle'"):
        loads(json.dumps({TAG: "pickle", "v": "gASV..."}))


def test_malformed_tagged_value_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="bad datetime value"):
        loads(json.dumps({TAG: "datetime", "v": "yesterday"}))


def test_text_that_is_not_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not JSON"):
        serialization.loads("{oops")
