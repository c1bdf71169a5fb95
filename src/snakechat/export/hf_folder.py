"""A transformers folder written from a checkpoint (snakechat.export.hf_mapping gives each file's content)
and checked by loading it back with transformers: its logits on a probe sequence, its tokenizer's
ids and its chat template's tokens must equal snakechat's, or ExportError."""

import os
from pathlib import Path

import torch

from snakechat.runtime.common import write_json_atomic
from snakechat.model.conversation import render_conversation, render_for_completion
from snakechat.export.hf_mapping import ExportError, generation_config, hf_config, hf_state_dict, tokenizer_files
from snakechat.model.tokenizer import TOKENIZER_FILE

WEIGHTS_FILE = "model.safetensors"
LOGIT_TOLERANCE = 1e-3  # max |logit difference| the verification accepts (mapping errors are O(1))
PROBE_TOKENS = 128

PROBE_TEXT = "Ünïcödé 日本語 🐍 naïve café\n\n\tdef f(x):\n        return x**2  # 1234567 + 0.5e-3\r\n   \n!!!??? {\"k\": [1, 2]}"
# A conversation with every kind of segment, rendered by both sides during verification.
PROBE_CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 12 × 7? Café ☕ costs 3.50€.\n\n  def f(x):\treturn x**2"},
    {"role": "assistant", "content": [
        {"type": "text", "text": "Let me compute: "},
        {"type": "python", "text": "12*7"},
        {"type": "python_output", "text": "84"},
        {"type": "text", "text": " so 84."},
    ]},
    {"role": "user", "content": "And 2024 - 1999?   Ünïcödé 日本語 🐍"},
]


def write_export(out_dir, config, state, tok_dir, tok):
    """Every file of the export into `out_dir` (which exists and is empty)."""
    from safetensors.torch import save_file

    if tok.vocab_size > config.vocab_size:
        raise ExportError(f"tokenizer {tok_dir} has {tok.vocab_size} ids but the model only {config.vocab_size}")
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "config.json", hf_config(config, tok))
    save_file(hf_state_dict(state, config), str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    os.chmod(out_dir / WEIGHTS_FILE, (out_dir / "config.json").stat().st_mode)  # safetensors makes it 0600
    write_json_atomic(out_dir / "generation_config.json", generation_config(tok))
    tokenizer_json, tokenizer_config = tokenizer_files(tok_dir, tok, config.sequence_len)
    (out_dir / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
    write_json_atomic(out_dir / "tokenizer_config.json", tokenizer_config)


def probe_ids(tok, config):
    """A rendered conversation followed by ids drawn from the whole vocabulary."""
    ids = render_conversation(tok, PROBE_CONVERSATION)[0]
    length = min(PROBE_TOKENS, config.sequence_len)
    extra = torch.randint(0, config.vocab_size, (max(0, length - len(ids)),), generator=torch.Generator().manual_seed(0)).tolist()
    return (ids + extra)[:length]


def import_transformers():
    try:
        import transformers
    except ImportError:
        raise SystemExit("export_hf needs transformers to check the export (it loads it back and compares it with snakechat's model): "
                         "pip install 'snakechat[hf]'") from None
    if not hasattr(transformers, "NanoChatForCausalLM"):
        raise SystemExit(f"export_hf needs transformers >= 5.0 (NanoChatForCausalLM); this is transformers {transformers.__version__}: "
                         "pip install -U 'snakechat[hf]'")
    return transformers


@torch.inference_mode()
def verify(out_dir, model, tok):
    """Load the export with transformers and compare it with snakechat; raise ExportError on any difference."""
    transformers = import_transformers()
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise ExportError(f"transformers did not load the export's weights one to one: {problems}")
    hf.eval()
    ids = probe_ids(tok, model.config)
    x = torch.tensor([ids])
    diff = (hf(input_ids=x).logits.float() - model(x)).abs().max().item()
    if not diff <= LOGIT_TOLERANCE:
        raise ExportError(f"transformers' logits differ from snakechat's by up to {diff:.3g} (> {LOGIT_TOLERANCE}) on {len(ids)} probe tokens; "
                          f"NanoChatForCausalLM of transformers {transformers.__version__} does not compute what snakechat's GPT computes")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out_dir)
    text = PROBE_TEXT
    if hf_tok(text, add_special_tokens=False)["input_ids"] != tok.encode(text):
        raise ExportError("the exported tokenizer encodes the probe text differently from snakechat's tokenizer")
    if hf_tok(text)["input_ids"] != [tok.bos_id] + tok.encode(text):
        raise ExportError("the exported tokenizer does not start a text with <|bos|> as snakechat does")
    for generation_prompt, expected in ((False, render_conversation(tok, PROBE_CONVERSATION)[0]), (True, render_for_completion(tok, PROBE_CONVERSATION))):
        got = hf_tok.apply_chat_template(PROBE_CONVERSATION, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True)["input_ids"]
        if got != expected:
            raise ExportError(f"the chat template (add_generation_prompt={generation_prompt}) renders other tokens than snakechat's renderer")
    return {"probe_tokens": len(ids), "max_abs_logit_diff": diff, "transformers_version": transformers.__version__}
