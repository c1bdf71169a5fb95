"""Export a snakechat checkpoint to the Hugging Face transformers format (`model_type: nanochat`).

Launch lines:

    python -m snakechat.export_hf --checkpoint results/sft/tiny --out results/hf/tiny/sft
    python -m snakechat.export_hf --checkpoint results/base/d20 --out results/hf/d20/base

The folder loads with `AutoModelForCausalLM` / `AutoTokenizer` (transformers >= 5.0, which ships
`NanoChatForCausalLM`) and serves with vLLM's transformers backend. It holds config.json,
generation_config.json, model.safetensors (float32, the dtype snakechat loads checkpoints in),
tokenizer.json, tokenizer_config.json (with the chat template) and snakechat_export.json (the
checkpoint it came from, the verification figures and the provenance block).

The files are written without transformers, but exporting needs the `hf` extra
(`pip install 'snakechat[hf]'`): before the folder is renamed into place it is loaded back with
transformers, and the export is refused unless its logits match snakechat's model on a probe
sequence, its tokenizer gives snakechat's ids and its chat template renders snakechat's tokens.

How snakechat's GPT maps onto NanoChatForCausalLM (exact in float32):

- weights: `wte` -> `model.embed_tokens`, `lm_head` -> `lm_head` (untied in both);
  `blocks.i.attn.c_q/c_k/c_v/c_proj` -> `model.layers.i.self_attn.q_proj/k_proj/v_proj/o_proj`;
  `blocks.i.mlp.c_fc/c_proj` -> `model.layers.i.mlp.fc1/fc2` (ReLU² between them in both).
  Neither model has biases or norm weights.
- rotary direction: both split each head into halves (x1, x2) with the same frequencies
  (base `ROPE_BASE` -> `rope_theta`), but snakechat rotates by +angle (x1 cos - x2 sin,
  x1 sin + x2 cos) and NanoChat by -angle (x1 cos + x2 sin, x2 cos - x1 sin). The exporter negates
  the rows of q_proj and k_proj that make each head's second half: NanoChat's rotation of
  (x1, -x2) is snakechat's result with its second half negated. The QK RMSNorm (after rotary in
  both) does not see a sign, and the sign flips cancel in every query-key product, so attention
  is unchanged.
- norms: `F.rms_norm` without eps uses float32's machine epsilon (2^-23), so `rms_norm_eps` is
  2^-23 (NanoChat's default 1e-6 would not be exact). Embeddings are normed before the first
  block and the residual stream after the last one in both.
- attention: scaled by 1/sqrt(head_dim) in both; with fewer kv heads each one serves
  consecutive query heads in both (`n_kv_head` -> `num_key_value_heads`).
- head: logits soft-capped as cap * tanh(x / cap) in both (`LOGIT_SOFTCAP` -> `final_logit_softcapping`).
- context: `max_position_embeddings` is the trained `sequence_len` (base_eval crops there for
  both). Positions beyond it stay exact: NanoChat computes rotary angles for any position, while
  snakechat's engine stops at its rotary table (4 x sequence_len).
- tokens: bos is <|bos|> (the tokenizer prepends it, as snakechat starts every document with it);
  generation stops at <|assistant_end|> or <|bos|>, as snakechat's engine does. The calculator
  tool is snakechat's engine's own: transformers and vLLM leave a <|python_start|> call unanswered.
- chat template: renders exactly `conversation.render_conversation` / `render_for_completion`
  (`add_generation_prompt`): a system message merged into the first user message with a blank
  line, assistant content as text or parts (python calls and outputs between their delimiters),
  <|assistant_end|> after every assistant turn. One difference no template can remove: HF
  tokenizers read special-token text inside a message (a literal "<|user_end|>") as the special
  token, while snakechat encodes it as plain text.

Anything else refuses the export, naming it: a model_config key or weight tensor the mapping does
not know (sliding windows, value embeddings, per-layer scalars...), a shape that does not fit, a
tokenizer without snakechat's special tokens.
"""

import argparse
import dataclasses
import json
import os
from pathlib import Path

import torch

from snakechat import gpt
from snakechat.checkpoint import MODEL_FILE, CheckpointError, load_meta, verified
from snakechat.common import atomic_dir, write_json_atomic
from snakechat.conversation import render_conversation, render_for_completion
from snakechat.provenance import hash_file, record
from snakechat.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE, Tokenizer

