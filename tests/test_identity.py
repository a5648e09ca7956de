"""Paper identity: one key for the same title however it is cased, spaced or punctuated."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from digestmail.identity import key_hash, normalise_title, paper_key, probe_hashes, title_keys


def test_case_spacing_and_punctuation_fold():
    a = "YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information"
    variants = [
        a.upper(), a.lower(), a.replace(": ", " : "), a + ".", "  " + a.replace(" ", "   ") + "  ",
        a.replace(" ", "\u00a0"), a.replace("Learning What", "Learning\nWhat"), a.replace(":", " -"),
    ]
    assert {paper_key(v) for v in variants} == {paper_key(a)}


def test_apostrophes_and_compatibility_forms():
    assert normalise_title("Don’t Stop Pretraining") == normalise_title("Dont stop pretraining")
    assert normalise_title("ﬁne-tuning") == normalise_title("Fine Tuning")  # NFKC: the ligature fi
    assert normalise_title("Straße") == normalise_title("STRASSE")  # casefold, not lower


def test_different_papers_stay_different():
    assert paper_key("Scaling Laws for Neural Language Models") != \
        paper_key("Scaling Laws for Neural Machine Translation")
    assert paper_key("GPT-4 Technical Report") != paper_key("GPT-3 Technical Report")
    assert paper_key("Schrödinger Bridges") != paper_key("Schrodinger Bridges")  # diacritics are kept


@given(st.text())
def test_normalising_is_idempotent(title):
    once = normalise_title(title)
    assert normalise_title(once) == once
    assert once == once.strip() and "  " not in once


@given(st.text())
def test_probe_hashes_are_the_hashes_of_the_probes(title):
    keys = title_keys(title)
    assert probe_hashes(keys) == tuple(key_hash(p) for p in keys.probes())


@given(st.one_of(st.text(), st.lists(st.sampled_from(list("aZ9_ -.'`’:") + ["\t", "\xa0", "\u2028", "\x1c", "ﬁ",
                                                                          "Straße", "İ", "²"])).map("".join)))
def test_normalising_folds_every_run_of_punctuation_and_space_to_one_space(title):
    text = re.sub(r"['\u2018\u2019`\u00b4]", "", unicodedata.normalize("NFKC", title).casefold())
    assert normalise_title(title) == re.sub(r"[\W_]+", " ", text).strip()
    assert title_keys(title).normal == normalise_title(title)
