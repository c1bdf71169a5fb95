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
from pathlib import Path

import torch

from snakechat.model import gpt
from snakechat.model.checkpoint import MODEL_FILE, CheckpointError, load_meta, tokenizer_dir, verified
from snakechat.runtime.common import atomic_dir, write_json_atomic
from snakechat.export.hf_folder import import_transformers, verify, write_export
from snakechat.export.hf_mapping import ExportError, check_model_config, check_state
from snakechat.runtime.provenance import hash_file, record
from snakechat.model.tokenizer import Tokenizer

EXPORT_META = "snakechat_export.json"


def load_checkpoint(checkpoint_dir):
    """(model_config, state, meta) of a checkpoint, checked against the mapping."""
    try:
        meta = load_meta(checkpoint_dir, sealed_only=True)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
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


def export(checkpoint_dir, out_dir):
    """Export `checkpoint_dir` as the folder `out_dir` (replaced atomically); returns its snakechat_export.json."""
    import_transformers()  # fail before any work
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} exists and is not a directory")
    config, state, meta = load_checkpoint(checkpoint_dir)
    if "tokenizer" not in meta:
        raise ExportError(f"{checkpoint_dir / 'meta.json'}: no tokenizer directory")
    try:
        tok_dir = tokenizer_dir(checkpoint_dir, meta)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
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
