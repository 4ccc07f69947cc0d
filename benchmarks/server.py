"""HTTP API throughput: chat tokens/s with 1 client vs 8 concurrent clients against one `mm serve --api`, same run.

Full-size LFM2-350M with random weights and no EOS (every request generates exactly ``--max-tokens``;
speed does not depend on weight values), served by a real ``mm serve --api`` subprocess on loopback.
Rounds alternate between the two loads; each load's best round is reported. One client sends its
requests one after another; eight clients send theirs at the same time, so the server's queue
batches them (``mm.server.batching``). Prints ONE JSON object::

    python benchmarks/server.py                 # 3 rounds, 64 tokens per request
    python benchmarks/server.py --quick         # 1 round, 16 tokens (a smoke run)
    python benchmarks/server.py --model DIR     # a real checkpoint instead of random weights
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=1200) as response:
        return json.loads(response.read())


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not get ready in time")


def run_load(url: str, model: str, clients: int, requests_per_client: int, max_tokens: int) -> dict[str, Any]:
    """``clients`` threads, each sending its requests one after another; tokens/s over the whole load."""
    def client(c: int) -> list[dict[str, Any]]:
        out = []
        for r in range(requests_per_client):
            t0 = time.perf_counter()
            reply = post(url + "/v1/chat/completions", {
                "model": model, "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": f"Client {c} asks question {r}: tell me about rivers."}]})
            out.append({"tokens": reply["usage"]["completion_tokens"], "latency_s": time.perf_counter() - t0})
        return out

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in results)
    return {"clients": clients, "requests": len(results), "completion_tokens": tokens, "wall_s": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 2),
            "mean_latency_s": round(sum(r["latency_s"] for r in results) / len(results), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="chat checkpoint directory (default: random full-size LFM2-350M)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2, help="requests per client (1-client load: 4x this)")
    parser.add_argument("--threads", type=int, default=None, help="server torch threads (default: all cores)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.max_tokens, args.requests = 1, 16, 1

    import psutil
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from backbone import LFM2_350M, write_checkpoint

    threads = args.threads or os.cpu_count() or 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else write_checkpoint(Path(tmp) / "LFM2-350M-random", LFM2_350M)
        port = free_port()
        env = {**os.environ, "MM_NUM_THREADS": str(threads)}
        proc = subprocess.Popen([sys.executable, "-m", "mm", "serve", "--api", "--port", str(port), "--chat-model",
                                 str(model_dir), "--max-new-tokens", str(args.max_tokens), "--batch-size", "8",
                                 "--dtype", args.dtype, "--threads", str(threads)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc)
            server = psutil.Process(proc.pid)
            model = model_dir.name
            run_load(url, model, 1, 1, args.max_tokens)  # warm-up
            loads = {"1_client": (1, 4 * args.requests), "8_clients": (8, args.requests)}
            best: dict[str, dict[str, Any]] = {}
            for _ in range(args.rounds):
                for name, (clients, per_client) in loads.items():  # alternate the loads within each round
                    cpu0 = sum(server.cpu_times()[:2])
                    result = run_load(url, model, clients, per_client, args.max_tokens)
                    result["server_cpu_s"] = round(sum(server.cpu_times()[:2]) - cpu0, 2)
                    if name not in best or result["tokens_per_s"] > best[name]["tokens_per_s"]:
                        best[name] = result
            with urllib.request.urlopen(url + "/v1/models") as response:
                queue = json.loads(response.read())["data"][0]["mm"]["queue"]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(json.dumps({
        "benchmark": "server_chat_throughput",
        "model": "LFM2-350M random weights (no EOS)" if not args.model else str(args.model),
        "max_tokens": args.max_tokens, "rounds": args.rounds, "best_of_rounds": best,
        "batched_speedup_8_vs_1": round(best["8_clients"]["tokens_per_s"] / best["1_client"]["tokens_per_s"], 2),
        "server_queue": queue,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads,
        "cores": os.cpu_count(), "torch": torch.__version__,
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }, indent=1))


if __name__ == "__main__":
    main()
