"""openai-compatible backend against a real local HTTP server running the embedded model."""

from __future__ import annotations

import time

import pytest

from sphere_core.backends.embedded import EMBEDDED_DIR_NAME, embedded_gguf_path, ensure_converted
from sphere_core.backends.hf import HFGenerator
from sphere_core.backends.openai_compat import OpenAICompatGenerator, completions_url
from sphere_core.backends.registry import lookup
from sphere_core.config import ModelSpec
from sphere_core.errors import BackendError, GenerationError
from tests.support.fake_openai_server import FakeOpenAIServer


@pytest.fixture(scope="module")
def model_dir(session_models_dir):
    return ensure_converted(embedded_gguf_path(), session_models_dir / EMBEDDED_DIR_NAME)


@pytest.fixture(scope="module")
def hf(model_dir):
    return HFGenerator(model_dir, device="cpu")


def client(url: str, model_dir, tmp_path, **kw) -> OpenAICompatGenerator:
    spec = ModelSpec(
        path=str(model_dir),
        backend="openai-compatible",
        base_url=url,
        served_model_name="smol",
        request_timeout_s=kw.pop("timeout", 60),
    )
    return OpenAICompatGenerator(spec, tmp_path, **kw)


def test_url_forms():
    assert completions_url("http://h:8000") == "http://h:8000/v1/completions"
    assert completions_url("http://h:8000/v1/") == "http://h:8000/v1/completions"


def test_generation_through_server_matches_hf(hf, model_dir, tmp_path):
    with FakeOpenAIServer(hf) as server:
        gen = client(server.base_url, model_dir, tmp_path)
        prompts = [
            gen.apply_chat_template([{"role": "user", "content": q}])
            for q in ("What is 12*7? Answer step by step.", "hi")
        ]
        rows = gen.generate_steps(prompts, 2, 0.8, ["\n\n"], 16, top_k=20, seed=11)
        greedy = gen.generate_steps(prompts, 1, 0.0, ["\n\n"], 16)
    assert len(rows) == 2 and all(len(r) == 2 for r in rows)
    for step in (s for r in rows for s in r):
        assert "\n\n" not in step.text and step.finish_reason in {"stop", "eos", "length"}
        assert len(step.token_logprobs) == step.num_tokens >= 1 and max(step.token_logprobs) <= 0
    direct = hf.generate_steps(prompts, 1, 0.0, ["\n\n"], 16)
    assert [r[0].text for r in greedy] == [r[0].text for r in direct]
    assert [r[0].finish_reason for r in greedy] == [r[0].finish_reason for r in direct]
    assert greedy[1][0].finish_reason == "eos"  # "hi" -> short greeting, EOS via stop_reason=None
    sent = server.requests[0]
    assert sent["model"] == "smol" and sent["logprobs"] == 1 and sent["stop"] == ["\n\n"]
    assert sent["n"] == 2 and sent["top_k"] == 20
    assert "cache_prompt" not in sent and "min_p" not in sent  # vLLM gets only its own fields
    assert gen.server_kind == "openai" and not gen.fan_out
    assert sorted(r["seed"] for r in server.requests[:2]) == [11, 13]  # seed + prompt * n
    assert gen.count_tokens("What is 2+2?") == hf.count_tokens("What is 2+2?")


def test_retries_then_succeeds(hf, model_dir, tmp_path):
    with FakeOpenAIServer(hf, fail_first=2) as server:
        gen = client(server.base_url, model_dir, tmp_path, backoff_s=0.01)
        rows = gen.generate_steps(["Hello"], 1, 0.0, None, 3)
    assert rows[0][0].num_tokens == 3 and len(server.requests) == 3


def test_silent_server_times_out_naming_url(model_dir, tmp_path):
    with FakeOpenAIServer(None, sleep_s=3) as server:
        gen = client(
            server.base_url, model_dir, tmp_path, timeout=0.3, max_retries=1, backoff_s=0.01
        )
        start = time.monotonic()
        with pytest.raises(GenerationError, match="no answer within 0.3 s") as err:
            gen.generate_steps(["Hello"], 1, 0.0, None, 3)
    assert server.base_url + "/completions" in str(err.value)
    assert time.monotonic() - start < 2.5


