"""Chat with a checkpoint in the terminal; replies are printed token by token as they are generated.

    python -m snakechat.chat_cli --checkpoint results/sft/tiny
    python -m snakechat.chat_cli --model tiny --stage sft            # results/sft/tiny
    python -m snakechat.chat_cli --model tiny --stage rl -p "How much is 12 times 7?"

Needs a checkpoint directory (any stage; base models have not learned the chat format). In the
interactive loop, `/new` starts a new conversation and `/quit` (or Ctrl-D) leaves. A calculator
call is shown as `[calculator: 12*7 = 84]`; the conversation keeps it as a tool call, so the next
turn's prompt has the model's own tool tokens in it.
"""

import argparse
import sys

from snakechat.serve.chat_model import add_checkpoint_args, at_least, checkpoint_dir, load_engine
from snakechat.model.conversation import render_for_completion
from snakechat.serve.reply import Reply


def reply(engine, tok, messages, args, seed, out=sys.stdout):
    """Stream the assistant's answer to `messages` to `out`; return its content (a list of parts)."""
    ids = render_for_completion(tok, {"messages": messages})
    answer = Reply(engine, ids, max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k or None, seed=seed)
    for kind, text in answer:
        if kind == "text":
            out.write(text)
        elif kind == "python":
            out.write(f"[calculator: {text}")
        else:
            out.write(f" = {text}]")
        out.flush()
    if answer.parts and answer.parts[-1]["type"] == "python":
        out.write("]")  # cut before the calculator answered
    out.write("\n")
    return answer.parts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_args(p)
    p.add_argument("-p", "--prompt", help="answer this one message and exit")
    p.add_argument("--max-tokens", type=at_least(1), default=256, help="tokens per reply")
    args = p.parse_args(argv)
    engine, tok = load_engine(checkpoint_dir(p, args), args.device, args.precision)
    if args.prompt is not None:
        reply(engine, tok, [{"role": "user", "content": args.prompt}], args, args.seed)
        return
    print("snakechat - /new starts a new conversation, /quit leaves")
    messages, turn = [], 0
    while True:
        try:
            text = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if text == "/quit":
            return
        if text == "/new":
            messages = []
            print("(new conversation)")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        print("snakechat> ", end="", flush=True)
        messages.append({"role": "assistant", "content": reply(engine, tok, messages, args, args.seed + turn)})
        turn += 1


if __name__ == "__main__":
    main()
