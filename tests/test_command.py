"""The /build text parser: every grammar rule, escaping case, quote form and error."""

from __future__ import annotations

import pytest

from bot.command import BuildCommand, Help, ParseError, parse, unescape_chars


@pytest.mark.parametrize(("text", "kind"), [
    ("", "help"),
    ("   ", "help"),
    ("\u00a0\t\n", "help"),
    ("help", "help"),
    ("HELP", "help"),
    ("list", "list"),
    (" List ", "list"),
    ("help backend", "help"),
])
def test_help_and_list_words_ask_for_help(text: str, kind: str) -> None:
    assert parse(text) == Help(kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("help 2", Help("help", 2)),
    ("HELP\u00a03 more words", Help("help", 3)),
    ("list 7", Help("list", 7)),
    ("help 002", Help("help", 2)),
    ('help "4"', Help("help", 4)),
    ("help 1", Help("help", 1)),
    ("help 0", Help("help", 1)),
    ("help -2", Help("help", 1)),
    ("help 2.5", Help("help", 1)),
    ("help ²", Help("help", 1)),
    ("help \u0663", Help("help", 1)),
    ("help page=2", Help("help", 1)),
    ("help backend 2", Help("help", 1)),
    ("help " + "9" * 5000, Help("help", 999_999)),
])
def test_help_may_be_followed_by_a_page_number(text: str, expected: Help) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("backend", BuildCommand("backend")),
    ("backend codeBranch=master", BuildCommand("backend", (("codeBranch", "master"),))),
    ("backend b=2 a=1", BuildCommand("backend", (("b", "2"), ("a", "1")))),
    ("backend a=", BuildCommand("backend", (("a", ""),))),
    ("backend a=x=y", BuildCommand("backend", (("a", "x=y"),))),
    ("backend a==", BuildCommand("backend", (("a", "="),))),
    ("backend commit=abc1234", BuildCommand("backend", commit="abc1234")),
    ("backend codeBranch=master commit=abc",
     BuildCommand("backend", (("codeBranch", "master"),), commit="abc")),
    ("backend commit=abc123", BuildCommand("backend", commit="abc123")),
    ("backend tag=v1.0", BuildCommand("backend", tag="v1.0")),
    ("backend COMMIT=abc1234 Tag=v1", BuildCommand("backend", commit="abc1234", tag="v1")),
    ("backend commit=abc1234 x=1 tag=v1", BuildCommand("backend", (("x", "1"),), "abc1234", "v1")),
    ("Backend", BuildCommand("Backend")),
    ("backend a=1 A=2", BuildCommand("backend", (("a", "1"), ("A", "2")))),
    ("backend it's=1 x=it's", BuildCommand("backend", (("it's", "1"), ("x", "it's")))),
    ("backend x=a\"b", BuildCommand("backend", (("x", 'a"b'),))),
], ids=repr)
def test_words_become_job_params_and_scm(text: str, expected: BuildCommand) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize("sep", [" ", "  ", "\u00a0", "\t", "\n", " \u00a0\t\r\n ", "\u2003"])
def test_any_whitespace_separates_words(sep: str) -> None:
    assert parse(f"{sep}backend{sep}a=1{sep}b=2{sep}") == BuildCommand(
        "backend", (("a", "1"), ("b", "2")))


@pytest.mark.parametrize(("text", "value"), [
    ('msg="two words"', "two words"),
    ("msg='two words'", "two words"),
    ("msg=“two words”", "two words"),
    ("msg=”two words”", "two words"),
    ("msg=„two words“", "two words"),
    ("msg=‘two words’", "two words"),
    ("msg=’two words’", "two words"),
    ('msg=""', ""),
    ("msg=“”", ""),
    ('msg="it\'s"', "it's"),
    ("msg='say \"hi\"'", 'say "hi"'),
    ('msg="a=b c"', "a=b c"),
    ('msg="tab\there"', "tab\there"),
    ('msg="  padded  "', "  padded  "),
    ('msg="x"', "x"),
])
def test_quoted_values_keep_their_spaces(text: str, value: str) -> None:
    assert parse(f"backend {text}") == BuildCommand("backend", (("msg", value),))


def test_quoted_job_name_is_a_job() -> None:
    assert parse('"backend" a=1') == BuildCommand("backend", (("a", "1"),))