def test_unreachable_server_and_missing_url(model_dir, tmp_path):
    gen = client("http://127.0.0.1:9/v1", model_dir, tmp_path, max_retries=0)
    with pytest.raises(GenerationError, match="127.0.0.1:9"):
        gen.generate_steps(["Hello"], 1, 0.0, None, 3)
    with pytest.raises(BackendError, match="base_url"):
        lookup("generator", "openai-compatible")(
            spec=ModelSpec(backend="openai-compatible"), home=tmp_path
        )


PROMPTS = ("What is 12*7? Answer step by step.", "hi")


def _same_as_hf(gen, hf, stop, max_tokens=16):
    prompts = [gen.apply_chat_template([{"role": "user", "content": q}]) for q in PROMPTS]
    got = gen.generate_steps(prompts, 1, 0.0, stop, max_tokens)
    want = hf.generate_steps(prompts, 1, 0.0, stop, max_tokens)
    assert [(r[0].text, r[0].finish_reason) for r in got] == [
        (r[0].text, r[0].finish_reason) for r in want
    ]
    assert [r[0].num_tokens for r in got] == [r[0].num_tokens for r in want]
    return got


def test_llama_cpp_shape_logprobs_and_eos(hf, model_dir, tmp_path):
    """llama-server's answer: logprobs.content[j].logprob with token ids, no stop_reason."""
    with FakeOpenAIServer(hf, flavor="llama.cpp") as server:
        gen = client(server.base_url, model_dir, tmp_path)
        greedy = _same_as_hf(gen, hf, ["\n\n"])
        stopped = _same_as_hf(gen, hf, [" "], max_tokens=8)
        rows = gen.generate_steps([PROMPTS[0]], 2, 0.8, ["\n\n"], 8, seed=5)
    assert gen.server_kind == "llama.cpp"
    assert greedy[1][0].finish_reason == "eos"  # told apart by the EOS token id, not guessed
    assert stopped[0][0].finish_reason == "stop"
    assert len(rows[0]) == 2 and all(s.num_tokens == len(s.token_logprobs) for s in rows[0])
    sent = server.requests[-1]
    assert sent["cache_prompt"] is True and sent["min_p"] == 0.0 and sent["top_k"] == 0
    assert sent["n"] == 2 and sent["logprobs"] == 1 and not gen.fan_out


@pytest.mark.parametrize(
    "knobs", [{"ignore_n": True}, {"max_n": 1}], ids=["ignores-n", "refuses-n"]
)
def test_server_without_n_fans_out(hf, model_dir, tmp_path, knobs):
    with FakeOpenAIServer(hf, **knobs) as server:
        gen = client(server.base_url, model_dir, tmp_path)
        first = gen.generate_steps(["Hello", "Hi"], 3, 0.8, None, 4, seed=100)
        asked = len(server.requests)
        second = gen.generate_steps(["Hello"], 2, 0.8, None, 4, seed=7)
    assert [len(r) for r in first] == [3, 3] and len(second[0]) == 2 and gen.fan_out
    later = server.requests[asked:]
    assert [r["n"] for r in later] == [1, 1] and sorted(r["seed"] for r in later) == [7, 8]
    ok = [r for r in server.requests[:asked] if r["n"] == 1]
    assert sorted(r["seed"] for r in ok) == (
        [101, 102, 104, 105] if knobs.get("ignore_n") else [100, 101, 102, 103, 104, 105]
    )


def test_server_without_logprobs_fails_naming_it(hf, model_dir, tmp_path):
    with FakeOpenAIServer(hf, flavor="plain") as server:
        gen = client(server.base_url, model_dir, tmp_path)
        with pytest.raises(GenerationError, match="no per-token log-probs") as err:
            gen.generate_steps(["Hello"], 2, 0.8, None, 3)
    assert server.base_url + "/completions" in str(err.value)
    assert "\n" not in str(err.value)
