"""Items -> exact prompt strings and token ids, in the training chat format (``yivl.data.chat``).

Generation prompts are rendered like ``infer.py`` renders them; the ``loss`` task uses the training
example builder (same text, ids and label masks as training); MCQ options are scored as ``" " + option``
after the rendered question prompt, tokenised jointly with it. An item that does not fit the model's
context is not an error: its ``Prepared.skip`` says why, and the runner records it as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yivl.data.chat import (
    Turn,
    build_training_example,
    expanded_length,
    render_prompt,
    tokenize_prompt,
    training_text,
    with_image_placeholder,
)
from yivl.data.tokenizer import YiTokenizer
from yivl.evaluation.items import Item
from yivl.evaluation.likelihood import continuation_sequence
from yivl.evaluation.tasks import TaskSpec

Sequence_ = tuple[list[int], list[int]]
TOO_LONG = "too_long"
"""The skip reason of an item that does not fit the context (the data pipeline's code for the same)."""


@dataclass
class Prepared:
    """An item's model inputs: generation prompt (text + ids), scored sequences (ids + labels), length.

    ``length`` is the longest sequence the model sees for this item, image features included; it
    orders the batches. ``skip``: the fields of the item's skipped record (reason, length, context)
    when it does not fit the context, else None.
    """

    prompt: str | None = None
    prompt_ids: list[int] | None = None
    cloze_prompt: str | None = None
    sequences: list[Sequence_] | None = None
    length: int = 0
    skip: dict[str, Any] | None = None


def render_question(question: str, has_image: bool) -> str:
    """The inference prompt of a single human turn (placeholder first when there is an image)."""
    return render_prompt(with_image_placeholder([Turn("human", question)], has_image))


def prepare_item(
    item: Item, spec: TaskSpec, tokenizer: YiTokenizer, image_tokens: int, context: int
) -> Prepared:
    """Render and tokenise one item; one that does not fit the context gets ``skip`` set."""
    has_image = item.image is not None
    out = Prepared()
    if spec.type == "loss":
        assert item.turns is not None
        example = build_training_example(tokenizer, item.turns, sample_id=item.id)
        out.prompt = training_text(item.turns)
        out.sequences = [(example.input_ids, example.labels)]
        out.length = expanded_length(example.input_ids, image_tokens)
    if spec.generates:
        out.prompt = render_question(item.question or "", has_image)
        out.prompt_ids = tokenize_prompt(tokenizer, out.prompt)
        out.length = expanded_length(out.prompt_ids, image_tokens)
    if spec.scores_likelihood:
        assert item.cloze is not None and item.continuations is not None
        out.cloze_prompt = render_question(item.cloze, has_image)
        out.sequences = [continuation_sequence(tokenizer, out.cloze_prompt, c) for c in item.continuations]
        longest = max(expanded_length(ids, image_tokens) for ids, _ in out.sequences)
        out.length = max(out.length, longest)
    out.skip = too_long(out.length, context, spec.generates)
    return out


def too_long(length: int, context: int, generates: bool) -> dict[str, Any] | None:
    """The skip fields of an item of ``length`` tokens, or None when it fits ``context``.

    Generation needs room for at least one new token, so its prompt must be shorter than the context.
    """
    limit = context - 1 if generates else context
    if length <= limit:
        return None
    room = " with room for one generated token" if generates else ""
    return {
        "skipped": TOO_LONG,
        "skip_detail": f"{length} tokens (image features included) do not fit the model's context of "
        f"{context}{room}",
        "length": length,
        "context": context,
    }
