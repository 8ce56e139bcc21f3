"""Per-request sampling features of the API (logprobs, top_k, penalties), Retry-After on 503, /metrics."""

from __future__ import annotations

from contextlib import closing

import httpx
import openai
import torch

from yivl.data.chat import SYSTEM_PROMPT, Turn
from yivl.models.generation import GenerationSettings
from yivl.serving.api import create_app
from yivl.serving.engine import Engine, Request
from yivl.serving.worker import GenerationWorker

from .conftest import api_settings
from .helpers import ScriptedEngine, serve

QUESTION = "Describe the colours in detail."
MESSAGES = [{"role": "user", "content": QUESTION}]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)


def post(url: str, **fields: object) -> httpx.Response:
    body = {"model": "yi-vl", "messages": MESSAGES, "temperature": 0, **fields}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


@torch.no_grad()
def reference_logprobs(engine: Engine, steps: int) -> list[tuple[int, torch.Tensor]]:
    """Greedy tokens of QUESTION by full forward passes, with the log_softmax they were picked from."""
    ids = engine.prompt_ids([Turn("human", QUESTION)], False, SYSTEM_PROMPT)
    out = []
    for _ in range(steps):
        x = torch.tensor([ids])
        logprobs = engine.model(x, torch.ones_like(x)).logits[0, -1].log_softmax(-1)
        out.append((int(logprobs.argmax()), logprobs))
        ids.append(out[-1][0])
    return out


def test_logprobs_are_the_models_log_softmax_in_openai_format(api_url: str, engine: Engine):
    reply = post(api_url, max_tokens=6, logprobs=True, top_logprobs=3).json()
    content = reply["choices"][0]["logprobs"]["content"]
    steps = reply["usage"]["completion_tokens"]
    expected = [(t, lp) for t, lp in reference_logprobs(engine, steps) if t != engine.tokenizer.eos_token_id]
    assert len(content) == len(expected) >= 1
    for entry, (token, logprobs) in zip(content, expected, strict=True):
        text = engine.tokenizer.decode([token])
        assert entry["token"] == text and entry["bytes"] == list(engine.tokenizer.token_bytes(token))
        assert abs(entry["logprob"] - float(logprobs[token])) < 1e-4
        best = logprobs.topk(3)
        assert [engine.tokenizer.decode([t]) for t in best.indices.tolist()] == [
            e["token"] for e in entry["top_logprobs"]
        ]
        assert all(
            abs(e["logprob"] - v) < 1e-4
            for e, v in zip(entry["top_logprobs"], best.values.tolist(), strict=True)
        )
    assert post(api_url, max_tokens=6).json()["choices"][0]["logprobs"] is None


def test_streamed_logprobs_add_up_to_the_plain_ones(api_url: str):
    plain = post(api_url, max_tokens=8, logprobs=True, top_logprobs=2).json()["choices"][0]["logprobs"]
    stream = client(api_url).chat.completions.create(
        model="yi-vl",
        messages=MESSAGES,
        temperature=0,
        max_tokens=8,
        logprobs=True,
        top_logprobs=2,
        stream=True,
    )
    streamed = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs is not None:
            streamed.extend(e.model_dump(exclude_none=True) for e in chunk.choices[0].logprobs.content)
    assert streamed == plain["content"]


def test_each_streamed_chunk_carries_the_logprobs_of_its_own_text(engine: Engine):
    """The entries come with their tokens' text, never before it nor a chunk late: per chunk, the
    entries' tokens spell the chunk's text (whitespace aside: the answer's edges are stripped). Every
    piece is a chunk of its own here (stream interval 0)."""
    worker = GenerationWorker(engine, stream_interval_s=0)
    with closing(worker), serve(create_app(engine, worker, api_settings())) as url:
        chunks = list(
            client(url).chat.completions.create(
                model="yi-vl",
                messages=MESSAGES,
                temperature=0,
                max_tokens=24,
                logprobs=True,
                top_logprobs=1,
                stream=True,
            )
        )
    pieces = [
        (c.choices[0].delta.content or "", [e.token for e in c.choices[0].logprobs.content])
        for c in chunks
        if c.choices and c.choices[0].logprobs is not None
    ]

    def squeezed(text: str) -> str:
        return "".join(text.split())

    texts = [(text, tokens) for text, tokens in pieces if text]
    assert len(texts) >= 5 and texts[0][1], pieces
    assert all(squeezed(text) == squeezed("".join(tokens)) for text, tokens in texts), pieces
    assert all(text or not tokens for text, tokens in pieces[:-1]), pieces  # only the last: logprobs alone


