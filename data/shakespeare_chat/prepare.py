"""Conversations drawn from Tiny Shakespeare, the example for chat fine-tuning (config/finetune_chat.py).

    python data/shakespeare_chat/prepare.py                    # gpt2 + chat tokens -> data/shakespeare_chat/

dialogues.jsonl holds 400 conversations, one per line as {"messages": [{"role", "content"}]}: runs of
speeches that alternate between two speakers, the first speaker as the user and the second as the
assistant (a quarter open with a system line naming the assistant's part). Each speech is one turn,
its line breaks joined by spaces. Your own file works the same way:
    python data/prepare.py --input=chats.jsonl --format=chat --name=mychat
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, for the core package

from core.data import prepare as P  # noqa: E402


def main(argv=None):
    p = P.ArgumentParser(description="Shakespeare dialogues as a chat dataset (GPT-2 tokens plus the chat tokens)")
    p.add_argument("--tokenizer", default="gpt2", choices=("gpt2", "char"), help="gpt2 (default) or char")
    p.add_argument("--out_dir", type=os.path.expanduser, default=HERE, help="default data/shakespeare_chat")
    p.add_argument("--force", type=P.parse_bool, nargs="?", const=True, default=False, help="redo a complete preparation")
    args = p.parse_args(argv)
    P.run_main(lambda: P.prepare(os.path.join(HERE, "dialogues.jsonl"), args.out_dir, tokenizer=args.tokenizer,
                                 val_fraction=0.1, format="chat", force=args.force, progress=False,
                                 source="dialogues from tinyshakespeare (karpathy/char-rnn)"))


if __name__ == "__main__":
    main()
