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
    spec = ModelSpec(path=str(model_dir), backend="openai-compatible", base_url=url,
                     served_model_name="smol", request_timeout_s=kw.pop("timeout", 60))
    return OpenAICompatGenerator(spec, tmp_path, **kw)


def test_url_forms():
    assert completions_url("http://h:8000") == "http://h:8000/v1/completions"
    assert completions_url("http://h:8000/v1/") == "http://h:8000/v1/completions"


def test_generation_through_server_matches_hf(hf, model_dir, tmp_path):
    with FakeOpenAIServer(hf) as server:
        gen = client(server.base_url, model_dir, tmp_path)
        prompts = [gen.apply_chat_template([{"role": "user", "content": q}])
                   for q in ("What is 12*7? Answer step by step.", "hi")]
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
    assert sorted(r["seed"] for r in server.requests[:2]) == [11, 12]
    assert gen.count_tokens("What is 2+2?") == hf.count_tokens("What is 2+2?")


def test_retries_then_succeeds(hf, model_dir, tmp_path):
    with FakeOpenAIServer(hf, fail_first=2) as server:
        gen = client(server.base_url, model_dir, tmp_path, backoff_s=0.01)
        rows = gen.generate_steps(["Hello"], 1, 0.0, None, 3)
    assert rows[0][0].num_tokens == 3 and len(server.requests) == 3


def test_silent_server_times_out_naming_url(model_dir, tmp_path):
    with FakeOpenAIServer(None, sleep_s=3) as server:
        gen = client(server.base_url, model_dir, tmp_path, timeout=0.3, max_retries=1, backoff_s=0.01)
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
        lookup("generator", "openai-compatible")(spec=ModelSpec(backend="openai-compatible"), home=tmp_path)
