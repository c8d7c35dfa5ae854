"""The strict-records checker: what a record holds against what its field types say (no database)."""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, NewType, Optional, TypeVar

import attrs
import pytest

from datalayer._record_check import _checker_for, check_record
from datalayer.records import AnalysisFile, AnalysisWithFiles, Page, User

if TYPE_CHECKING:
    from decimal import Context

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
UID = uuid.UUID(int=1)
T = TypeVar("T")
UserId = NewType("UserId", int)


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Level(enum.IntEnum):
    LOW = 1


@attrs.frozen
class Scalars:
    i: int = 1
    s: str = "s"
    b: bool = True
    f: float = 1.5
    d: Decimal = Decimal("1.5")
    u: uuid.UUID = UID
    ts: datetime = NOW
    day: date = date(2026, 1, 2)
    at: clock = clock(3, 4)
    span: timedelta = timedelta(seconds=1)
    raw: bytes = b"x"
    mood: Mood = Mood.HAPPY
    kind: Literal["a", "b"] = "a"
    one: Literal[1] = 1
    anything: Any = None
    obj: object = None
    maybe: int | None = None
    old_maybe: Optional[str] = None  # noqa: UP045 - the typing.Optional spelling must work too
    either: int | str = 1
    user_id: UserId = UserId(1)
    annotated: Annotated[int, "meta"] = 1


@attrs.frozen
class Containers:
    tags: list[str] = attrs.Factory(list)
    pair: tuple[int, str] = (1, "a")
    many: tuple[int, ...] = ()
    empty: tuple[()] = ()
    meta: dict[str, Any] = attrs.Factory(dict)
    counts: dict[str, int] = attrs.Factory(dict)
    ids: frozenset[int] = frozenset()
    seq: Sequence[int] = ()
    mapping: Mapping[str, float] = attrs.Factory(dict)
    bare: list = attrs.Factory(list)
    nested: list[list[int | None]] = attrs.Factory(list)


@attrs.frozen
class Node:
    name: str
    children: list[Node] = attrs.Factory(list)
    parent: Node | None = None


@attrs.frozen
class Box(Generic[T]):
    item: T
    items: list[T]


@attrs.frozen
class Unresolvable:
    ctx: Context  # imported only under TYPE_CHECKING


def _file(**changes: Any) -> AnalysisFile:
    base: dict[str, Any] = {
        "id": 1,
        "analysis_id": 1,
        "filename": "a.csv",
        "file_type": "csv",
        "size_bytes": 10,
        "storage_uri": "s3://x",
        "checksum": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return AnalysisFile(**{**base, **changes})


def test_a_matching_record_passes() -> None:
    assert check_record(Scalars(), Scalars) is None
    assert check_record(Containers(), Containers) is None
    assert check_record(User(1, "ann", "a@x", "h", True, NOW, NOW), User) is None


def test_none_in_a_non_optional_field_names_the_field() -> None:
    msg = check_record(Scalars(s=None), Scalars)
    assert msg == "field s: got None, expected str (not Optional)"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("i", True, "field i: got bool, expected int"),
        ("i", "1", "field i: got str, expected int"),
        ("i", 1.0, "field i: got float, expected int"),
        ("b", 1, "field b: got int, expected bool"),
        ("s", 1, "field s: got int, expected str"),
        ("s", b"x", "field s: got bytes, expected str"),
        ("f", True, "field f: got bool, expected float"),
        ("f", Decimal(1), "field f: got Decimal, expected float"),
        ("d", 1.5, "field d: got float, expected Decimal"),
        ("d", 1, "field d: got int, expected Decimal"),
        ("u", str(uuid.UUID(int=1)), "field u: got str, expected UUID"),
        ("ts", "2026-01-02T03:04:05+00:00", "field ts: got str, expected datetime"),
        ("ts", date(2026, 1, 2), "field ts: got date, expected datetime"),
        ("day", NOW, "field day: got datetime, expected date"),
        ("at", NOW, "field at: got datetime, expected time"),
        ("span", 1, "field span: got int, expected timedelta"),
        ("raw", "x", "field raw: got str, expected bytes"),
        ("mood", "happy", "field mood: got str, expected Mood"),
        ("kind", "c", "field kind: got str, expected Literal['a', 'b']"),
        ("one", True, "field one: got bool, expected Literal[1]"),
        ("one", 2, "field one: got int, expected Literal[1]"),
        ("maybe", "1", "field maybe: got str, expected int | None"),
        ("old_maybe", 1, "field old_maybe: got int, expected str | None"),
        ("either", 1.5, "field either: got float, expected int | str"),
        ("either", None, "field either: got None, expected int | str (not Optional)"),
        ("user_id", "1", "field user_id: got str, expected int"),
        ("annotated", "1", "field annotated: got str, expected int"),
    ],
)
def test_wrong_scalar_types(field: str, value: object, message: str) -> None:
    assert check_record(Scalars(**{field: value}), Scalars) == message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("f", 1),  # an int is a float (PEP 484's numeric tower; nothing is lost)
        ("i", Level.LOW),  # an IntEnum is an int
        ("s", Mood.HAPPY.value),
        ("anything", object()),
        ("obj", None),
        ("maybe", None),
        ("maybe", 3),
        ("either", "x"),
        ("kind", "b"),
    ],
)
def test_accepted_values(field: str, value: object) -> None:
    assert check_record(Scalars(**{field: value}), Scalars) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tags": ["a", None]}, "field tags[1]: got None, expected str (not Optional)"),
        ({"tags": ("a",)}, "field tags: got tuple, expected list[str]"),
        ({"pair": (1, 2)}, "field pair[1]: got int, expected str"),
        ({"pair": (1,)}, "field pair: got a tuple of 1 items, expected tuple[int, str]"),
        ({"pair": [1, "a"]}, "field pair: got list, expected tuple[int, str]"),
        ({"many": (1, 2, "3")}, "field many[2]: got str, expected int"),
        ({"empty": (1,)}, "field empty: got a tuple of 1 items, expected tuple[()]"),
        ({"meta": {"a": 1, 2: 3}}, "field meta{key #1}: got int, expected str"),
        ({"meta": []}, "field meta: got list, expected dict[str, Any]"),
        ({"counts": {"a": 1, "b": "2"}}, "field counts{value #1}: got str, expected int"),
        ({"ids": frozenset({"x"})}, "field ids[0]: got str, expected int"),
        ({"seq": [1, None]}, "field seq[1]: got None, expected int (not Optional)"),
        ({"mapping": {"a": "b"}}, "field mapping{value #0}: got str, expected float"),
        ({"bare": ()}, "field bare: got tuple, expected list"),
        ({"nested": [[1, None], [2, "x"]]}, "field nested[1][1]: got str, expected int | None"),
    ],
)
def test_container_element_types(changes: dict[str, Any], message: str) -> None:
    assert check_record(Containers(**changes), Containers) == message