WEIGHTS_FILE = "model.safetensors"
EXPORT_META = "snakechat_export.json"
RMS_NORM_EPS = torch.finfo(torch.float32).eps  # F.rms_norm's default for float32 inputs
STOP_TOKENS = ("<|assistant_end|>", "<|bos|>")  # where snakechat's engine ends a row
LOGIT_TOLERANCE = 1e-3  # max |logit difference| the verification accepts (mapping errors are O(1))
PROBE_TOKENS = 128
# The GPTConfig fields the mapping covers. A field added to GPTConfig is refused until it is mapped here.
MAPPED_CONFIG_KEYS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")

CHAT_TEMPLATE = r"""
{%- macro text_of(content) -%}
{%- if content is string -%}{{ content }}{%- else -%}{%- for part in content -%}{{ part['text'] }}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- set turns = messages -%}
{%- set system = none -%}
{%- if messages and messages[0]['role'] == 'system' -%}
{%- if messages | length < 2 or messages[1]['role'] != 'user' -%}
{{- raise_exception('message 0 (system): a system message must be followed by a user message') -}}
{%- endif -%}
{%- set system = text_of(messages[0]['content']) -%}
{%- set turns = messages[1:] -%}
{%- endif -%}
<|bos|>
{%- for message in turns -%}
{%- set expected = 'user' if loop.index0 % 2 == 0 else 'assistant' -%}
{%- set article = 'a ' if expected == 'user' else 'an ' -%}
{%- if message['role'] != expected -%}
{{- raise_exception('message ' ~ (loop.index0 + (1 if system is not none else 0)) ~ ' (' ~ message['role'] ~ '): expected ' ~ article ~ expected ~ ' message here (roles alternate user, assistant, ... from a user; a system message may only come first)') -}}
{%- endif -%}
{%- if expected == 'user' -%}
{%- if message['content'] is not string -%}{%- for part in message['content'] -%}{%- if part['type'] != 'text' -%}
{{- raise_exception('user content can only be text') -}}
{%- endif -%}{%- endfor -%}{%- endif -%}
<|user_start|>
{%- if loop.first and system is not none -%}{{ system ~ '\n\n' }}{%- endif -%}
{{- text_of(message['content']) -}}
<|user_end|>
{%- else -%}
<|assistant_start|>
{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}{%- for part in message['content'] -%}
{%- if part['type'] == 'text' -%}{{ part['text'] }}
{%- elif part['type'] == 'python' -%}<|python_start|>{{ part['text'] }}<|python_end|>
{%- elif part['type'] == 'python_output' -%}<|output_start|>{{ part['text'] }}<|output_end|>
{%- else -%}{{- raise_exception('assistant part type must be text, python or python_output, not ' ~ part['type']) -}}
{%- endif -%}
{%- endfor -%}{%- endif -%}
<|assistant_end|>
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|assistant_start|>{%- endif -%}
""".strip()

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


class ExportError(ValueError):
    """The checkpoint cannot be expressed exactly in the transformers format."""


def layer_names(i):
    """snakechat tensor name -> NanoChatForCausalLM tensor name, for block i."""
    ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
    return {
        ours + "attn.c_q.weight": theirs + "self_attn.q_proj.weight",
        ours + "attn.c_k.weight": theirs + "self_attn.k_proj.weight",
        ours + "attn.c_v.weight": theirs + "self_attn.v_proj.weight",
        ours + "attn.c_proj.weight": theirs + "self_attn.o_proj.weight",
        ours + "mlp.c_fc.weight": theirs + "mlp.fc1.weight",
        ours + "mlp.c_proj.weight": theirs + "mlp.fc2.weight",
    }


def tensor_names(n_layer):
    names = {"wte.weight": "model.embed_tokens.weight", "lm_head.weight": "lm_head.weight"}
    for i in range(n_layer):
        names.update(layer_names(i))
    return names