def test_top_k_1_samples_the_greedy_answer(api_url: str):
    ask = client(api_url).chat.completions.create
    greedy = ask(model="yi-vl", messages=MESSAGES, temperature=0, max_tokens=10).choices[0].message.content
    sampled = ask(
        model="yi-vl", messages=MESSAGES, temperature=1.5, seed=3, max_tokens=10, extra_body={"top_k": 1}
    )
    assert sampled.choices[0].message.content == greedy
    wide = ask(
        model="yi-vl", messages=MESSAGES, temperature=1.5, seed=3, max_tokens=10, extra_body={"top_k": 0}
    )
    assert wide.choices[0].message.content != greedy


def test_penalties_reach_the_decoder(api_url: str, engine: Engine):
    plain = post(api_url, max_tokens=24).json()["choices"][0]["message"]["content"]
    penalized = post(api_url, max_tokens=24, frequency_penalty=2.0, presence_penalty=1.5).json()
    settings = GenerationSettings(
        temperature=0, max_new_tokens=24, frequency_penalty=2.0, presence_penalty=1.5
    )
    decoder = engine.batch_decoder()
    decoder.add([engine.prompt(Request([Turn("human", QUESTION)]), settings)])
    while decoder.size:
        finished = decoder.step()
    assert penalized["choices"][0]["message"]["content"] == finished[0].result().text != plain


def test_out_of_range_sampling_fields_are_400_naming_the_field(api_url: str):
    reply = post(api_url, top_logprobs=2)
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "top_logprobs needs logprobs=true; set both"
    for field, value in (
        ("top_logprobs", 21),
        ("frequency_penalty", 2.5),
        ("presence_penalty", -3),
        ("top_k", -2),
    ):
        reply = post(api_url, logprobs=True, **{field: value})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == field, field


def _post_behind_two_streams(http: httpx.Client, url: str, body: dict) -> httpx.Response:
    """Post ``body`` while one streamed request runs and another waits in the queue."""
    with http.stream("POST", url, json=body) as running:
        lines = running.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)  # job 1 runs
        with http.stream("POST", url, json=body) as waiting:
            assert waiting.status_code == 200  # job 2 waits
            return httpx.post(url, json=body, timeout=30)


def test_a_full_queue_is_503_with_retry_after(engine: Engine):
    worker = GenerationWorker(ScriptedEngine(["w"] * 300, delay=0.01), max_queue=1, max_batch_size=1)
    body = {"model": "yi-vl", "messages": MESSAGES, "stream": True}
    with serve(create_app(engine, worker, api_settings())) as url, httpx.Client(timeout=30) as http:
        refused = _post_behind_two_streams(http, f"{url}/v1/chat/completions", body)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "server_busy"
    worker.close()


def _metrics(text: str) -> dict[str, float]:
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in pairs}


def test_metrics_count_tokens_requests_and_first_tokens(engine: Engine):
    worker = GenerationWorker(engine, max_queue=4)
    with serve(create_app(engine, worker, api_settings())) as url:
        replies = [post(url, max_tokens=n).json() for n in (5, 9)]
        scrape = httpx.get(f"{url}/metrics", timeout=10)
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith(
        "text/plain; version=0.0.4"
    )
    values = _metrics(scrape.text)
    assert values["yivl_generated_tokens_total"] == sum(r["usage"]["completion_tokens"] for r in replies)
    assert values["yivl_requests_total"] == 2 and values["yivl_queue_depth"] == 0
    assert values["yivl_running_batch_size"] == 0 and values["yivl_running_batch_size_max"] == 1
    assert values["yivl_time_to_first_token_seconds_count"] == 2
    assert values['yivl_time_to_first_token_seconds_bucket{le="+Inf"}'] == 2
    buckets = [v for k, v in values.items() if k.startswith("yivl_time_to_first_token_seconds_bucket")]
    assert buckets == sorted(buckets) and len(buckets) == 13
    assert "# TYPE yivl_time_to_first_token_seconds histogram" in scrape.text
    worker.close()


def test_metrics_need_the_api_key_when_one_is_set(engine: Engine):
    worker = GenerationWorker(engine, max_queue=4)
    with serve(create_app(engine, worker, api_settings(api_key="s3cret"))) as url:
        refused = httpx.get(f"{url}/metrics", timeout=10)
        allowed = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer s3cret"}, timeout=10)
    worker.close()
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert allowed.status_code == 200 and "yivl_queue_depth 0" in allowed.text
