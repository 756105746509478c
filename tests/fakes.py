"""Test doubles shared by the judge tests and the reliability harness.

`FakeAPI` is a Messages API on 127.0.0.1 that plays a script of behaviours (ok, an HTTP status with
headers, a stall, a dropped connection, a malformed body) and records every request and key, so
tests assert retries, budget stops and "a rerun pays nothing" exactly. No network is used.

`generations_frame` / `write_generations` build small GENERATIONS tables (lib/schemas.py) with
one row per (id, sample), so every judge test feeds the stage the same shape of input.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd

from lib.io import write_parquet
from lib.schemas import GENERATIONS, SYSTEMS

# A fake key: tests scan every written file and the console for it.
CANARY = "sk-ant-CANARY-7f3e9b1d2c-never-write-me"


class FakeAPI:
    """A Messages API double: `script` holds behaviours for the next requests; with it empty,
    every request is answered 200 with `answer(body)`."""

    def __init__(self) -> None:
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        self.keys: list[str | None] = []
        self.answer = lambda body: "Verdict: A\nReason: A is more on topic."
        self.usage = (100, 10)
        self.lock = threading.Lock()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code, payload: bytes, headers=()):
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with api.lock:
                    api.requests.append(body)
                    # SDK versions send the key as x-api-key or as a bearer token.
                    auth = self.headers.get("x-api-key") or self.headers.get("authorization")
                    api.keys.append(auth)
                    step = api.script.pop(0) if api.script else ("ok",)
                kind = step[0]
                if kind == "ok":
                    text = step[1] if len(step) > 1 else api.answer(body)
                    msg = {
                        "id": f"msg_{len(api.requests)}",
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "content": [{"type": "text", "text": text}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": api.usage[0], "output_tokens": api.usage[1]},
                    }
                    self._send(200, json.dumps(msg).encode())
                elif kind == "status":
                    code, headers = step[1], step[2] if len(step) > 2 else ()
                    err = {"type": "error", "error": {"type": "api_error", "message": "x"}}
                    self._send(code, json.dumps(err).encode(), headers)
                elif kind == "badjson":
                    self._send(200, b'{"content": [ {"type": "te')
                elif kind == "nocontent":
                    self._send(200, b'{"foo": 1}')
                elif kind == "stall":
                    time.sleep(step[1])
                elif kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def anthropic_key(value: str = CANARY) -> Iterator[None]:
    """ANTHROPIC_API_KEY set to `value` inside the block, restored (or removed) after it; for
    callers outside pytest's monkeypatch (the reliability report runs without pytest)."""
    old = os.environ.get("ANTHROPIC_API_KEY")
    os.environ["ANTHROPIC_API_KEY"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ANTHROPIC_API_KEY", None)
        else:
            os.environ["ANTHROPIC_API_KEY"] = old


def judge_argv(
    generations_dir: Path,
    out: Path,
    metrics: Path,
    pass_out: Path,
    cache_dir: Path,
    params: Path,
) -> list[str]:
    """The command line of `stages.judge.main`."""
    return [
        "--generations-dir",
        str(generations_dir),
        "--out",
        str(out),
        "--metrics",
        str(metrics),
        "--pass-out",
        str(pass_out),
        "--cache-dir",
        str(cache_dir),
        "--params",
        str(params),
    ]


def generations_frame(
    system: str,
    ids: Sequence[str] = ("q1", "q2"),
    n: int = 2,
    *,
    domain: str | Callable[[str], str] = "social",
    input: str = "How was your weekend, {id}?",
    output: str = "[{system}] reply {sample} to {id}",
    reference: str = "Great, thanks!",
    n_tokens: int = 5,
    seed_base: int = 100,
) -> pd.DataFrame:
    """`n` samples per id of `system`, GENERATIONS columns. `input` and `output` are format
    strings over {system}, {id}, {sample}; `domain` is a name or a function of the id. A
    `creative` row has no reference, as in the split (the contract's null reference)."""
    rows = []
    for id_ in ids:
        dom = domain(id_) if callable(domain) else domain
        text = input.format(system=system, id=id_)
        for s in range(n):
            rows.append(
                {
                    "system": system,
                    "id": id_,
                    "sample": s,
                    "domain": dom,
                    "input": text,
                    "reference": None if dom == "creative" else reference,
                    "references": [] if dom == "creative" else [reference],
                    "meta": "{}",
                    "prompt": text,
                    "output": output.format(system=system, id=id_, sample=s),
                    "n_tokens": n_tokens,
                    "finish_reason": "eos",
                    "seed": seed_base + s,
                }
            )
    return pd.DataFrame(rows)


def write_generations(gen_dir: Path, ids: Sequence[str] = ("q1", "q2"), n: int = 2, **kw) -> None:
    """`<gen_dir>/<system>.parquet` for every system in SYSTEMS (keywords: `generations_frame`)."""
    for system in SYSTEMS:
        df = generations_frame(system, ids, n, **kw)
        write_parquet(df, gen_dir / f"{system}.parquet", GENERATIONS)
