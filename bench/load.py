"""Load test of the REST API: a live `gapfill serve` on a free loopback port, a few concurrent
clients sending fills and status requests, latency percentiles, errors and the server's memory.

    nice -n 19 .venv/bin/python bench/load.py --clients 4 --fills 8     # the shipped models
    .venv/bin/python bench/load.py --tiny --fills 4                      # tiny models, seconds

By default the server runs on the shipped models: `initialize` with the built-in corpus loads
the map and the Vec2Text model from assets/models (a fill then runs SmolLM2 on the CPU, about
10-20 s). `--tiny` instead builds a random two-layer backbone (and uses `--embedder`, default
all-MiniLM-L6-v2), loads `--tiny-n` documents and trains a tiny map and Vec2Text model through
the API first. Either way the server gets an empty model store of its own, so nothing of the
user's is read or written (the embedding cache aside, in the default mode).

The server serves one fill at a time and queues the others (`gapfill.worker`), so a fill's
latency here is its wait in the queue plus its own run; status requests are answered at once
throughout. Errors are answers other than 2xx, except 409 and 429 (refusals: busy, queue
full), which are counted apart, and fills whose body is not a well-formed result. Memory is
the server's resident set (VmRSS of /proc/PID/status) at start, before the load (models
loaded), at its highest during the load, and after; `peak` is VmHWM. The last line of output
is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

# Python puts this script's folder first on the path, where bench/gapfill.py would stand
# in for the gapfill package: the repository root goes there instead.
REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)

from gapfill.local_server import ServerDidNotStart, free_port, memory_mib, stop, wait_until_up  # noqa: E402
API = "/api/advanced-gap-filling"
TINY_MAP = {"n_epochs": 20, "encoder_epochs": 5, "decoder_epochs": 5, "transform_steps": 10}
TINY_V2T = {"epochs": 1, "batch_size": 4, "num_prefix": 2, "lora_rank": 2, "corrector_documents": 4,
            "corrector_neighbours": 4, "max_length": 24, "max_documents": 24, "num_steps": 1, "sequence_beam_width": 2}


class Server:
    """`gapfill serve` in a subprocess, its log in `folder`."""

    def __init__(self, env: dict[str, str], folder: Path, start_timeout: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "server.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "gapfill.cli", "serve", "--port", str(self.port)],
                                        cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(f"{self.url}{API}/status", self.process, start_timeout, self.log_path)
        except ServerDidNotStart as err:
            self.close()
            raise SystemExit(str(err)) from None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def close(self) -> None:
        stop(self.process, timeout_s=15)
        self._log.close()


def post(client: httpx.Client, path: str, **kw) -> dict:
    """A setup call that must succeed."""
    answer = client.post(f"{API}/{path}", **kw)
    if answer.status_code >= 300:
        raise SystemExit(f"POST {path} answered {answer.status_code}: {answer.text[:2000]}")
    return answer.json()


def prepare(url: str, tiny: bool) -> dict:
    """Load the corpus and the models; in tiny mode train them first."""
    with httpx.Client(base_url=url, timeout=1800) as client:
        init = post(client, "initialize")
        if tiny:
            post(client, "train-parametric-umap", json=TINY_MAP)
            post(client, "train-vec2text", json=TINY_V2T)
        elif init["map_loaded"] is None or not init["vec2text_loaded"]:
            raise SystemExit(f"the shipped models did not load for the built-in corpus: {init}")
        return init


def well_formed(body: dict) -> bool:
    result = body.get("result") or {}
    return isinstance(result.get("text"), str) and -1.0 <= float(result.get("cosine", 2.0)) <= 1.0 \
        and len(body.get("steps", [])) == result.get("steps")


class Recorder:
    """Latencies by endpoint, and status codes, from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency: dict[str, list[float]] = {"fill-gap": [], "status": []}
        self.codes: dict[str, Counter] = {"fill-gap": Counter(), "status": Counter()}
        self.malformed = 0
        self.rss_per_fill: list[float] = []  # the server's VmRSS (MiB) as each fill was answered

    def add(self, endpoint: str, code: int | str, seconds: float, malformed: bool = False) -> None:
        with self._lock:
            self.codes[endpoint][code] += 1
            if isinstance(code, int) and 200 <= code < 300:
                self.latency[endpoint].append(seconds)
            self.malformed += malformed

    def figures(self, scale: float) -> dict[str, dict]:
        out = {}
        for endpoint, values in self.latency.items():
            v = np.asarray(values) * scale
            out[endpoint] = {"n_ok": len(v), "codes": {str(k): n for k, n in sorted(self.codes[endpoint].items(),
                                                                                      key=str)}}
            if len(v):
                out[endpoint] |= {"p50": round(float(np.percentile(v, 50)), 3),
                                  "p95": round(float(np.percentile(v, 95)), 3), "max": round(float(v.max()), 3)}
        return out


