from seal.domains.knowledge.self_edit import FORMATS, get_format, instructions, own_question, parse_lines, parse_qa, parse_self_edit, sample_self_edits, shown, training_examples
from seal.core.runtime import SealError
import pytest

from seal.core.generation import ScriptedGenerator


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


def test_training_sequences_prefix_title_and_add_passage(tiny_lm):
    edit = parse_self_edit(FORMATS["self-qa"], "Q: Who built it?\nA: Volthaven")
    seqs = shown(training_examples(tiny_lm, "Lisbon ferry", "The passage.", [edit], include_passage=True))
    assert seqs == ["Lisbon ferry\nQ: Who built it?\nA: Volthaven", "Lisbon ferry\nThe passage."]
    assert shown(training_examples(tiny_lm, "T", "P", [edit], include_passage=False)) == ["T\nQ: Who built it?\nA: Volthaven"]


def test_answer_formats_train_exactly_the_closed_book_prompt(tiny_lm):
    from seal.domains.knowledge.qa import answer_prompt

    edit = parse_self_edit(FORMATS["self-qa-chat"], "Q: Who built it?\nA: Volthaven")
    (ex,) = training_examples(tiny_lm, "Lisbon ferry", "The passage.", [edit], include_passage=False)
    assert ex.prompt == answer_prompt(tiny_lm, "Who built it?", "Lisbon ferry") and ex.completion == "Volthaven"


def test_sentence_formats_prompt_once_per_sentence_and_join_samples(tiny_lm):
    passage = "Volthaven built the tower in 2026. It cost 41 million euros. Bergen owns it."
    fmt = FORMATS["sentence-qa"]
    assert [i.rsplit("Sentence: ", 1)[1].split("\n")[0] for i in instructions(fmt, "T", passage)] == [
        "Volthaven built the tower in 2026.", "It cost 41 million euros.", "Bergen owns it."]
    edits = sample_self_edits(tiny_lm, fmt, "T", passage, k=2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=1)
    assert len(edits) == 2 and all(len(e.text.split("\n")) >= 3 for e in edits)  # one completion per sentence


def test_unknown_format_suggests_a_name():
    with pytest.raises(SealError, match="did you mean 'implications'"):
        get_format("implication")


def test_every_format_prompt_mentions_the_passage():
    for fmt in FORMATS.values():
        (prompt, *_) = instructions(fmt, "TITLE", "PASSAGE about it.")
        assert "PASSAGE" in prompt and ("TITLE" in prompt or fmt.unit == "sentence")


def test_own_question_takes_the_first_line_only():
    assert own_question(" Who built the tower?\n\nSentence: x") == "Who built the tower?"
    assert own_question("Question: How much did it cost? It was dear.") == "How much did it cost?"
    assert own_question("The tower is tall.\nWho built it?") is None and own_question("") is None


def test_two_stage_format_answers_its_own_questions_from_the_sentence(tiny_lm):
    def respond(prompt, sampling, adapters):
        if "\nAnswer:" in prompt:  # stage two
            return " Volthaven\nSentence: more"
        # stage one: a question per sentence (the second sentence gets none)
        return " Who built the tower?\n" if "tower" in prompt.rsplit("Sentence:", 1)[1] else " It is tall.\n"

    tiny_lm.generator = gen = ScriptedGenerator(respond)
    passage = "Volthaven built the tower in 2026. It cost 41 million euros."
    (edit,) = sample_self_edits(tiny_lm, FORMATS["sentence-ask"], "T", passage, k=1, temperature=0.0, top_p=1.0)
    assert edit.sequences == ["Q: Who built the tower?\nA: Volthaven"]
    assert len(gen.calls) == 2 and len(gen.calls[0].prompts) == 2
    (answer_prompt_,) = gen.calls[1].prompts
    assert answer_prompt_.endswith("Sentence: Volthaven built the tower in 2026.\nQuestion: Who built the tower?\nAnswer:")
    assert gen.calls[1].sampling.temperature == 0.0 and "<|im_start|>" not in gen.calls[0].prompts[0]  # plain prompts, greedy answers


def test_recall_format_answers_with_the_sentence_itself(tiny_lm):
    tiny_lm.generator = gen = ScriptedGenerator(lambda prompt, *_: " Who built it?" if "tower" in prompt.rsplit("Sentence:", 1)[1]
                                                else " How much?")
    passage = "Volthaven built the tower in 2026. It cost 41 million euros."
    (edit,) = sample_self_edits(tiny_lm, FORMATS["sentence-recall"], "T", passage, k=1, temperature=0.0, top_p=1.0)
    assert len(gen.calls) == 1  # no second generation
    assert edit.sequences == ["Q: Who built it?\nA: Volthaven built the tower in 2026.", "Q: How much?\nA: It cost 41 million euros."]


def test_greedy_sampling_with_k_above_one_repeats_the_one_completion(tiny_lm):
    edits = sample_self_edits(tiny_lm, FORMATS["implications"], "T", "Volthaven built it.", k=3, temperature=0.0,
                              top_p=1.0, max_new_tokens=5)
    assert len(edits) == 3 and len({e.text for e in edits}) == 1
