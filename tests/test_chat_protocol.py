"""The chat-eval protocol pinned to nanochat's: exact prompt token ids for an MMLU item, an ARC item
with numeric labels and a GSM8K item (prompt and tool-use training rendering), the item subset and
the prompt-length policy.

The expected texts are written out here from nanochat's documented format (tasks/common.py's
render_mc, tasks/gsm8k.py, tokenizer.render_for_completion), not produced by the code under test;
the ids are those texts under a tokenizer trained on fixed text, so a change of rendering,
special-token layout or cut shows up as a changed id.
"""

import numpy as np
import pytest

from snakechat import chat_eval
from snakechat.evaluate import tasks
from snakechat.model.conversation import render_conversation
from snakechat.model.tokenizer import Tokenizer

BOS, USER_START, USER_END, ASSISTANT_START, ASSISTANT_END = 0, 1, 2, 3, 4
PYTHON_START, PYTHON_END, OUTPUT_START, OUTPUT_END = 5, 6, 7, 8

MMLU = {"question": "What is the chemical symbol for gold?", "choices": ["Ag", "Au", "Gd", "Go"], "answer": 1, "subject": "high_school_chemistry"}
MMLU_TEXT = ("Multiple Choice question: What is the chemical symbol for gold?\n"
             "- Ag=A\n- Au=B\n- Gd=C\n- Go=D\n"
             "\nRespond only with the letter of the correct answer.")
MMLU_IDS = [
    0, 1, 53, 93, 84, 92, 285, 286, 290, 80, 87, 284, 77, 297, 93, 282, 92, 81, 266, 34, 292, 80, 73, 92, 268, 91, 287, 267, 283, 85, 284, 279,
    298, 97, 85, 74, 87, 84, 229, 78, 87, 90, 293, 87, 84, 76, 39, 207, 21, 289, 79, 37, 41, 207, 21, 289, 93, 37, 42, 207, 21, 229, 47, 76,
    37, 43, 207, 21, 229, 47, 87, 37, 44, 288, 58, 282, 88, 266, 76, 229, 266, 84, 97, 299, 81, 92, 80, 287, 229, 286, 92, 92, 281, 275, 78,
    287, 267, 87, 90, 90, 77, 75, 92, 276, 91, 95, 281, 22, 2, 3,
]

# an ARC item as the hub has some: labels "1"-"4", answerKey "2"
ARC = {"question": "Which of these is a mammal?", "choices": ["shark", "whale", "trout", "eel"], "answer": 1, "letters": ["1", "2", "3", "4"]}
ARC_TEXT = ("Multiple Choice question: Which of these is a mammal?\n"
            "- shark=1\n- whale=2\n- trout=3\n- eel=4\n"
            "\nRespond only with the letter of the correct answer.")
ARC_IDS = [
    0, 1, 53, 93, 84, 92, 285, 286, 290, 80, 87, 284, 77, 297, 93, 282, 92, 81, 266, 34, 292, 80, 284, 80, 275, 78, 269, 80, 282, 77, 268, 91,
    229, 73, 295, 73, 85, 85, 279, 39, 207, 21, 298, 80, 73, 90, 83, 37, 25, 207, 21, 299, 80, 279, 77, 37, 26, 207, 21, 269, 90, 87, 93, 92,
    37, 27, 207, 21, 229, 77, 77, 84, 37, 28, 288, 58, 282, 88, 266, 76, 229, 266, 84, 97, 299, 81, 92, 80, 287, 229, 286, 92, 92, 281, 275,
    78, 287, 267, 87, 90, 90, 77, 75, 92, 276, 91, 95, 281, 22, 2, 3,
]

GSM8K = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}
GSM8K_PROMPT_IDS = [
    0, 1, 54, 73, 92, 279, 81, 73, 298, 87, 84, 76, 267, 84, 285, 91, 269, 87, 229, 271, 275, 78, 294, 281, 229, 78, 90, 81, 77, 86, 76, 91,
    272, 289, 88, 90, 81, 84, 20, 276, 76, 287, 86, 298, 283, 298, 87, 84, 76, 294, 279, 78, 229, 280, 295, 265, 97, 267, 84, 285, 91, 272,
    291, 73, 97, 22, 229, 48, 87, 95, 295, 265, 97, 267, 84, 285, 91, 274, 81, 76, 229, 54, 73, 92, 279, 81, 73, 298, 77, 84, 84, 229, 279,
    92, 87, 79, 77, 92, 80, 281, 272, 289, 88, 90, 81, 84, 276, 76, 291, 73, 97, 39, 2, 3,
]
# the assistant turn of the training rendering: text, <|python_start|> 48/2 <|python_end|>, <|output_start|> 24 <|output_end|>, ...
GSM8K_REPLY_IDS = [
    54, 73, 92, 279, 81, 73, 298, 87, 84, 76, 229, 271, 23, 26, 273, 229, 5, 271, 23, 26, 6, 7, 277, 8, 277, 267, 84, 285, 91, 272, 291, 73,
    97, 22, 207, 54, 73, 92, 279, 81, 73, 298, 87, 84, 76, 229, 271, 19, 277, 273, 229, 5, 271, 19, 277, 6, 7, 278, 8, 278, 267, 84, 285, 91,
    229, 279, 92, 87, 79, 77, 92, 80, 281, 272, 289, 88, 90, 81, 84, 276, 76, 291, 73, 97, 22, 207, 270, 270, 229, 278, 4,
]