def load(url: str, pid: int, args: argparse.Namespace) -> tuple[Recorder, float, float, float]:
    """`args.clients` threads share `args.fills` fills, aimed at the largest gaps;
    `args.status_clients` poll status until the fills end. Returns the recorder, the wall time,
    the highest RSS seen meanwhile and the seconds the one gap search took (before the load)."""
    with httpx.Client(base_url=url, timeout=1800) as client:
        t = time.perf_counter()
        gaps = client.get(f"{API}/gaps", params={"k": min(max(args.fills, 1), 100)}).json()
        gaps_s = time.perf_counter() - t
    targets = [(g["x"], g["y"]) for g in gaps]
    settings = {k: v for k, v in (("num_steps", args.num_steps), ("sequence_beam_width", args.beam)) if v is not None}
    rec, tickets, ticket_lock, rss_per_fill = Recorder(), itertools.count(), threading.Lock(), []
    started = time.monotonic()
    deadline = started + args.time_limit
    done = threading.Event()

    def fill_client() -> None:
        with httpx.Client(base_url=url, timeout=args.time_limit + 60) as client:
            while time.monotonic() < deadline:
                with ticket_lock:
                    i = next(tickets)
                if i >= args.fills:
                    return
                x, y = targets[i % len(targets)]
                t = time.perf_counter()
                try:
                    answer = client.post(f"{API}/fill-gap", json={"x": x, "y": y, **settings})
                except httpx.HTTPError as err:
                    rec.add("fill-gap", type(err).__name__, 0.0)
                    continue
                seconds, ok = time.perf_counter() - t, answer.status_code == 200
                rec.add("fill-gap", answer.status_code, seconds, malformed=ok and not well_formed(answer.json()))
                with ticket_lock:  # a leak grows with every fill; a plateau is the allocator's
                    rss_per_fill.append(memory_mib(pid)["VmRSS"])

    def status_client() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not done.is_set() and time.monotonic() < deadline:
                t = time.perf_counter()
                try:
                    answer = client.get(f"{API}/status")
                    rec.add("status", answer.status_code, time.perf_counter() - t)
                except httpx.HTTPError as err:
                    rec.add("status", type(err).__name__, 0.0)
                done.wait(args.status_interval)

    highest = [memory_mib(pid)["VmRSS"]]

    def sample_memory() -> None:
        while not done.wait(0.5):
            highest[0] = max(highest[0], memory_mib(pid)["VmRSS"])

    fillers = [threading.Thread(target=fill_client) for _ in range(args.clients)]
    others = [threading.Thread(target=status_client) for _ in range(args.status_clients)]
    others.append(threading.Thread(target=sample_memory))
    for thread in fillers + others:
        thread.start()
    for thread in fillers:
        thread.join()
    done.set()
    for thread in others:
        thread.join()
    rec.rss_per_fill = rss_per_fill
    return rec, time.monotonic() - started, highest[0], gaps_s


