"""A minimal OpenAI-compatible chat server on loopback for tests (stdlib only).

Why: the llm judge and the openai backend must be tested with the real ``openai`` client over
real HTTP, but a real LLM server is not available on a CPU test machine. The stub answers
``POST /v1/chat/completions`` with whatever a test's ``reply(body) -> (status, dict)`` returns
and records every request body.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def chat_response(content: str, finish_reason: str = "stop", logprobs: Any = None,
                  prompt_tokens: int = 10, completion_tokens: int = 3) -> dict[str, Any]:
    """A chat.completion body in OpenAI's shape."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish_reason,
    }
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


@contextmanager
def openai_stub(reply: Reply) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serve ``reply`` on 127.0.0.1 (free port); yields (base_url, recorded request bodies)."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            with lock:
                seen.append(body)
            if self.path.rstrip("/") != "/v1/chat/completions":
                status, payload = 404, {"error": {"message": "not found"}}
            else:
                status, payload = reply(body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
