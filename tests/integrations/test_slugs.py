import pytest

from integrations.slugs import MAX_LENGTH, assign_slugs, is_valid_slug, slugify_name, unique_slug


@pytest.mark.parametrize(
    "name,expected",
    [
        ("Backend Services", "backend-services"),
        ("Café Über-Team", "cafe-uber-team"),
        ("  --Weird__Name!!  ", "weird__name"),
        ("R&D / Platform (v2)", "r-d-platform-v2"),
        ("api.gateway", "api-gateway"),
        ("ÅNGSTRÖM", "angstrom"),
        ("snake_case_ok", "snake_case_ok"),
    ],
)
def test_slugify_folds_unicode_and_punctuation(name, expected):
    assert slugify_name(name) == expected


def test_names_without_ascii_get_a_stable_distinct_hash():
    a, b = slugify_name("日本語チーム"), slugify_name("Ελληνικά")
    assert is_valid_slug(a)
    assert is_valid_slug(b)
    assert a != b
    assert slugify_name("日本語チーム") == a  # deterministic


def test_long_names_are_cut_to_the_limit_without_trailing_dash():
    slug = slugify_name("a" * 63 + " " + "b" * 10)
    assert len(slug) <= MAX_LENGTH
    assert not slug.endswith("-")
    assert is_valid_slug(slug)


def test_collisions_get_numeric_suffixes_within_the_limit():
    taken = {"platform", "platform-2"}
    assert unique_slug("Platform", taken) == "platform-3"
    long_name = "x" * 80
    base = slugify_name(long_name)
    suffixed = unique_slug(long_name, {base})
    assert suffixed.endswith("-2")
    assert len(suffixed) == MAX_LENGTH
    assert is_valid_slug(suffixed)


def test_assign_slugs_is_independent_of_input_order():
    pairs = [("{b}", "Team"), ("{a}", "team"), ("{c}", "TEAM!")]
    first = assign_slugs(pairs)
    second = assign_slugs(list(reversed(pairs)))
    assert first == second == {"{a}": "team", "{b}": "team-2", "{c}": "team-3"}


def test_assign_slugs_respects_already_taken():
    assert assign_slugs([("1", "ops")], taken={"ops"}) == {"1": "ops-2"}


@pytest.mark.parametrize(
    "value,ok",
    [("abc", True), ("a-b_c9", True), ("", False), ("A", False), ("a b", False), ("a" * 65, False), ("a.b", False)],
)
def test_slug_validation(value, ok):
    assert is_valid_slug(value) is ok