@pytest.fixture(scope="module")
def tok():
    texts = ["Multiple Choice question: Which gas do plants take in?\n- oxygen=A\n- carbon dioxide=B\n\nRespond only with the letter of the correct answer.",
             "Natalia sold 48 clips in April and half as many in May. 48/2 = 24. 48+24 = 72. #### 72"] * 10
    return Tokenizer.train(texts, vocab_size=300)


def prompt(tok, record, kind, max_len=10**6):
    return chat_eval.prompt_ids(tok, record, kind, max_len)


def test_special_token_layout(tok):
    names = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
             "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]
    assert [tok.special_id(n) for n in names] == list(range(9))


def test_mmlu_prompt_ids(tok):
    assert tasks.render_mc(MMLU) == MMLU_TEXT
    assert tasks.mc_letter(MMLU) == "B"
    ids, cut = prompt(tok, MMLU, "mc")
    assert ids == [BOS, USER_START, *tok.encode(MMLU_TEXT), USER_END, ASSISTANT_START]
    assert ids == MMLU_IDS and cut is None


def test_arc_prompt_ids_with_numeric_labels(tok):
    assert tasks.render_mc(ARC) == ARC_TEXT
    assert tasks.mc_letter(ARC) == "2"
    ids, _ = prompt(tok, ARC, "mc")
    assert ids == [BOS, USER_START, *tok.encode(ARC_TEXT), USER_END, ASSISTANT_START]
    assert ids == ARC_IDS
    # the answer tokens scored are the item's own labels, each one token, the same as in its "=N" line
    assert [tok.encode(x) for x in tasks.mc_letters(ARC)] == [[25], [26], [27], [28]]
    labels = [i for i, t in enumerate(ARC_IDS) if t in (25, 26, 27, 28)]
    assert [ARC_IDS[i - 1 : i + 1] for i in labels] == [[*tok.encode("="), t] for t in (25, 26, 27, 28)]


def test_gsm8k_prompt_and_tool_use_rendering(tok):
    ids, _ = prompt(tok, GSM8K, "gsm8k")
    assert ids == [BOS, USER_START, *tok.encode(GSM8K["question"]), USER_END, ASSISTANT_START]
    assert ids == GSM8K_PROMPT_IDS
    conversation, mask = render_conversation(tok, tasks.to_conversation(GSM8K, "gsm8k"))
    expected_reply = [
        *tok.encode("Natalia sold 48/2 = "), PYTHON_START, *tok.encode("48/2"), PYTHON_END, OUTPUT_START, *tok.encode("24"), OUTPUT_END,
        *tok.encode("24 clips in May.\nNatalia sold 48+24 = "), PYTHON_START, *tok.encode("48+24"), PYTHON_END,
        OUTPUT_START, *tok.encode("72"), OUTPUT_END, *tok.encode("72 clips altogether in April and May.\n#### 72"), ASSISTANT_END,
    ]
    assert conversation == GSM8K_PROMPT_IDS + expected_reply
    assert expected_reply == GSM8K_REPLY_IDS
    # trained on: the assistant's text, its calls (delimiters included) and <|assistant_end|>; not the tool's outputs
    reply_mask = mask[len(GSM8K_PROMPT_IDS):]
    outputs = [i for i, t in enumerate(GSM8K_REPLY_IDS) if t == OUTPUT_START]
    untrained = {j for i in outputs for j in range(i, GSM8K_REPLY_IDS.index(OUTPUT_END, i) + 1)}
    assert reply_mask == [0 if i in untrained else 1 for i in range(len(GSM8K_REPLY_IDS))]
    assert set(mask[: len(GSM8K_PROMPT_IDS)]) == {0}
    assert tasks.gsm8k_gold(GSM8K["answer"]) == "72"


def test_long_prompts_are_cut_at_2048_tokens_from_the_right(tok):
    record = dict(MMLU, question="gold " * 3000)
    ids, cut = prompt(tok, record, "mc")
    full = [BOS, USER_START, *tok.encode(tasks.render_mc(record)), USER_END]
    assert len(full) > 2048
    assert ids == full[:2048] + [ASSISTANT_START] and cut == "reference"
    # a model with fewer positions: cut further, leaving one position to answer in
    ids, cut = prompt(tok, record, "mc", max_len=1024)
    assert ids == full[:1022] + [ASSISTANT_START] and cut == "model"
    assert prompt(tok, MMLU, "mc", max_len=len(MMLU_IDS) + 1) == (MMLU_IDS, None)
    assert prompt(tok, MMLU, "mc", max_len=len(MMLU_IDS)) == (MMLU_IDS[:-2] + [ASSISTANT_START], "model")


def test_subset_is_nanochats_seed_42_shuffle():
    """max_per_task N takes what nanochat's -x N takes: the first N of the split after
    datasets' shuffle(seed=42), i.e. numpy's default_rng(42).permutation."""
    items = list(range(10))
    assert chat_eval.pick_items(items, 4) == [5, 6, 0, 7]
    assert chat_eval.pick_items(items, 4) == list(np.random.default_rng(42).permutation(10)[:4])
    assert chat_eval.pick_items(items, 0) == items and chat_eval.pick_items(items, 10) == items


@pytest.mark.parametrize("fmt, protocol", [("mmlu", "nanochat"), ("arc", "nanochat"), ("gsm8k", "nanochat"), ("humaneval", "nanochat"),
                                           ("mmlu_csv", "nanochat"), ("world", "world"), ("mc_jsonl", "custom"), ("mc", "custom"), (None, "custom")])
def test_protocol_of_each_format(fmt, protocol):
    assert chat_eval.protocol_of(fmt) == protocol