def check_model_config(model_config, where):
    """The GPTConfig of a checkpoint, refused if it holds anything NanoChat cannot express."""
    if not isinstance(model_config, dict):
        raise ExportError(f"{where}: model_config must be a mapping, got {type(model_config).__name__}")
    known = set(MAPPED_CONFIG_KEYS)
    unknown = sorted(set(model_config) - known)
    if unknown:
        raise ExportError(f"{where}: model_config key(s) {', '.join(map(repr, unknown))} have no counterpart in NanoChatForCausalLM "
                          f"(this exporter maps only {', '.join(sorted(known))}); refusing an approximate export")
    missing = sorted(known - set(model_config))
    if missing:
        raise ExportError(f"{where}: model_config lacks {', '.join(map(repr, missing))}")
    for key, value in model_config.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ExportError(f"{where}: model_config[{key!r}] must be a positive integer, got {value!r}")
    config = gpt.GPTConfig(**model_config)
    if config.n_embd % config.n_head or config.n_head % config.n_kv_head:
        raise ExportError(f"{where}: n_head={config.n_head} must divide n_embd={config.n_embd} and n_kv_head={config.n_kv_head} must divide n_head")
    if (config.n_embd // config.n_head) % 2:
        raise ExportError(f"{where}: head_dim {config.n_embd // config.n_head} is odd; rotary embeddings need an even head_dim")
    return config


def check_state(state, config, where):
    """Refuse a state dict with tensors the mapping does not know, lacks, or of the wrong shape."""
    names = tensor_names(config.n_layer)
    unknown = sorted(set(state) - set(names))
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ExportError(f"{where}: weight tensor(s) {shown} have no counterpart in NanoChatForCausalLM; refusing an approximate export")
    missing = sorted(set(names) - set(state))
    if missing:
        raise ExportError(f"{where}: weight tensor(s) {', '.join(map(repr, missing[:5]))} are missing")
    for name, shape in expected_shapes(config).items():
        if tuple(state[name].shape) != shape:
            raise ExportError(f"{where}: tensor {name!r} has shape {tuple(state[name].shape)}, expected {shape} for {config}")
        if not state[name].is_floating_point():
            raise ExportError(f"{where}: tensor {name!r} has dtype {state[name].dtype}, expected floating point")


def expected_shapes(config):
    c, head_dim = config, config.n_embd // config.n_head
    kv = c.n_kv_head * head_dim
    shapes = {"wte.weight": (c.vocab_size, c.n_embd), "lm_head.weight": (c.vocab_size, c.n_embd)}
    for i in range(c.n_layer):
        b = f"blocks.{i}."
        shapes.update({
            b + "attn.c_q.weight": (c.n_embd, c.n_embd),
            b + "attn.c_k.weight": (kv, c.n_embd),
            b + "attn.c_v.weight": (kv, c.n_embd),
            b + "attn.c_proj.weight": (c.n_embd, c.n_embd),
            b + "mlp.c_fc.weight": (4 * c.n_embd, c.n_embd),
            b + "mlp.c_proj.weight": (c.n_embd, 4 * c.n_embd),
        })
    return shapes


def flip_second_halves(weight, head_dim):
    """The projection with the rows of each head's second half negated (rotary direction, see above)."""
    heads = weight.view(-1, 2, head_dim // 2, weight.size(1)).clone()
    heads[:, 1].neg_()
    return heads.view_as(weight)


def hf_state_dict(state, config):
    head_dim = config.n_embd // config.n_head
    out = {}
    for ours, theirs in tensor_names(config.n_layer).items():
        tensor = state[ours].detach().to("cpu", torch.float32)
        if ours.endswith(("attn.c_q.weight", "attn.c_k.weight")):
            tensor = flip_second_halves(tensor, head_dim)
        out[theirs] = tensor.contiguous()
    return out


def hf_config(config, tok):
    stop_ids = [tok.special_id(name) for name in STOP_TOKENS]
    return {
        "architectures": ["NanoChatForCausalLM"],
        "model_type": "nanochat",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": 4 * config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.n_embd // config.n_head,
        "max_position_embeddings": config.sequence_len,
        "hidden_act": "relu2",
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_parameters": {"rope_type": "default", "rope_theta": gpt.ROPE_BASE},
        "final_logit_softcapping": gpt.LOGIT_SOFTCAP,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "bos_token_id": tok.bos_id,
        "eos_token_id": stop_ids,
        "pad_token_id": tok.bos_id,
        "dtype": "float32",
        "use_cache": True,
    }


def generation_config(tok):
    """Greedy by default (transformers' default), stopping where snakechat's engine stops a row."""
    return {"bos_token_id": tok.bos_id, "eos_token_id": [tok.special_id(name) for name in STOP_TOKENS], "pad_token_id": tok.bos_id}


def tokenizer_files(tok_dir, tok, max_len):
    """(tokenizer.json text, tokenizer_config.json dict): snakechat's tokenizer.json with a
    post-processor that prepends <|bos|> (skipped with add_special_tokens=False, as
    apply_chat_template does), and the special tokens and chat template."""
    path = Path(tok_dir) / TOKENIZER_FILE
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"cannot read tokenizer {path}: {e}") from e
    bos = "<|bos|>"
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    for name in SPECIAL_TOKENS:
        if name not in added or not added[name].get("special") or added[name]["id"] != tok.special_id(name):
            raise ExportError(f"{path}: special token {name!r} is not an added special token with id {tok.special_id(name)}")
    if spec.get("post_processor") is not None:
        raise ExportError(f"{path}: has a post_processor already ({spec['post_processor'].get('type')}); snakechat's tokenizers have none")
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [tok.bos_id], "tokens": [bos]}},
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": "<|assistant_end|>",
        "pad_token": bos,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (bos, "<|assistant_end|>")],
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "chat_template": CHAT_TEMPLATE,
    }
    return json.dumps(spec, ensure_ascii=False), config