def test_dict_keys_and_values_never_appear_in_the_message() -> None:
    msg = check_record(Containers(counts={"secret-key": "secret-value"}), Containers)
    assert msg is not None
    assert "secret" not in msg


def test_containers_that_match() -> None:
    ok = Containers(
        tags=["a"],
        pair=(1, "b"),
        many=(1, 2),
        meta={"a": [1, {"b": None}]},
        counts={"a": 1},
        ids=frozenset({1}),
        seq=[1, 2],
        mapping={"a": 1},  # an int is a float
        bare=[None, "x"],
        nested=[[1, None]],
    )
    assert check_record(ok, Containers) is None


def test_nested_records_are_checked_with_their_path() -> None:
    files = [_file(), _file(), _file(size_bytes="10")]
    record = AnalysisWithFiles(1, 1, "n", "t", {}, "pending", None, None, None, None, NOW, NOW, files)
    assert check_record(record, AnalysisWithFiles) == "field files[2].size_bytes: got str, expected int"
    good = attrs.evolve(record, files=[_file()])
    assert check_record(good, AnalysisWithFiles) is None
    wrong_kind = attrs.evolve(record, files=[{"id": 1}])
    assert check_record(wrong_kind, AnalysisWithFiles) == "field files[0]: got dict, expected AnalysisFile"


def test_recursive_records() -> None:
    tree = Node("root", [Node("a"), Node("b", [Node(None)])])
    assert check_record(tree, Node) == "field children[1].children[0].name: got None, expected str (not Optional)"
    assert check_record(Node("a", parent=Node("p")), Node) is None
    assert check_record(Node("a", parent="p"), Node) == "field parent: got str, expected Node | None"


def test_generic_records_follow_their_arguments() -> None:
    assert check_record(Box(1, [1, 2]), Box[int]) is None
    assert check_record(Box(1, [1, "2"]), Box[int]) == "field items[1]: got str, expected int"
    assert check_record(Box("x", ["y"]), Box) is None  # an unbound parameter is Any
    page = Page(items=[_file(), _file(checksum=1)], next_cursor=None)
    assert check_record(page, Page[AnalysisFile]) == "field items[1].checksum: got int, expected str | None"


def test_the_value_itself_may_be_the_wrong_type() -> None:
    assert check_record({"id": 1}, User) == "got dict, expected User"
    assert check_record(None, User) == "got None, expected User (not Optional)"
    assert check_record(None, int | None) is None
    assert check_record(3, int) is None
    assert check_record(True, int) == "got bool, expected int"


def test_unresolvable_annotations_are_reported_not_guessed() -> None:
    msg = check_record(Unresolvable(ctx=None), Unresolvable)
    assert msg is not None
    assert "field types of Unresolvable cannot be resolved" in msg
    assert "NameError" in msg


def test_checkers_are_compiled_once_per_type_and_fast() -> None:
    assert _checker_for(AnalysisWithFiles) is _checker_for(AnalysisWithFiles)
    user = User(1, "ann", "a@x", "h", True, NOW, NOW)
    check_record(user, User)
    start = time.perf_counter()
    for _ in range(10_000):
        check_record(user, User)
    # ~1 µs per field on this machine; the bound is loose so a slow CI box does not flake.
    assert time.perf_counter() - start < 1.0
