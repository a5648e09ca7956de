"""Config loading: the example is valid and complete; every error names the file and the dotted key."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from digestmail.config import SCHEMA, SUBSCRIBER_KEYS, iter_subscribers_file, load_config
from digestmail.errors import ConfigError

from .conftest import ROOT

BASE = """
[delivery]
from = "Papers <papers@example.org>"
[topics]
optimizers = "optimizer OR adam"
federated = "federated"
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_config(path)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert err.value.exit_code == 2
    return str(err.value)


def test_example_config_loads_and_documents_every_key():
    config = load_config(ROOT / "config.example.toml")
    assert config.transport == "file" and config.subscribers[0].email == "ada@example.org"
    assert config.inbox == ROOT / "examples" / "inbox"
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    for table, keys in SCHEMA.items():
        if table:
            assert re.search(rf"^#?\s*\[{re.escape(table)}\]", text, re.M), f"[{table}] not in the example"
        for name in keys:
            assert re.search(rf"^#?\s*{re.escape(name)}\s*=", text, re.M), f"{table}.{name} not documented"
    for name in SUBSCRIBER_KEYS:
        assert re.search(rf"^{name}\s*=", text, re.M)


def test_defaults_and_relative_paths(tmp_path):
    config = load(tmp_path, BASE)
    assert config.store_path == tmp_path / "digestmail.sqlite3"
    assert config.inbox == tmp_path / "inbox" and config.outbox == tmp_path / "outbox"
    assert config.subscribers == () and config.smtp is None


def test_unknown_key_suggests_the_right_one(tmp_path):
    msg = error(tmp_path, BASE.replace('[delivery]', '[delivery]\ntransprot = "file"'))
    assert "delivery.transprot" in msg and "did you mean delivery.transport" in msg and "c.toml" in msg


def test_unknown_table(tmp_path):
    assert "did you mean store" in error(tmp_path, BASE + "\n[stor]\npath = 'x'\n")


def test_wrong_type_names_the_indexed_subscriber_key(tmp_path):
    subs = "".join(f'\n[[subscribers]]\nemail = "u{i}@example.org"\ntopics = ["federated"]\n' for i in range(3))
    msg = error(tmp_path, BASE + subs + 'max_papers = "ten"\n')
    assert "subscribers[2].max_papers" in msg and "must be an integer" in msg


def test_bool_is_not_an_integer(tmp_path):
    msg = error(tmp_path, BASE + '[[subscribers]]\nemail = "a@example.org"\ntopics = ["federated"]\nmax_papers = true\n')
    assert "subscribers[0].max_papers" in msg


def test_unknown_topic_suggests(tmp_path):
    msg = error(tmp_path, BASE + '[[subscribers]]\nemail = "a@example.org"\ntopics = ["optimiser"]\n')
    assert "subscribers[0].topics" in msg and "'optimizers'" in msg


def test_broken_rule_names_topic_and_column(tmp_path):
    msg = error(tmp_path, BASE + 'bad = "adam OR"\n')
    assert "topics.bad" in msg and "column" in msg and "^" in msg


def test_broken_query_names_subscriber(tmp_path):
    msg = error(tmp_path, BASE + '[[subscribers]]\nemail = "a@example.org"\nquery = "\\"unclosed"\n')
    assert "subscribers[0].query" in msg and "unclosed quote" in msg


@pytest.mark.parametrize("email", ["not-an-address", "a@b", "ada@example.org\r\nBcc: x@y.org", "äda@example.org"])
def test_bad_email(tmp_path, email):
    msg = error(tmp_path, BASE + f'[[subscribers]]\nemail = {email!r}\ntopics = ["federated"]\n'.replace("'", '"'))
    assert "subscribers[0].email" in msg


def test_control_characters_in_name_are_refused(tmp_path):
    msg = error(tmp_path, BASE + '[[subscribers]]\nemail = "a@example.org"\nname = "Ada\\r\\nBcc: x@y.org"\ntopics = ["federated"]\n')
    assert "subscribers[0].name" in msg and "control character" in msg


def test_duplicate_subscriber(tmp_path):
    sub = '[[subscribers]]\nemail = "A@example.org"\ntopics = ["federated"]\n'
    assert "listed twice" in error(tmp_path, BASE + sub + sub.replace("A@", "a@"))


def test_subscriber_without_topics_or_query(tmp_path):
    assert "needs topics or a query" in error(tmp_path, BASE + '[[subscribers]]\nemail = "a@example.org"\n')


def test_missing_required_from(tmp_path):
    assert "delivery.from is required" in error(tmp_path, "[store]\npath = 'x.db'\n")


def test_invalid_toml_names_the_line(tmp_path):
    msg = error(tmp_path, BASE + "\n[store\n")
    assert "not valid TOML" in msg and "line" in msg


