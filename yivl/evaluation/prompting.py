"""Items -> exact prompt strings and token ids, in the training chat format (``yivl.data.chat``).

Generation prompts are rendered like ``infer.py`` renders them; the ``loss`` task uses the training
example builder (same text, ids and label masks as training); MCQ options are scored as ``" " + option``
after the rendered question prompt, tokenised jointly with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from yivl.constants import IMAGE_TOKEN_INDEX, STOP_STRING
from yivl.data.chat import Turn, build_training_example, render_prompt, tokenize_prompt
from yivl.data.tokenizer import YiTokenizer
from yivl.errors import YivlError
from yivl.evaluation.items import Item
from yivl.evaluation.likelihood import continuation_sequence
from yivl.evaluation.tasks import TaskSpec
from yivl.serving.engine import with_image_placeholder

Sequence_ = tuple[list[int], list[int]]


@dataclass
class Prepared:
    """An item's model inputs: generation prompt (text + ids), scored sequences (ids + labels), length.

    ``length`` is the longest sequence the model sees for this item, image features included; it
    orders the batches.
    """

    prompt: str | None = None
    prompt_ids: list[int] | None = None
    cloze_prompt: str | None = None
    sequences: list[Sequence_] | None = None
    length: int = 0


def expanded_length(ids: list[int], image_tokens: int) -> int:
    """Sequence length once each -200 id becomes ``image_tokens`` features."""
    images = sum(1 for i in ids if i == IMAGE_TOKEN_INDEX)
    return len(ids) + images * (image_tokens - 1)


def render_question(question: str, has_image: bool) -> str:
    """The inference prompt of a single human turn (placeholder first when there is an image)."""
    return render_prompt(with_image_placeholder([Turn("human", question)], has_image))


def prepare_item(
    item: Item, spec: TaskSpec, tokenizer: YiTokenizer, image_tokens: int, context: int
) -> Prepared:
    """Render and tokenise one item; a sequence that does not fit the context is a YivlError."""
    has_image = item.image is not None
    out = Prepared()
    if spec.type == "loss":
        assert item.turns is not None
        example = build_training_example(tokenizer, item.turns, sample_id=item.id)
        out.prompt = render_prompt(item.turns[:-1]) + f" {item.turns[-1].text}\n{STOP_STRING}"
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
    limit = context - 1 if spec.generates else context
    if out.length > limit:
        raise YivlError(
            f"{item.where}: the prompt is {out.length} tokens (image features included) but the model's "
            f"context is {context}; shorten the sample or drop it"
        )
    return out
