"""Conversations as tokens: one format for training (prepare --format=chat), sample.py and serve.py.

    from core.data import chat
    ids, mask = chat.encode(messages, tok)        # training: mask is 1 on the tokens the loss sees
    ids = chat.render(messages, tok)              # generation: the same tokens, then '<|assistant|>'
    reply = chat.reply_text(new_ids, tok)         # the generated ids up to the end of the turn

A message is {"role": "system"|"user"|"assistant", "content": str}. Each becomes its role token,
its content, then <|end|>; a conversation starts with <|endoftext|>, which the document-aware loader
also treats as the start of a document, so a conversation in training and at the prompt looks the
same. The loss is on the assistant's content and its <|end|> only: the model learns to answer and
to stop, not to write the user's turns.
"""

from core.data import tokenizer as tk
from core.errors import UserError

ROLES = ("system", "user", "assistant")
END = "<|end|>"
CHAT_TOKENS = tk.CHAT_TOKENS


def role_token(role):
    return f"<|{role}|>"


class ChatError(UserError):
    """a conversation that does not follow the format; the message is one line."""


def has_chat(tok):
    """True when the tokenizer has every chat token (so a model trained with it knows the format)."""
    return tok is not None and all(t in tok.special_tokens for t in CHAT_TOKENS)


def check(messages, need_assistant=True):
    """raise ChatError unless messages is a list of {role, content} with known roles (and an assistant turn)."""
    if not isinstance(messages, list) or not messages:
        raise ChatError("'messages' must be a non-empty list of {\"role\": ..., \"content\": ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise ChatError(f"message {i} must be an object with a 'role' and a string 'content'")
        if m["role"] not in ROLES:
            raise ChatError(f"message {i} has role {m['role']!r}; the roles are {', '.join(ROLES)}")
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise ChatError("the conversation has no assistant turn, so there is nothing to train on")


def _need(tok):
    if not has_chat(tok):
        raise ChatError(f"the {tok.kind} tokenizer has no chat tokens ({' '.join(CHAT_TOKENS)}); "
                        f"prepare the data with --format=chat")


def encode(messages, tok, check_messages=True):
    """(ids, mask) of a whole conversation, <|endoftext|> first. mask[i] is 1 when ids[i] is a token
    the loss should predict: an assistant's content and its closing <|end|>."""
    if check_messages:
        check(messages)
    _need(tok)
    ids, mask = [tok.eot_token], [0]
    end = tok.special_tokens[END]
    for m in messages:
        content = tok.encode_ordinary(m["content"])
        learn = int(m["role"] == "assistant")
        ids += [tok.special_tokens[role_token(m["role"])]] + content + [end]
        mask += [0] + [learn] * len(content) + [learn]
    return ids, mask


def render(messages, tok):
    """the prompt for the next assistant reply: the conversation so far as encode() writes it, then
    '<|assistant|>'. messages need not contain an assistant turn yet."""
    check(messages, need_assistant=False)
    _need(tok)
    ids, _ = encode(messages, tok, check_messages=False)
    return ids + [tok.special_tokens[role_token("assistant")]]


def stop_tokens(tok):
    """ids that end a reply: <|end|>, <|endoftext|>, and a turn token (<|user|> ...), which begins another turn.
    Kept in the reply, its text (which the char vocabulary cannot encode) would end the chat at the next line."""
    return sorted({*tok.special_tokens.values(), *([tok.eot_token] if tok.eot_token is not None else [])})


def reply_text(ids, tok):
    """the text of generated ids up to (not including) the first stop token."""
    ids = [int(i) for i in ids]
    stops = set(stop_tokens(tok))
    cut = next((k for k, i in enumerate(ids) if i in stops), len(ids))
    return tok.decode(ids[:cut])


LABELS = {"system": "", "user": "you> ", "assistant": "bot> "}


def _plain(messages, tok):
    """A base model's prompt: 'you> ' / 'bot> ' turns, one line each, when the vocabulary can spell the
    labels; bare lines otherwise (a char vocabulary without '>'). Either way a reply ends at a blank line."""
    labels = LABELS
    try:
        tok.encode_ordinary("you> bot> \n")
    except tk.TokenizerError:
        labels = {role: "" for role in ROLES}
    text = "".join(labels[m["role"]] + m["content"] + "\n" for m in messages) + labels["assistant"]
    stops = ["\n\n"] + (["\nyou>"] if labels["user"] else [])
    return tok.encode_ordinary(text), stops


def prompt(messages, tok, context):
    """(ids, stop ids, stop strings) for the next assistant reply. The chat tokens when the tokenizer
    has them (render), else plain turns (_plain). The oldest turns (not a leading system message) are
    left out until the prompt leaves a quarter of the context window (64 tokens at most) for the reply;
    ChatError when even the last message alone does not fit, or a character is outside the vocabulary."""
    check(messages, need_assistant=False)
    room = min(64, context // 4)
    system = messages[:1] if messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    candidates = [system + turns[start:] for start in range(len(turns))] or [system]
    for n, kept in enumerate(candidates, 1):
        try:
            if has_chat(tok):
                ids, stops = render(kept, tok), []
            else:
                ids, stops = _plain(kept, tok)
        except tk.TokenizerError as e:
            raise ChatError(str(e)) from None
        if len(ids) <= context - room or (n == len(candidates) and len(ids) <= context):
            return ids, stop_tokens(tok), stops
    raise ChatError(f"the last message takes {len(ids)} tokens; this model's context is {context}")


# what a new turn token starts as in a pretrained model: the mean embedding of text that plays its part
_SEED_TEXT = {"<|system|>": "\n\nSystem:", "<|user|>": "\n\nUser:", "<|assistant|>": "\n\nAssistant:", END: "\n\n"}


def grow_vocab(model, tok):
    """Give a pretrained model (GPT-2's 50,257 ids) rows for the tokenizer's added special tokens.
    Each new row starts as the mean embedding of text that plays its part ('\\n\\nUser:' for <|user|>),
    so the rows differ from each other and mean something before any training, which matters when
    LoRA keeps the embedding frozen. Deterministic, so a LoRA checkpoint can rebuild its base.
    Returns True when the model grew."""
    import torch
    from torch import nn
    old, new = model.config.vocab_size, tok.vocab_size
    if new <= old:
        return False
    names = {i: s for s, i in tok.special_tokens.items()}
    wte, head = model.transformer.wte.weight.data, model.lm_head.weight.data
    picks = []
    for i in range(old, new):
        name = names.get(i)
        ids = [t for t in tok.encode_ordinary(_SEED_TEXT.get(name, name or "")) if t < old] or [tok.eot_token]
        if name == END and tok.eot_token is not None:
            ids.append(tok.eot_token)
        picks.append(ids)
    grown = lambda w: torch.cat([w, torch.stack([w[ids].mean(0) for ids in picks])])
    tied = model.lm_head.weight is model.transformer.wte.weight
    C = wte.size(1)
    model.transformer.wte = nn.Embedding(new, C, device=wte.device, dtype=wte.dtype)
    model.transformer.wte.weight.data.copy_(grown(wte))
    model.lm_head = nn.Linear(C, new, bias=False, device=wte.device, dtype=wte.dtype)
    if tied:
        model.lm_head.weight = model.transformer.wte.weight
    else:
        model.lm_head.weight.data.copy_(grown(head))
    model.config.vocab_size = new
    return True