def test_missing_file_has_a_hint(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.toml")
    assert "does not exist" in str(err.value) and "config.example.toml" in str(err.value)


def test_unknown_transport(tmp_path):
    msg = error(tmp_path, BASE.replace("[delivery]", '[delivery]\ntransport = "pigeon"'))
    assert "delivery.transport" in msg and "file, maildir, smtp" in msg


def test_smtp_settings(tmp_path, monkeypatch):
    config = load(tmp_path, BASE.replace("[delivery]", '[delivery]\ntransport = "smtp"') +
                  '[delivery.smtp]\nhost = "mail.example.org"\nusername = "bot"\npassword_env = "DM_TEST_PW"\n')
    assert config.smtp.port == 587 and config.smtp.security == "starttls"
    monkeypatch.delenv("DM_TEST_PW", raising=False)
    with pytest.raises(ConfigError, match="DM_TEST_PW"):
        config.smtp.password()
    monkeypatch.setenv("DM_TEST_PW", "s3cret")
    assert config.smtp.password() == "s3cret"


def test_smtp_refuses_password_without_tls(tmp_path):
    msg = error(tmp_path, BASE.replace("[delivery]", '[delivery]\ntransport = "smtp"') +
                '[delivery.smtp]\nhost = "h"\nsecurity = "none"\nusername = "bot"\npassword_env = "X"\n')
    assert "delivery.smtp.username" in msg and "without TLS" in msg


def test_smtp_unknown_key(tmp_path):
    msg = error(tmp_path, BASE + '[delivery.smtp]\nhots = "h"\n')
    assert "delivery.smtp.hots" in msg and "did you mean delivery.smtp.host" in msg


def test_subscribers_csv(tmp_path):
    csv_path = tmp_path / "subs.csv"
    csv_path.write_text("email,name,topics,query,max_papers\n"
                        "a@example.org,Ann,optimizers;federated,,5\n"
                        "b@example.org,,,grokking,\n", encoding="utf-8")
    config = load(tmp_path, 'subscribers_file = "subs.csv"\n' + BASE)
    subs = list(iter_subscribers_file(config.subscribers_file, config.topics))
    assert subs[0].topics == ("optimizers", "federated") and subs[0].max_papers == 5
    assert subs[1].query == "grokking" and subs[1].max_papers == 10


@pytest.mark.parametrize("row, where, what", [
    ("c@example.org,,nosuch,,", ":3.topics", "unknown topic"),
    ("c@example.org,,federated,,many", ":3.max_papers", "integer"),
    ("bad,,federated,,", ":3.email", "not a valid email"),
    ("c" * 243 + "@example.org,,federated,,", ":3.email", "at most 254"),
])
def test_subscribers_csv_errors_name_the_line(tmp_path, row, where, what):
    csv_path = tmp_path / "subs.csv"
    csv_path.write_text("email,name,topics,query,max_papers\na@example.org,,federated,,\n" + row + "\n")
    config = load(tmp_path, 'subscribers_file = "subs.csv"\n' + BASE)
    with pytest.raises(ConfigError) as err:
        list(iter_subscribers_file(config.subscribers_file, config.topics))
    assert f"subs.csv{where}" in str(err.value) and what in str(err.value)


def test_subscribers_csv_unknown_column(tmp_path):
    (tmp_path / "subs.csv").write_text("email,topic\na@example.org,federated\n")
    config = load(tmp_path, 'subscribers_file = "subs.csv"\n' + BASE)
    with pytest.raises(ConfigError, match="subs.csv:1"):
        list(iter_subscribers_file(config.subscribers_file, config.topics))


def test_subscribers_csv_columns_in_any_order_blank_lines_and_short_rows(tmp_path):
    # Columns in the file's own order; a missing column or a row cut short means the defaults; blank
    # lines are skipped and do not shift the line numbers in errors.
    (tmp_path / "subs.csv").write_text("max_papers,email,topics\n"
                                       "3,a@example.org,federated\n"
                                       "\n"
                                       ",b@example.org,optimizers\n"
                                       "4,c@example.org\n"
                                       "5,bad,federated\n", encoding="utf-8")
    config = load(tmp_path, 'subscribers_file = "subs.csv"\n' + BASE)
    subs = iter_subscribers_file(config.subscribers_file, config.topics)
    a, b = next(subs), next(subs)
    assert (a.email, a.topics, a.max_papers, a.name, a.min_papers) == ("a@example.org", ("federated",), 3, "", 1)
    assert (b.email, b.max_papers, b.backfill_days) == ("b@example.org", 10, 7)
    with pytest.raises(ConfigError, match=r"subs\.csv:5: .*needs topics or a query"):
        next(subs)  # c: no topics column value, no query


def test_subscribers_csv_naming_a_column_twice_is_refused(tmp_path):
    (tmp_path / "subs.csv").write_text("email,topics,email\na@example.org,federated,b@example.org\n")
    config = load(tmp_path, 'subscribers_file = "subs.csv"\n' + BASE)
    with pytest.raises(ConfigError, match=r"subs\.csv:1: .*email more than once"):
        list(iter_subscribers_file(config.subscribers_file, config.topics))


def test_a_base_url_too_long_for_the_unsubscribe_header_is_refused(tmp_path):
    web = '[web]\nsecret_env = "KEY"\nbase_url = "https://papers.example.org/{}"\n'
    assert load(tmp_path, BASE + web.format("p" * 400)).web is not None
    msg = error(tmp_path, BASE + web.format("p" * 500))
    assert "web.base_url" in msg and "at most 500" in msg
