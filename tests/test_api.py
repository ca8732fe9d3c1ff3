"""The REST API on tiny models: the training guide's pipeline, refusals of bad input and of
work that conflicts with a running job, and the pipeline script against a live server."""
from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from gapfill.api import app_factory, create_app, is_loopback, serving_token
from gapfill.backbone import backbone_dir, build_tiny_backbone
from gapfill.engine import Engine
from gapfill.local_server import ServerDidNotStart, free_port, stop, wait_until_up
from gapfill.storage import ModelStore

pytestmark = pytest.mark.skipif(not (backbone_dir() / "READY.json").exists(), reason="run make setup")
torch.set_num_threads(1)

API = "/api/advanced-gap-filling"
REPO = Path(__file__).resolve().parents[1]
N_DOCS = 60
MAP = {"n_epochs": 20, "encoder_epochs": 5, "decoder_epochs": 5, "transform_steps": 10}
V2T = {"epochs": 1, "batch_size": 4, "num_prefix": 2, "lora_rank": 2, "corrector_documents": 4,
       "corrector_neighbours": 4, "max_length": 24, "max_documents": 24, "num_steps": 1, "sequence_beam_width": 2}


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_backbone(tmp_path_factory.mktemp("lm"))


def _client(model_dir: Path, backbone: Path, store: Path) -> TestClient:
    engine = Engine(embedder_model=str(model_dir), store=ModelStore(store), backbone_path=backbone)
    return TestClient(create_app(engine))


