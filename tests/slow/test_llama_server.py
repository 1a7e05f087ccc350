"""The ``openai-compatible`` backend against a real server: llama.cpp's ``llama-server``
(built once per machine from the llama.cpp sources vendored in PyPI's llama-cpp-python
sdist, ``tests/support/llama_server.py``) serving the small embedded model's GGUF on a free
local port. Through the CLI's own code path: a 2-question Stage-1 search
(``sphere generate``) and a 2-question evaluation (``sphere evaluate --model``).

Skips only when cmake or a C++ compiler is missing (the first build takes 10-40 minutes on
2 cores; later runs reuse it).
"""

from __future__ import annotations

import json

import pytest

from sphere_core.backends.cache import _GENERATORS, clear_caches
from sphere_core.backends.embedded import EMBEDDED_SMALL, verified_gguf
from sphere_core.backends.openai_compat import OpenAICompatGenerator
from sphere_core.storage.repo import open_repository
from sphere_core.storage.run_view import RunView
from tests.support import llama_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    why = llama_server.missing_toolchain()
    if why:
        pytest.skip(why)
    llama_server.build()
    home = tmp_path_factory.mktemp("llama-home")
    gguf = verified_gguf(EMBEDDED_SMALL, home)
    with llama_server.LlamaServer(
        gguf, slots=8, threads=2, log_path=home / "llama-server.log"
    ) as srv:
        yield srv


def _client() -> OpenAICompatGenerator:
    clients = [g for g in _GENERATORS.values() if isinstance(g, OpenAICompatGenerator)]
    assert len(clients) == 1
    return clients[0]


def _sets(server, *more: str) -> list[str]:
    base = [
        "models.policy.path=embedded-small",
        "models.policy.backend=openai-compatible",
        f"models.policy.base_url={server.base_url}",
        "grading.workers=1",
        *more,
    ]
    return [a for s in base for a in ("--set", s)]


def test_stage1_search_through_llama_server(server, prefect_api, sphere_home, capsys):
    from flows.cli import main

    clear_caches()
    code = main(
        [
            "generate",
            "--preset",
            "demo",
            "--run-id",
            "llama-s1",
            *_sets(server, "data.limit=2", "routing.stages=[stage1]"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    client = _client()
    assert client.server_kind == "llama.cpp" and not client.fan_out  # n honoured (8 slots)
    assert client.usage.requests > 0 and client.usage.completion_tokens > 0
    assert client.usage.cached_prompt_tokens > 0  # cache_prompt: prefixes reused across depths

    view = RunView(sphere_home, "llama-s1")
    routing = view.routing("stage1")
    assert len(routing) == 2 and set(routing["decision"]) <= {
        "pair",
        "pair_inverted",
        "to_correction",
        "to_diversity",
    }, routing[["decision", "error"]]
    assert routing["solution_max"].map(len).gt(0).all()
    tree = view.tree("stage1")
    assert len(tree) and tree["num_tokens"].gt(0).all()
    with open_repository(None, sphere_home) as repo:
        run = repo.get_run("llama-s1")
    assert run["status"] == "completed" and run["error"] is None
    clear_caches()


def test_evaluation_through_llama_server(server, prefect_api, sphere_home, capsys):
    from flows.cli import main

    clear_caches()
    code = main(
        [
            "evaluate",
            "--model",
            "embedded-small",
            "-b",
            "gsm8k",
            "--limit",
            "2",
            "--format",
            "json",
            *_sets(server, "evaluation.max_new_tokens=96", "evaluation.self_correction=false"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    payload = json.loads(captured.out[captured.out.index("{") :])
    rows = [r for r in payload["rows"] if r["benchmark"] == "gsm8k"]
    assert rows and all(r["n"] == 2 for r in rows)
    assert _client().usage.requests >= 2
    clear_caches()
