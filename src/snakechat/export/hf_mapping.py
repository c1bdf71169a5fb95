"""How a snakechat checkpoint maps onto transformers' NanoChatForCausalLM: its config.json and
generation_config.json, the weight names (and the rotary sign flip), the tokenizer files with the
chat template, and the checks that refuse what would not map exactly. Why each piece is exact:
snakechat.export_hf's docstring."""

import json
from pathlib import Path

import torch

from snakechat.model import gpt, recipes
from snakechat.model.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE

RMS_NORM_EPS = torch.finfo(torch.float32).eps  # F.rms_norm's default for float32 inputs
STOP_TOKENS = ("<|assistant_end|>", "<|bos|>")  # where snakechat's engine ends a row
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
    recipe = model_config.get("recipe", recipes.DEFAULT)
    if recipe in recipes.NOT_EXPORTABLE:
        raise ExportError(f"{where}: a {recipe} model has {recipes.NOT_EXPORTABLE[recipe]}, which NanoChatForCausalLM cannot express; "
                          "refusing an approximate export")
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