@pytest.mark.parametrize(("escaped", "plain"), [
    ("a&amp;b", "a&b"),
    ("&lt;x&gt;", "<x>"),
    ("&amp;lt;", "&lt;"),
    ("&amp;amp;", "&amp;"),
    ("&quot;", "&quot;"),
    ("<https://example.com/a?b=1&amp;c=2>", "https://example.com/a?b=1&c=2"),
    ("<https://example.com|label>", "https://example.com"),
    ("<https://example.com|click here>", "https://example.com"),
    ("<http://example.com|example.com>", "example.com"),
    ("<https://example.com|example.com>", "example.com"),
    ("<mailto:a@b.io|a@b.io>", "a@b.io"),
    ("<@U123|bob>", "@bob"),
    ("<@U123>", "@U123"),
    ("<#C123|builds>", "#builds"),
    ("<#C123>", "#C123"),
    ("<!here>", "@here"),
    ("<!channel>", "@channel"),
    ("<!everyone>", "@everyone"),
    ("<!here|here>", "here"),
    ("<!subteam^S123|@devs>", "@devs"),
    ("<!subteam^S123>", "@S123"),
    ("<!date^1392734382^{date}|Feb 18>", "Feb 18"),
    ("a<b", "a<b"),
])
def test_slack_escaping_is_undone(escaped: str, plain: str) -> None:
    assert "".join(c for c, _ in unescape_chars(escaped)) == plain
    assert parse(f"backend v={escaped}") == BuildCommand("backend", (("v", plain),))


def test_markup_text_is_literal_not_a_quote_or_separator() -> None:
    assert parse('backend v=<https://x.io/a?b=1|label> w=<@U1|o"brien>') == BuildCommand(
        "backend", (("v", "https://x.io/a?b=1"), ("w", '@o"brien')))


def test_entities_are_literal_not_separators_or_equals() -> None:
    assert parse("backend v=&lt;a&gt;") == BuildCommand("backend", (("v", "<a>"),))


def test_mention_as_reviewer_gives_a_readable_value() -> None:
    assert parse("backend reviewer=<@U123|bob>") == BuildCommand(
        "backend", (("reviewer", "@bob"),))


@pytest.mark.parametrize(("text", "message"), [
    ("backend master", ("`master` has no `=`: write parameters as name=value, "
                       "e.g. codeBranch=master")),
    ("backend =x", "`=x` has no name before `=`: write name=value."),
    ("backend =", "`=` has no name before `=`: write name=value."),
    ('backend msg="two words', ("The quote opened in `msg=\"two words` is not closed: "
                               "add a closing quote.")),
    ("backend msg=“two", "The quote opened in `msg=“two` is not closed: add a closing quote."),
    ("backend msg='x\"", "The quote opened in `msg='x\"` is not closed: add a closing quote."),
    ('backend name="a b"c', ("`name=\"a b\"c` has text after its closing quote: "
                            "put the whole value inside the quotes.")),
    ('backend "msg"=x', ("`\"msg\"=x` has text after its closing quote: "
                        "put the whole value inside the quotes.")),
    ("backend codeBranch=a codeBranch=b", "`codeBranch` is given twice: give it once."),
    ("backend commit=abc1234 commit=abc1234", "`commit` is given twice: give it once."),
    ("backend commit=abc1234 COMMIT=def5678", "`COMMIT` is given twice: give it once."),
    ("backend tag=v1 TAG=v2", "`TAG` is given twice: give it once."),
    ("backend commit=", ("`commit=` is empty: give a value, e.g. commit=1a2b3c4d, "
                        "or leave commit= out.")),
    ('backend tag=""', "`tag=` is empty: give a value, e.g. tag=v1.2.0, or leave tag= out."),
    ("codeBranch=master", ("`codeBranch=master` looks like a parameter, but the first word "
                          "must be a job name: write /build <job> name=value "
                          "(`/build list` shows your jobs).")),
    ('"unclosed', "The quote opened in `\"unclosed` is not closed: add a closing quote."),
])
def test_errors_say_what_to_change(text: str, message: str) -> None:
    assert parse(text) == ParseError((message,))


def test_all_problems_are_reported_together() -> None:
    result = parse("backend master =x a=1 a=2")
    assert isinstance(result, ParseError)
    assert len(result.problems) == 3
    assert result.message == "\n".join(result.problems)


def test_a_broken_first_word_is_not_mistaken_for_help() -> None:
    assert isinstance(parse('"x help'), ParseError)
    assert isinstance(parse('x="a"b help'), ParseError)
