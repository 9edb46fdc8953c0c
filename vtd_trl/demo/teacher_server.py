"""A stand-in for `vllm serve <teacher>` on CPU: the endpoints and response shapes a teacher server is scored through.

It serves a transformers model (e.g. the demo teacher) with the parts of vLLM's OpenAI server that `VtDTrainer`'s
server teacher uses: `GET /health`, `GET /v1/models`, `POST /tokenize` and `POST /v1/completions` with
`prompt_logprobs` (teacher forcing: `prompt` is a list of token-id lists, `max_tokens=1`). As vLLM, it returns for
each prompt position after the first the top-k tokens plus the actual one, keyed by token id, each with `logprob`,
`rank` and `decoded_token`, computed from the raw logits (vLLM applies no temperature to prompt log-probs), and it
refuses more than `--max-logprobs`. For tests and benchmarks; train against a real `vllm serve`.

    python -m vtd_trl.demo.teacher_server --model vtd-demo/teacher --port 8000 --max-logprobs 64
"""

import argparse
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vtd_trl.demo.models import resolve_model


class TeacherServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` scoring with `model`; `fault(path)` may return an HTTP status to fail a request with."""

    daemon_threads = True

    def __init__(self, address, model, tokenizer, max_logprobs: int = 20, name: str = "teacher", max_len: int = 4096):
        super().__init__(address, _Handler)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_logprobs, self.name, self.max_len = max_logprobs, name, max_len
        self.requests: list[str] = []  # paths of the requests received, in order
        self.decoded = [tokenizer.decode([i]) for i in range(model.config.vocab_size)]
        self._lock = threading.Lock()  # one forward at a time

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def fault(self, path: str) -> int | None:
        return None

    @torch.no_grad()
    def prompt_logprobs(self, ids: list[int], k: int) -> list[dict | None]:
        with self._lock:
            logits = self.model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        log_p = logits.log_softmax(-1)
        values, top = log_p.topk(k, dim=-1)
        actual = log_p.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
        ranks = (log_p > actual.unsqueeze(-1)).sum(-1) + 1
        positions: list[dict | None] = [None]
        for t in range(len(ids) - 1):
            entry = {
                str(i): {"logprob": v, "rank": r + 1, "decoded_token": self.decoded[i]}
                for r, (i, v) in enumerate(zip(top[t].tolist(), values[t].tolist()))
            }
            token = ids[t + 1]
            if str(token) not in entry:
                entry[str(token)] = {
                    "logprob": actual[t].item(),
                    "rank": int(ranks[t]),
                    "decoded_token": self.decoded[token],
                }
            positions.append(entry)
        return positions


class _Handler(BaseHTTPRequestHandler):
    server: TeacherServer

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": "BadRequestError", "code": status}})

    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        if (status := server.fault(self.path)) is not None:
            return self._error(status, "injected fault")
        if self.path == "/health":
            return self._send(200)
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": server.name, "max_model_len": server.max_len}]})
        self._error(404, f"no route {self.path}")

    def do_POST(self):
        server = self.server
        server.requests.append(self.path)
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if (status := server.fault(self.path)) is not None:
            return self._error(status, "injected fault")
        if self.path == "/tokenize":
            tokens = server.tokenizer(payload["prompt"], add_special_tokens=payload.get("add_special_tokens", True))
            ids = tokens["input_ids"]
            return self._send(200, {"count": len(ids), "max_model_len": server.max_len, "tokens": ids})
        if self.path != "/v1/completions":
            return self._error(404, f"no route {self.path}")
        k = payload.get("prompt_logprobs")
        if k is not None and k > server.max_logprobs:
            return self._error(
                400, f"Requested prompt logprobs of {k}, which is greater than max allowed: {server.max_logprobs}"
            )
        choices = [
            {"index": i, "text": "", "prompt_logprobs": server.prompt_logprobs(ids, k) if k else None}
            for i, ids in enumerate(payload["prompt"])
        ]
        self._send(200, {"object": "text_completion", "model": server.name, "choices": choices})


def load(model: str, max_logprobs: int = 20, host: str = "127.0.0.1", port: int = 0, cls=TeacherServer):
    """A `cls` server for the model at `model` (a path or `vtd-demo/<role>`), not yet serving."""
    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return cls((host, port), AutoModelForCausalLM.from_pretrained(path), tokenizer, max_logprobs, name=model)


@contextmanager
def serving(server: TeacherServer):
    """Serve `server` on a background thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vtd-demo/teacher")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-logprobs", type=int, default=20)
    args = parser.parse_args()
    server = load(args.model, args.max_logprobs, args.host, args.port)
    print(f"serving {args.model} at {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