def load_checkpoint(checkpoint_dir):
    """(model_config, state, meta) of a checkpoint, checked against the mapping."""
    meta = load_meta(checkpoint_dir)
    where = Path(checkpoint_dir) / "meta.json"
    if "model_config" not in meta:
        raise ExportError(f"{where}: no model_config")
    config = check_model_config(meta["model_config"], where)
    try:
        path = verified(checkpoint_dir, MODEL_FILE, meta)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ExportError(f"cannot read checkpoint weights {path}: {e}") from e
    if not isinstance(state, dict):
        raise ExportError(f"{path}: expected a state dict, got {type(state).__name__}")
    check_state(state, config, path)
    return config, state, meta


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


def export(checkpoint_dir, out_dir):
    """Export `checkpoint_dir` as the folder `out_dir` (replaced atomically); returns its snakechat_export.json."""
    import_transformers()  # fail before any work
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} exists and is not a directory")
    config, state, meta = load_checkpoint(checkpoint_dir)
    if "tokenizer" not in meta:
        raise ExportError(f"{checkpoint_dir / 'meta.json'}: no tokenizer directory")
    tok_dir = Path(meta["tokenizer"])
    tok = Tokenizer.load(tok_dir)
    model = gpt.GPT(config)
    model.load_state_dict(state)
    model.eval()
    del state  # the model holds the weights now: one float32 copy, then transformers' during verify
    with atomic_dir(out_dir) as tmp:
        write_export(tmp, config, model.state_dict(), tok_dir, tok)
        checks = verify(tmp, model, tok)
        settings = {"checkpoint": str(checkpoint_dir), "dtype": "float32"}
        export_meta = {
            "checkpoint": str(checkpoint_dir),
            "step": meta.get("step"),
            "model_config": dataclasses.asdict(config),
            "verification": checks,
            "files": {p.name: hash_file(p) for p in sorted(tmp.iterdir())},
            "provenance": record("snakechat.export_hf", settings, inputs=[checkpoint_dir, tok_dir]),
        }
        write_json_atomic(tmp / EXPORT_META, export_meta)
    return export_meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Launch lines and the mapping: see the module docstring (pydoc snakechat.export_hf).")
    p.add_argument("--checkpoint", type=Path, required=True, help="snakechat checkpoint directory (results/<stage>/<model>)")
    p.add_argument("--out", type=Path, required=True, help="export folder to write (replaced atomically)")
    args = p.parse_args(argv)
    try:
        meta = export(args.checkpoint, args.out)
    except (ExportError, FileNotFoundError) as e:
        raise SystemExit(f"export_hf: {e}") from None
    v = meta["verification"]
    print(f"exported {args.checkpoint} -> {args.out}: logits within {v['max_abs_logit_diff']:.2e} of snakechat's on {v['probe_tokens']} tokens "
          f"(transformers {v['transformers_version']})")


if __name__ == "__main__":
    main()