def server_env(args: argparse.Namespace, folder: Path) -> dict[str, str]:
    env = os.environ | {"GAPFILL_MODELS": str(folder / "models"), "HF_HUB_OFFLINE": "1"}
    env.pop("GAPFILL_BUILTIN_N", None)
    env.pop("GAPFILL_API_TOKEN", None)  # loopback: no token
    if args.tiny:
        from gapfill.backbone import build_tiny_backbone

        backbone = Path(args.backbone) if args.backbone else build_tiny_backbone(folder / "backbone")
        env |= {"GAPFILL_BACKBONE": str(backbone), "GAPFILL_BUILTIN_N": str(args.tiny_n),
                "GAPFILL_CACHE": str(folder / "cache")}
        if args.embedder:
            env["GAPFILL_EMBEDDER"] = args.embedder
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models trained on the spot (a quick check)")
    parser.add_argument("--embedder", help="tiny mode: the embedder folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--backbone", help="tiny mode: a tiny backbone folder (default: built in a temp folder)")
    parser.add_argument("--tiny-n", type=int, default=60, help="tiny mode: documents of the built-in corpus")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients sending fills")
    parser.add_argument("--fills", type=int, default=8, help="fills in all, shared by the clients")
    parser.add_argument("--status-clients", type=int, default=1, help="clients polling status meanwhile")
    parser.add_argument("--status-interval", type=float, default=0.25, help="seconds between a status client's calls")
    parser.add_argument("--num-steps", type=int, default=None, help="correction steps per fill (default: the model's)")
    parser.add_argument("--beam", type=int, default=None, help="sequence_beam_width per fill (default: the model's)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="no new request after this many seconds")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gapfill-load-") as tmp:
        folder = Path(tmp)
        server = Server(server_env(args, folder), folder)
        try:
            rss_start = memory_mib(server.process.pid)["VmRSS"]
            t = time.perf_counter()
            init = prepare(server.url, args.tiny)
            prepare_s = time.perf_counter() - t
            rss_before = memory_mib(server.process.pid)["VmRSS"]
            rec, wall, rss_during, gaps_s = load(server.url, server.process.pid, args)
            memory = memory_mib(server.process.pid)
        except BaseException:
            print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            server.close()

    fill, status = rec.figures(1.0)["fill-gap"], rec.figures(1000.0)["status"]
    codes = rec.codes["fill-gap"] + rec.codes["status"]
    refused = {code: codes[code] for code in (409, 429)}
    errors = sum(n for code, n in codes.items() if not (isinstance(code, int) and 200 <= code < 300)
                 and code not in refused) + rec.malformed
    figures = {
        "mode": "tiny" if args.tiny else "shipped", "corpus_size": init["corpus"]["size"],
        "clients": args.clients, "fills": args.fills, "prepare_s": round(prepare_s, 1),
        "gaps_s": round(gaps_s, 2), "wall_s": round(wall, 2),
        "fills_per_min": round(60 * fill["n_ok"] / wall, 2) if wall else None,
        "fill_s": fill, "status_ms": status,
        "errors": errors, "malformed": rec.malformed, "refused_409": refused[409], "refused_429": refused[429],
        "rss_mib": {"start": rss_start, "before": rss_before, "highest_during": max(rss_during, memory["VmRSS"]),
                    "after": memory["VmRSS"], "peak": memory["VmHWM"], "after_each_fill": rec.rss_per_fill},
    }
    print(f"{figures['mode']} models, {figures['corpus_size']} documents; {args.clients} clients sent "
          f"{sum(rec.codes['fill-gap'].values())} fills in {wall:.1f} s ({figures['fills_per_min']} a minute)")
    if fill["n_ok"]:
        print(f"fill-gap: p50 {fill['p50']:.2f} s, p95 {fill['p95']:.2f} s (queue wait included)")
    if status["n_ok"]:
        print(f"status:   p50 {status['p50']:.1f} ms, p95 {status['p95']:.1f} ms over {status['n_ok']} calls")
    print(f"errors {errors}, refused 409: {refused[409]}, 429: {refused[429]}; server RSS "
          f"{rss_before:.0f} MiB before, {memory['VmRSS']:.0f} MiB after, peak {memory['VmHWM']:.0f} MiB")
    print(json.dumps(figures))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