@pytest.fixture(scope="session")
def client(tiny_st_model_dir: Path, tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """One server for the pipeline and the tests that need its trained models."""
    return _client(tiny_st_model_dir, tiny_backbone, tmp_path_factory.mktemp("models"))


@pytest.fixture()
def fresh(tiny_st_model_dir: Path, tiny_backbone: Path, tmp_path: Path) -> TestClient:
    """A server with nothing loaded and an empty model store."""
    return _client(tiny_st_model_dir, tiny_backbone, tmp_path / "models")


def _trained(client: TestClient) -> TestClient:
    """`client` with a corpus, a map and a Vec2Text model (the pipeline test leaves them)."""
    state = client.get(f"{API}/status").json()
    if state["corpus"] is None:
        assert client.post(f"{API}/initialize", params={"n": N_DOCS}).status_code == 200
    if not state["map"]["loaded"]:
        assert client.post(f"{API}/train-parametric-umap", json=MAP).status_code == 200
    if not state["vec2text"]["loaded"]:
        assert client.post(f"{API}/train-vec2text", json=V2T).status_code == 200
    return client


def _wait_for(client: TestClient, done, timeout: float = 30.0) -> dict:
    """Poll status until `done(status)`; return that status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"{API}/status").json()
        if done(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"status never reached the expected state: {state}")


def test_the_training_guides_pipeline_runs_in_order(client: TestClient) -> None:
    init = client.post(f"{API}/initialize", params={"n": N_DOCS}).json()
    assert init["corpus"]["size"] == N_DOCS and init["map_loaded"] is None

    trained = client.post(f"{API}/train-parametric-umap", json=MAP)
    assert trained.status_code == 200, trained.text
    assert trained.json()["job"]["state"] == "done" and 0 < trained.json()["metrics"]["trust"] <= 1
    assert trained.json()["job"]["history"][-1]["stage"] == "decoder"
    trained = client.post(f"{API}/train-vec2text", json=V2T)
    assert trained.status_code == 200, trained.text
    assert trained.json()["job"]["state"] == "done" and trained.json()["metrics"]["n_train"] > 0

    gaps = client.get(f"{API}/gaps", params={"k": 5}).json()
    assert [g["rank"] for g in gaps] == [1, 2, 3, 4, 5]
    assert all(a["radius"] >= b["radius"] > 0 for a, b in zip(gaps, gaps[1:]))

    fill = client.post(f"{API}/fill-gap", json={"x": gaps[0]["x"], "y": gaps[0]["y"], "num_steps": 1,
                                                "sequence_beam_width": 2})
    assert fill.status_code == 200, fill.text
    result, steps = fill.json()["result"], fill.json()["steps"]
    assert result["text"] and -1 <= result["cosine"] <= 1 and result["distance"] >= 0
    assert len(steps) == result["steps"] and 0 <= result["nearest_index"] < N_DOCS
    step = steps[-1]
    assert {"text", "cosine", "x", "y", "distance"} <= set(step["best"]) and step["candidates"]

    quality = client.get(f"{API}/evaluate-quality", params={"n": 1})
    assert quality.status_code == 200, quality.text
    report = quality.json()
    assert 0 <= report["map"]["reconstruction_error"] and 0 <= report["map"]["embedding_distance"] <= 2
    assert report["fills"]["n"] == 2 and 0 <= report["fills"]["novelty"] <= 1  # the fill above and one new

    saved_map = client.post(f"{API}/save-parametric-umap").json()
    saved_v2t = client.post(f"{API}/save-vec2text").json()
    assert saved_map["version"] == saved_v2t["version"] == "v0001" and Path(saved_map["path"]).is_dir()
    assert client.post(f"{API}/save-parametric-umap").json()["version"] == "v0002"
    models = client.get(f"{API}/models").json()
    assert [(v["version"], v["is_current"]) for v in models["pumap"]] == [("v0001", False), ("v0002", True)]
    assert [v["version"] for v in models["vec2text"]] == ["v0001"]

    rolled_back = client.post(f"{API}/load-parametric-umap", json={"version": "v0001"})
    assert rolled_back.status_code == 200 and rolled_back.json()["version"] == "v0001"
    assert [v["is_current"] for v in client.get(f"{API}/models").json()["pumap"]] == [True, False]
    assert client.post(f"{API}/load-vec2text", json={"version": "v0001"}).json()["version"] == "v0001"
    again = client.post(f"{API}/initialize", params={"n": N_DOCS}).json()
    assert again["map_loaded"] == "v0001" and again["vec2text_loaded"]  # the saved map of this corpus

    export = client.get(f"{API}/fills.csv")
    assert export.headers["content-type"].startswith("text/csv")
    assert len(pd.read_csv(io.StringIO(export.text))) == 2

    state = client.get(f"{API}/status").json()
    assert state["corpus"]["size"] == N_DOCS and state["map"]["loaded"] and state["vec2text"]["loaded"]
    assert state["requests"] == {"running": None, "waiting": 0}
    assert state["job"]["name"] == "train-vec2text" and state["job"]["state"] == "done"


def test_calls_before_their_prerequisites_say_what_to_call_first(fresh: TestClient) -> None:
    early = fresh.post(f"{API}/fill-gap", json={"x": 0, "y": 0})
    assert early.status_code == 409 and "train-vec2text" in early.json()["detail"]
    assert "initialize" in fresh.post(f"{API}/train-parametric-umap", json=MAP).json()["detail"]
    fresh.post(f"{API}/initialize", params={"n": 20})
    early = fresh.get(f"{API}/gaps")
    assert early.status_code == 409 and "train-parametric-umap" in early.json()["detail"]
    assert fresh.get(f"{API}/evaluate-quality").status_code == 409
    assert fresh.post(f"{API}/load-parametric-umap").status_code == 404  # nothing saved yet


@pytest.mark.parametrize("raw", ['{"x": NaN, "y": 0}', '{"x": 0, "y": Infinity}', '{"x": -Infinity, "y": 0}'])
def test_non_finite_coordinates_are_refused(client: TestClient, raw: str) -> None:
    answer = _trained(client).post(f"{API}/fill-gap", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"][-1] in ("x", "y")


def test_bad_input_is_a_422_naming_what_is_allowed(client: TestClient) -> None:
    client = _trained(client)
    far = client.post(f"{API}/fill-gap", json={"x": 1e6, "y": 0})
    assert far.status_code == 422 and "far outside" in far.json()["detail"]
    for body in ({"x": 0, "y": 0, "colour": "red"}, {"x": 0, "y": 0, "num_steps": 51},
                 {"x": 0, "y": 0, "sequence_beam_width": 0}, {"x": 0, "y": 0, "sequence_beam_width": 9},
                 {"x": 0, "y": 0, "seed_documents": -1},
                 {"x": "left", "y": 0}):
        assert client.post(f"{API}/fill-gap", json=body).status_code == 422, body
    unknown = client.post(f"{API}/train-parametric-umap", json={"n_epoch": 5})
    assert unknown.status_code == 422 and "n_neighbors" in unknown.json()["detail"][0]["msg"]
    invalid = client.post(f"{API}/train-parametric-umap", json={"n_neighbors": 1})
    assert invalid.status_code == 422 and "n_neighbors" in invalid.json()["detail"]
    assert client.post(f"{API}/train-vec2text", json={"epochs": "many"}).status_code == 422
    assert client.get(f"{API}/gaps", params={"k": 0}).status_code == 422
    assert client.post(f"{API}/load-parametric-umap", json={"version": "latest"}).status_code == 422
    assert client.post(f"{API}/load-vec2text", json={"version": "v0099"}).status_code == 404
    assert client.post(f"{API}/train-vec2text", content=b"x" * 100_000,
                       headers={"content-type": "application/json"}).status_code == 413


def test_a_bad_csv_is_refused_and_the_loaded_corpus_stays(fresh: TestClient, small_csv_bytes) -> None:
    assert fresh.post(f"{API}/initialize", params={"n": 20}).status_code == 200
    good = small_csv_bytes([["id", "body"], ["1", "a first document"], ["2", "a second one"]])
    missing = fresh.post(f"{API}/initialize", files={"file": ("c.csv", good)}, data={"text_column": "text"})
    assert missing.status_code == 422 and missing.json()["columns"] == ["id", "body"]
    empty = fresh.post(f"{API}/initialize", files={"file": ("c.csv", b"")})
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]
    huge = fresh.post(f"{API}/initialize", files={"file": ("c.csv", b"text\n" + b"x" * (51 * 2**20))})
    assert huge.status_code == 413 and "limit" in huge.json()["detail"]
    assert fresh.get(f"{API}/status").json()["corpus"]["size"] == 20
    loaded = fresh.post(f"{API}/initialize", files={"file": ("c.csv", good)}, data={"text_column": "body"})
    assert loaded.status_code == 200 and loaded.json()["corpus"]["size"] == 2


def test_background_training_reports_progress_refuses_other_work_and_stops(fresh: TestClient) -> None:
    fresh.post(f"{API}/initialize", params={"n": N_DOCS})
    started = fresh.post(f"{API}/train-parametric-umap", json={"n_epochs": 100_000, "background": True})
    assert started.status_code == 202 and started.json()["job"]["state"] == "running"
    state = _wait_for(fresh, lambda s: (s["job"]["progress"] or {}).get("stage") == "layout")
    assert state["job"]["progress"]["total"] == 100_000 and state["job"]["history"]

    second = fresh.post(f"{API}/train-vec2text", json=V2T)
    assert second.status_code == 409 and "train-parametric-umap job is running" in second.json()["detail"]
    assert fresh.post(f"{API}/initialize").status_code == 409
    assert fresh.post(f"{API}/fill-gap", json={"x": 0, "y": 0}).status_code == 409

    assert fresh.post(f"{API}/stop").json()["stopping"] is True
    state = _wait_for(fresh, lambda s: s["job"]["state"] != "running")
    assert state["job"]["state"] == "stopped" and not state["map"]["loaded"]
    assert fresh.post(f"{API}/stop").json()["stopping"] is False


@pytest.fixture()
def live_server(tiny_st_model_dir: Path, tiny_backbone: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`gapfill serve` in a subprocess on tiny models; yields its URL and model store."""
    port, store = free_port(), tmp_path / "models"
    env = os.environ | {"GAPFILL_EMBEDDER": str(tiny_st_model_dir), "GAPFILL_BACKBONE": str(tiny_backbone),
                        "GAPFILL_MODELS": str(store), "GAPFILL_BUILTIN_N": str(N_DOCS),
                        "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "gapfill.cli", "serve", "--port", str(port)],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_up(f"{url}{API}/status", server, 60, tmp_path / "server.log")
        except ServerDidNotStart as err:
            pytest.fail(str(err))
        yield url, store
    finally:
        stop(server, timeout_s=10)
        log.close()


def test_the_pipeline_script_trains_and_saves_both_models_on_a_live_server(live_server) -> None:
    url, store = live_server
    env = os.environ | {"GAPFILL_URL": url, "MAP_CONFIG": json.dumps(MAP), "V2T_CONFIG": json.dumps(V2T)}
    run = subprocess.run(["bash", str(REPO / "scripts" / "train_pipeline.sh")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert ModelStore(store).current("pumap") == "v0001" and ModelStore(store).current("vec2text") == "v0001"
    assert '"version":"v0001"' in run.stdout.replace(" ", "")

    # A client that hangs up during a streamed fill does not keep the next fill waiting.
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"x": 0.0, "y": 0.0, "stream": True, "num_steps": 1, "sequence_beam_width": 2})
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("POST", f"{API}/fill-gap", body, {"content-type": "application/json"})
    streamed = connection.getresponse()
    assert streamed.status == 200 and "step" in json.loads(streamed.readline())
    connection.close()
    after = subprocess.run(["curl", "-sf", "--max-time", "60", "-H", "content-type: application/json",
                            "-d", '{"x": 0, "y": 0, "num_steps": 1}', f"{url}{API}/fill-gap"],
                           capture_output=True, text=True, timeout=90)
    assert after.returncode == 0 and json.loads(after.stdout)["result"]["text"], after.stderr


# ---- fills sent together -------------------------------------------------------------------

def _gated_fill(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make `engine.fill` set `entered` when it starts, then wait for `gate`: a fill that runs
    for as long as the test needs."""
    entered, gate, real = threading.Event(), threading.Event(), engine.fill

    def fill(*args, **kwargs):
        entered.set()
        assert gate.wait(60), "the test never opened the gate"
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(engine, "fill", fill)
    return entered, gate


def _gap_body(client: TestClient) -> dict:
    gap = client.get(f"{API}/gaps", params={"k": 1}).json()[0]
    return {"x": gap["x"], "y": gap["y"], "num_steps": 1, "sequence_beam_width": 2}


def test_fills_sent_together_wait_their_turn_and_are_all_served(client: TestClient, monkeypatch) -> None:
    client = _trained(client)
    engine, body = client.app.state.engine, _gap_body(client)
    fills_before = len(engine.fills)
    entered, gate = _gated_fill(engine, monkeypatch)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(client.post, f"{API}/fill-gap", json=body)
        assert entered.wait(30)
        queued = [pool.submit(client.post, f"{API}/fill-gap", json=body) for _ in range(2)]
        deadline, busy = time.monotonic() + 30, None
        while time.monotonic() < deadline:  # a training is refused, naming the queue, once both wait
            busy = client.post(f"{API}/train-parametric-umap", json=MAP)
            if "2 more waiting" in busy.json()["detail"]:
                break
            time.sleep(0.05)
        assert busy.status_code == 409 and busy.json()["detail"].startswith("a fill-gap request is running (2 more")
        status = client.get(f"{API}/status")  # reads are answered meanwhile, and name the queue
        assert status.status_code == 200 and status.json()["requests"] == {"running": "fill-gap", "waiting": 2}
        gate.set()
        answers = [f.result(timeout=120) for f in (first, *queued)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(-1 <= a.json()["result"]["cosine"] <= 1 for a in answers)
    assert len(engine.fills) == fills_before + 3


def test_a_streamed_fill_sends_each_step_as_a_line_then_the_result(client: TestClient) -> None:
    client = _trained(client)
    body = _gap_body(client) | {"num_steps": 2, "stream": True}
    with client.stream("POST", f"{API}/fill-gap", json=body) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in answer.iter_lines() if line]
    *steps, last = lines
    assert [list(line) for line in steps] == [["step"]] * len(steps) and list(last) == ["result"]
    assert [line["step"]["step"] for line in steps] == list(range(len(steps))) == list(range(last["result"]["steps"]))
    assert last["result"]["text"] == steps[-1]["step"]["best"]["text"] or not steps[-1]["step"]["improved"]
    plain_fill = client.post(f"{API}/fill-gap", json=body | {"stream": False}).json()
    assert set(plain_fill["result"]) == set(last["result"]) and set(plain_fill["steps"][0]) == set(steps[0]["step"])
    # A refusal comes before the stream starts: a plain JSON 4xx, and the turn is given back.
    far = client.post(f"{API}/fill-gap", json=body | {"x": 1e5})
    assert far.status_code == 422 and far.headers["content-type"] == "application/json"
    assert "is far outside the map" in far.json()["detail"]
    assert client.post(f"{API}/fill-gap", json=body | {"stream": False}).status_code == 200


def test_a_fill_beyond_the_queue_is_refused_with_429(client: TestClient, monkeypatch) -> None:
    client = _trained(client)
    engine, body = client.app.state.engine, _gap_body(client)
    monkeypatch.setattr(client.app.state.worker, "max_waiting", 1)
    entered, gate = _gated_fill(engine, monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(client.post, f"{API}/fill-gap", json=body)
        assert entered.wait(30)
        waiting = pool.submit(client.post, f"{API}/fill-gap", json=body)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the second fill waits: a training's refusal says so
            if "1 more waiting" in client.post(f"{API}/train-vec2text", json=V2T).json()["detail"]:
                break
            time.sleep(0.05)
        refused = client.post(f"{API}/fill-gap", json=body)
        gate.set()
        assert running.result(timeout=120).status_code == 200 and waiting.result(timeout=120).status_code == 200
    assert refused.status_code == 429 and "the queue is full" in refused.json()["detail"]


# ---- a token beyond loopback ---------------------------------------------------------------

TOKEN = "s3cret-token-for-the-tests"


@pytest.fixture()
def guarded(tiny_st_model_dir: Path, tiny_backbone: Path, tmp_path: Path) -> TestClient:
    """A server as `gapfill serve --host 0.0.0.0` makes it: every change needs the token."""
    engine = Engine(embedder_model=str(tiny_st_model_dir), store=ModelStore(tmp_path / "models"),
                    backbone_path=tiny_backbone)
    return TestClient(create_app(engine, token=TOKEN))


def test_beyond_loopback_every_change_needs_the_token_and_reads_stay_open(guarded: TestClient) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    posts = sorted(path for path, ops in guarded.app.openapi()["paths"].items() if "post" in ops)
    assert len(posts) == 9
    for path in posts:
        answer = guarded.post(path, json={})
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"] == "Bearer" and "no token" in answer.json()["detail"]
    wrong = guarded.post(f"{API}/initialize", params={"n": 20}, headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401 and "a wrong token" in wrong.json()["detail"]
    huge = guarded.post(f"{API}/initialize", files={"file": ("c.csv", b"text\n" + b"x" * (51 * 2**20))})
    assert huge.status_code == 401, "refused before the body is read"
    assert guarded.get(f"{API}/evaluate-quality").status_code == 401  # it writes new fills
    assert guarded.get(f"{API}/status").json()["corpus"] is None, "nothing changed"

    assert guarded.post(f"{API}/initialize", params={"n": 20}, headers=bearer).json()["corpus"]["size"] == 20
    assert guarded.get(f"{API}/status").json()["corpus"]["size"] == 20
    assert guarded.get(f"{API}/gaps").status_code == 409  # open, and says a map is missing
    assert guarded.get(f"{API}/models").status_code == 200 and guarded.get(f"{API}/fills.csv").status_code == 200
    assert guarded.get(f"{API}/evaluate-quality", headers=bearer).status_code == 409
    assert guarded.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_token(host: str, fresh: TestClient) -> None:
    assert is_loopback(host) and serving_token(host, {}) is None
    assert fresh.post(f"{API}/stop").status_code == 200  # create_app without a token: no header needed


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "gapfill.example.org"])
def test_other_hosts_need_a_long_enough_token_from_the_environment(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ValueError, match="set GAPFILL_API_TOKEN to a secret of at least 16 characters"):
        serving_token(host, {})
    with pytest.raises(ValueError, match="GAPFILL_API_TOKEN is 5 characters; use at least 16"):
        serving_token(host, {"GAPFILL_API_TOKEN": "short"})
    assert serving_token(host, {"GAPFILL_API_TOKEN": f"  {TOKEN}\n"}) == TOKEN


def test_serve_beyond_loopback_without_a_token_refuses_to_start(monkeypatch, capsys) -> None:
    from gapfill.cli import main

    monkeypatch.delenv("GAPFILL_API_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "9"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gapfill: error: --host 0.0.0.0 is reachable from other machines")
    assert "GAPFILL_API_TOKEN" in error and "serving the API" not in error


def test_the_uvicorn_factory_requires_the_token_when_the_variable_is_set(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GAPFILL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("GAPFILL_API_TOKEN", TOKEN)
    guarded = TestClient(app_factory())
    assert guarded.post(f"{API}/stop").status_code == 401
    assert guarded.post(f"{API}/stop", headers={"Authorization": f"Bearer {TOKEN}"}).json()["stopping"] is False
    monkeypatch.delenv("GAPFILL_API_TOKEN")
    assert TestClient(app_factory()).post(f"{API}/stop").status_code == 200


# ---- load on a live server -----------------------------------------------------------------

def test_the_load_benchmark_on_tiny_models_sees_no_errors(tiny_st_model_dir: Path, tiny_backbone: Path) -> None:
    run = subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--tiny", "--embedder",
                          str(tiny_st_model_dir), "--backbone", str(tiny_backbone), "--clients", "3", "--fills", "3",
                          "--status-interval", "0.1", "--time-limit", "120"],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["errors"] == 0 and figures["refused_409"] == 0 and figures["refused_429"] == 0
    assert figures["fill_s"]["n_ok"] == 3 and figures["fill_s"]["p95"] >= figures["fill_s"]["p50"] > 0
    assert figures["status_ms"]["n_ok"] >= 1 and figures["status_ms"]["codes"] == {"200": figures["status_ms"]["n_ok"]}
    assert 0 < figures["rss_mib"]["before"] <= figures["rss_mib"]["peak"]


# ---- a property-based run over the OpenAPI schema ------------------------------------------

# Reads and fills first, corpus loads last: a random corpus leaves no map to fill.
ORDER = ("GET", "POST /fill-gap", "POST /stop", "POST /train", "POST /save", "POST /load", "POST /initialize")
EXAMPLES = 10  # per operation and mode
# The slow ones get fewer valid examples: an evaluation (~7 s on two busy cores even with no
# new fill, which is all it is asked for: the invalid run tries `n` out of range) and the gap
# search (~1 s: scipy's find_simplex on float32 map positions).
VALID_EXAMPLES = {"GET /evaluate-quality": 1, "GET /gaps": 4}
FIXED_QUERY = {"GET /evaluate-quality": {"n": 0}}


def test_a_property_based_run_over_the_openapi_schema_finds_no_server_error(client: TestClient, monkeypatch) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    engine = _trained(client).app.state.engine
    trainings = Counter()

    def instant(kind: str, model):
        """A training that ends at once, keeping the model: any valid config may legally ask for
        hours of it (n_epochs and the layer widths have no upper bound). The configs are still
        parsed and validated by the handlers; training itself is the pipeline test's."""
        def train(config=None, **kwargs):
            trainings[kind] += 1
            return model
            yield  # a generator of no events

        return train

    monkeypatch.setattr(engine, "train_map", instant("map", engine.map))
    monkeypatch.setattr(engine, "train_vec2text", instant("vec2text", engine.vec2text))
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(engine))
    operations = [result.ok() for result in schema.get_all_operations()]
    label = lambda op: f"{op.method.upper()} {op.path.removeprefix(API)}"  # noqa: E731
    operations.sort(key=lambda op: next(i for i, p in enumerate(ORDER) if label(op).startswith(p)))
    cases, statuses, server_errors, no_negative, seconds = Counter(), Counter(), [], [], Counter()
    for op in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            valid = mode == schemathesis.GenerationMode.POSITIVE
            examples = VALID_EXAMPLES.get(label(op), EXAMPLES) if valid else EXAMPLES

            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode, query=FIXED_QUERY.get(label(op)) if valid else None))
            def send(case) -> None:
                response = case.call(timeout=120)
                cases[mode.value] += 1
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    server_errors.append(f"{label(op)} {mode.value}: {response.status_code} {response.text[:300]}")

            started = time.perf_counter()
            try:
                send()
            except Unsatisfiable:  # nothing to make invalid: the operation takes no input
                no_negative.append(label(op))
            seconds[label(op)] += time.perf_counter() - started
    print(f"\nschemathesis {schemathesis.__version__}: {len(operations)} operations, {sum(cases.values())} cases "
          f"({dict(cases)}), {len(server_errors)} server errors; statuses {dict(sorted(statuses.items()))}; "
          f"trainings started {dict(trainings)}; no invalid input possible for {no_negative}; "
          f"seconds {({k: round(v, 1) for k, v in seconds.items()})}")
    assert len(operations) == 14 and sum(cases.values()) >= len(operations) * 2
    assert not server_errors, server_errors
