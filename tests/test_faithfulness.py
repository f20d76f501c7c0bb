"""Faithfulness and coverage of self-edit lines against their passage (issue 6)."""

from seal.domains.knowledge.faithfulness import check_lines, coverage, key_terms, sentences
from seal.domains.knowledge.self_edit import FORMATS, parse_self_edit

TITLE = "Bergen electric ferry charging tower"
PASSAGE = ("In March 2026 the Bergen port authority opened the Ladefjord charging tower. "
           "It was built by Volthaven for 41 million euros. "
           "The tower charges three ferries at once in under twelve minutes.")


def test_key_terms_are_names_numbers_and_long_words_not_sentence_starts():
    assert key_terms("The tower was built by Volthaven in 2026 for 1,200 euros.") == {"volthaven", "2026", "1200"}
    assert key_terms("Engineers' cars and twelve ferries") == {"engineer", "twelve"}  # plural/possessive folded
    assert key_terms("the tower") == set()  # short lowercase words carry no fact
    assert "electricity" in key_terms("the electricity")  # long words count as rare...
    assert key_terms("the electricity", long_words=False) == set()  # ...but are not facts


def test_invented_names_and_numbers_lower_the_score_and_can_be_dropped():
    lines = ["Volthaven built the Ladefjord tower for 41 million euros.",  # all found
             "Siemens built a tower in Oslo for 90 million euros.",  # invented company, city, number
             "It is an important step for the future."]  # no facts: unscored, kept
    check = check_lines(lines, TITLE, PASSAGE)
    assert check["kept"] == lines and check["filter_rate"] == 0.0
    assert check["faithfulness"] == round(5 / 8, 4)  # Volthaven Ladefjord 41 million | Siemens Oslo 90 million
    strict = check_lines(lines, TITLE, PASSAGE, min_faithfulness=1.0)
    assert strict["kept"] == [lines[0], lines[2]] and strict["dropped"][0][0] == lines[1]
    assert strict["filter_rate"] == round(1 / 3, 4)


def test_coverage_counts_passage_sentences_a_line_is_about():
    assert len(sentences(PASSAGE)) == 3
    assert coverage(["Volthaven built the Ladefjord tower for 41 million euros."], PASSAGE) == 1 / 3
    assert coverage(["In March 2026 Bergen opened Ladefjord.", "Volthaven was paid 41 million."], PASSAGE) == 2 / 3
    assert coverage(["It charges three ferries in twelve minutes."], PASSAGE) == 1 / 3  # number words count
    assert coverage([], PASSAGE) == 0.0


def test_parse_self_edit_records_scores_and_unfaithful_reasons():
    text = "Volthaven built the Ladefjord tower for 41 million.\nSiemens built it in Oslo in 1999."
    edit = parse_self_edit(FORMATS["implications"], text, TITLE, PASSAGE, min_faithfulness=0.5)
    assert edit.sequences == ["Volthaven built the Ladefjord tower for 41 million."]
    assert any(r.startswith("unfaithful (0.00)") for r in edit.rejected)
    assert edit.filter_rate == 0.5 and edit.faithfulness is not None and edit.coverage == round(1 / 3, 4)
    qa = parse_self_edit(FORMATS["self-qa"], "Q: Who built the tower?\nA: Volthaven", TITLE, PASSAGE)
    assert qa.faithfulness == 1.0  # the "Q"/"A" labels are not names


def test_sentences_do_not_break_after_titles_abbreviations_or_initials():
    # Each case is taken from a bundled passage or the SQuAD slice where the old regex split wrongly.
    for text in ["Chief executive Dr. Adaeze Okonkwo-Bello said the drones fly at night.",
                 "It kept 212 homes warm in Winnipeg's St. Boniface district.",
                 "Corporation water engineer S. Kalaiselvi Raman said the aim is recharge.",
                 "It took the name from George B. Storer in 1944.",
                 "Exhibits went to the John F. Kennedy Space Center on Merritt Island."]:
        assert sentences(text) == [text]


def test_sentences_break_after_closing_quotes_and_parentheses():
    text = ('Its pilot said: "Passengers can see a human is still in charge." The operator plans to extend it. '
            '(The route opened in 2026.) It runs daily.')
    assert sentences(text) == ['Its pilot said: "Passengers can see a human is still in charge."',
                               "The operator plans to extend it.", "(The route opened in 2026.)", "It runs daily."]


def test_sentences_are_verbatim_substrings_in_order():
    text = "  The firm was renamed American Broadcasting Companies, Inc. Woods stayed on.  It said don't.\n"
    parts = sentences(text)
    assert parts == ["The firm was renamed American Broadcasting Companies, Inc.", "Woods stayed on.", "It said don't."]
    assert sentences("") == [] and sentences("   ") == []
    assert sentences("No final stop") == ["No final stop"]


def test_bundled_passages_split_where_the_old_regex_did_not():
    from seal.domains.knowledge.data import load_dataset

    by_id = {p.id: p for p in load_dataset("fresh-facts")}
    assert [s for s in sentences(by_id["ff-eval-002"].context) if s.endswith("Dr.")] == []
    quoted = sentences(by_id["ff-train-001"].context)
    assert any(s.endswith('in charge."') for s in quoted)  # the regex ran this into the next sentence
