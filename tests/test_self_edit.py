from seal.self_edit import FORMATS, get_format, parse_lines, parse_qa, parse_self_edit, training_sequences
from seal.runtime import SealError
import pytest


def test_lines_drop_preamble_bullets_fragments_and_repeats():
    text = (
        "Here are some implications of the article:\n"
        "1. Volthaven supplied the batteries for the ferry.\n"
        "- The ferry crosses the river 48 times a day.\n\n"
        "* The ferry crosses the river 48 times a day.\n"
        "Ferry\n"
        "Consequences:\n"
        "Ilda Ferraz led the project."
    )
    kept, rejected = parse_lines(text)
    assert kept == [
        "Volthaven supplied the batteries for the ferry.",
        "The ferry crosses the river 48 times a day.",
        "Ilda Ferraz led the project.",
    ]
    reasons = [r.split(":")[0] for r in rejected]
    assert reasons == ["preamble", "repeat", "too short", "heading"]


def test_first_line_kept_when_it_is_content():
    kept, _ = parse_lines("Volthaven supplied the batteries.\nThe ferry runs daily now.")
    assert kept[0] == "Volthaven supplied the batteries."


def test_qa_pairs_stay_together():
    text = (
        "Sure! Here are questions:\n"
        "Q: Who supplied the batteries?\nA: Volthaven\n"
        "Question 2: How many crossings a day?\nAnswer: 48\n"
        "Q: Who led it? A: Ilda Ferraz\n"
        "Q: A question with no answer?\n"
        "Q: Who supplied the batteries?\nA: Volthaven\n"
    )
    kept, rejected = parse_qa(text)
    assert kept == [
        "Q: Who supplied the batteries?\nA: Volthaven",
        "Q: How many crossings a day?\nA: 48",
        "Q: Who led it?\nA: Ilda Ferraz",
    ]
    assert any(r.startswith("question without answer") for r in rejected)
    assert any(r.startswith("repeat") for r in rejected)


@pytest.mark.parametrize("text,reason", [("", "empty generation"), ("\n \n", "empty generation"), ("ok ok\nyes", "no usable line")])
def test_degenerate_generation_is_data_not_error(text, reason):
    edit = parse_self_edit(FORMATS["implications"], text)
    assert not edit.usable and edit.rejected[-1] == reason


def test_training_sequences_prefix_title_and_add_passage():
    edit = parse_self_edit(FORMATS["self-qa"], "Q: Who built it?\nA: Volthaven")
    seqs = training_sequences("Lisbon ferry", "The passage.", [edit], include_passage=True)
    assert seqs == ["Lisbon ferry\nQ: Who built it?\nA: Volthaven", "Lisbon ferry\nThe passage."]
    assert training_sequences("T", "P", [edit], include_passage=False) == ["T\nQ: Who built it?\nA: Volthaven"]


def test_unknown_format_suggests_a_name():
    with pytest.raises(SealError, match="did you mean 'implications'"):
        get_format("implication")


def test_every_format_prompt_mentions_the_passage():
    for fmt in FORMATS.values():
        prompt = fmt.instruction.format(title="TITLE", passage="PASSAGE")
        assert "TITLE" in prompt and "PASSAGE" in prompt
