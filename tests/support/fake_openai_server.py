"""A small vLLM-style OpenAI-compatible HTTP server for tests (127.0.0.1, random port).

``POST /v1/completions`` runs a real ``Generator`` (the embedded model through HFGenerator
in the tests), so the client's whole protocol path is exercised against real outputs.
Answers like vLLM: text without the stop string, ``finish_reason`` "stop"/"length" plus
``stop_reason`` (None for EOS, else the stop string), ``logprobs.token_logprobs``.
``tokens``/``text_offset`` are placeholders (a Step carries no token strings); the client
reads only ``token_logprobs``. Knobs for failure tests: ``sleep_s`` (answer late) and
``fail_first`` (answer HTTP 503 to that many requests first). Records every request body.

``flavor`` makes it answer like another server: ``"llama.cpp"`` (``GET /props``; log-probs in
the chat-completions shape ``logprobs.content[j]`` with token ids, the EOS token last; no
``stop_reason``; ``n`` over ``max_n`` refused with HTTP 400 like llama-server's slot cap) or
``"plain"`` (like ``transformers serve``: ignores ``n`` and ``logprobs``: one choice, no
log-probs). ``ignore_n``: answer one choice whatever ``n`` asks.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class _QuietServer(ThreadingHTTPServer):
    """Records handler exceptions instead of printing them to stderr: a request still being
    handled after its test ended must not write into the next test's captured output."""

    errors: list[str]

    def handle_error(self, request, client_address) -> None:
        import traceback

        self.errors.append(traceback.format_exc())


class FakeOpenAIServer:
    def __init__(
        self,
        generator: Any | None,
        *,
        sleep_s: float = 0.0,
        fail_first: int = 0,
        flavor: str = "vllm",
        max_n: int = 64,
        ignore_n: bool = False,
    ) -> None:
        self.generator = generator
        self.flavor, self.max_n, self.ignore_n = flavor, max_n, ignore_n or flavor == "plain"
        self.sleep_s = sleep_s
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.handler_errors: list[str] = []
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self._httpd.errors = self.handler_errors
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        stop = body.get("stop")
        stop = [stop] if isinstance(stop, str) else list(stop or [])
        n = 1 if self.ignore_n else int(body.get("n", 1))
        with self._lock:  # one generation at a time, like a single GPU worker
            rows = self.generator.generate_steps(
                [body["prompt"]],
                n,
                float(body.get("temperature", 1.0)),
                stop,
                int(body.get("max_tokens", 16)),
                top_p=float(body.get("top_p", 1.0)),
                top_k=int(body.get("top_k", 0)),
                seed=body.get("seed"),
            )
        choices = [self._choice(i, step, stop) for i, step in enumerate(rows[0])]
        usage = {
            "prompt_tokens": 1,
            "completion_tokens": sum(s.num_tokens for s in rows[0]),
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "model": body.get("model"),
            "choices": choices,
            "usage": usage,
        }

    def _choice(self, i: int, step: Any, stop: list[str]) -> dict[str, Any]:
        reason = "length" if step.finish_reason == "length" else "stop"
        choice: dict[str, Any] = {"index": i, "text": step.text, "finish_reason": reason}
        if self.flavor == "plain":
            return {**choice, "logprobs": None}
        if self.flavor == "llama.cpp":  # token ids: the EOS token last when the step ended on it
            eos = self.generator.tokenizer.eos_token_id
            ids = [100] * step.num_tokens
            if step.finish_reason == "eos" and ids:
                ids[-1] = eos
            content = [
                {"id": t, "token": "?", "bytes": [63], "logprob": lp, "top_logprobs": []}
                for t, lp in zip(ids, step.token_logprobs)
            ]
            return {**choice, "logprobs": {"content": content}}
        return {
            **choice,
            "stop_reason": stop[0] if step.finish_reason == "stop" else None,
            "logprobs": {
                "tokens": ["?"] * step.num_tokens,
                "token_logprobs": step.token_logprobs,
                "text_offset": [0] * step.num_tokens,
                "top_logprobs": None,
            },
        }

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout tests)
                    pass

            def do_GET(self) -> None:
                if self.path == "/props" and server.flavor == "llama.cpp":
                    return self._send(200, {"default_generation_settings": {}, "total_slots": 8})
                self._send(404, {"error": f"no route {self.path}"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server._lock:
                    server.requests.append(body)
                    failing = server.fail_first > 0
                    if failing:
                        server.fail_first -= 1
                if self.path != "/v1/completions":
                    return self._send(404, {"error": f"no route {self.path}"})
                if server.sleep_s:
                    time.sleep(server.sleep_s)
                if failing:
                    return self._send(503, {"error": "warming up"})
                if server.generator is None:  # a "silent" server: the client gave up long ago
                    return self._send(503, {"error": "no model loaded"})
                if int(body.get("n", 1)) > server.max_n:
                    return self._send(
                        400,
                        {
                            "error": {
                                "code": 400,
                                "type": "invalid_request_error",
                                "message": "n_cmpl out of range",
                            }
                        },
                    )
                self._send(200, server.complete(body))

        return Handler
