"""How a question becomes decoder input, in one place shared by inference, training and evaluation.

The book lives in the memory, so the decoder's prompt is only the question, wrapped in the backbone's
own chat template when it has one (never a hand-written imitation), or a plain ``Question:/Answer:``
format for base models.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

DEFAULT_SYSTEM_PROMPT = "Answer the question using the document you have read. Be brief."


def apply_chat_template(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of chat ``messages`` with the assistant turn open; a plain transcript for base models."""
    if getattr(tokenizer, "chat_template", None):
        return list(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        )
    transcript = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
    return list(tokenizer(transcript, add_special_tokens=True)["input_ids"])


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    history: list[dict[str, str]] | None = None,
) -> list[int]:
    """Token ids of the prompt that asks ``question`` and leaves the assistant turn open.

    ``history`` holds the earlier turns of a chat (``{"role": "user"|"assistant", "content": ...}``), so a
    follow-up question can refer to an earlier answer.
    """
    turns = [{"role": m["role"], "content": m["content"]} for m in history or []]
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return apply_chat_template(tokenizer, [*messages, *turns, {"role": "user", "content": question}])
    earlier = "".join(f"{'Question' if m['role'] == 'user' else 'Answer'}: {m['content']}\n" for m in turns)
    text = (f"{system_prompt}\n\n" if system_prompt else "") + f"{earlier}Question: {question}\nAnswer:"
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return list(ids)
