"""The REST API: the engine's verbs under /api/advanced-gap-filling/, for scripts and pipelines.

Handlers only turn a request into one engine call and its result into JSON (house style, rule 1).
What runs when (`gapfill.worker`): a training runs as a background job, one at a time; a call
blocks until it ends, or with `"background": true` answers 202 at once and `GET status`
follows it. While it runs, fills, evaluations, corpus and model loads are refused with 409.
Otherwise those run in the request thread one after another (a streamed fill in a thread of
its own, in its turn): a fill sent while another fill runs waits for it and is served (up to 8
waiting; one more gets 429). Status, gaps, models and the fills export answer at any time.
Every answer, errors included, is JSON (the fills export excepted, and a streamed fill's NDJSON
lines); no input gives a 500.

Limits (`gapfill.api_guards`): JSON bodies 64 KiB, uploads the CSV loader's 50 MiB (413);
NaN, infinite and far-out coordinates are refused (422). Serve it with `gapfill serve`: on
127.0.0.1 by default; bound elsewhere, every request that changes the server needs
`Authorization: Bearer $GAPFILL_API_TOKEN` (401 without).
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import threading
from collections.abc import AsyncIterator, Callable, Generator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from gapfill.api_guards import BearerToken, ContentLengthLimit, is_loopback, serving_token, token_from_env
from gapfill.api_models import FillRequest, MapBody, VersionRequest, Vec2TextBody, config_from, plain
from gapfill.corpus import CorpusError, CorpusTooLarge, map_problem
from gapfill.csv_loader import load_csv
from gapfill.engine import MAP_KIND, VEC2TEXT_KIND, Engine, NotReadyError
from gapfill.events import Progress, drive
from gapfill.jobs import stoppable
from gapfill.map_config import ParametricUMAPConfig
from gapfill.model_files import ModelFileError, ModelMismatchError
from gapfill.storage import ModelStore
from gapfill.vec2text_config import Vec2TextConfig
from gapfill.worker import Busy, QueueFull, Stream, Worker

__all__ = ["PREFIX", "app_factory", "create_app", "is_loopback", "serving_token"]

PREFIX = "/api/advanced-gap-filling"
# The CSV loader's own limit, plus room for the multipart envelope around the file.
UPLOAD_LIMIT_BYTES: int = inspect.signature(load_csv).parameters["max_bytes"].default + 2**16
JSON_LIMIT_BYTES = 64 * 2**10  # a config or a click is a few hundred bytes
SUMMARY_HISTORY = 20  # events returned with a finished training job


# ---- helpers -------------------------------------------------------------------------------

def builtin_size() -> int | None:
    """Size of the built-in corpus when a call names none: env GAPFILL_BUILTIN_N, else all."""
    value = os.environ.get("GAPFILL_BUILTIN_N")
    return int(value) if value else None


def _require_corpus(engine: Engine, *, mappable: bool = False) -> None:
    """Checked before a job starts, so that the call itself answers (409, or 422 for a corpus
    too small for a map)."""
    if engine.corpus is None:
        raise NotReadyError("no corpus loaded: load the built-in corpus or a CSV first (initialize)")
    if mappable and (problem := map_problem(engine.corpus)) is not None:
        raise ValueError(f"{problem} Then initialize again.")


def _require_saved(store: ModelStore, kind: str, version: str | None) -> None:
    """404 unless the store holds `version` (or, with none named, any version) of `kind`."""
    complete = [v.version for v in store.versions(kind) if v.complete]
    if version is None and not complete:
        raise HTTPException(404, f"no saved {kind} model under {store.root}: train one and save it first")
    if version is not None and store.path(kind, version).name not in complete:
        raise HTTPException(404, f"no complete {kind} version {version!r}; available: {', '.join(complete) or 'none'}")


def _load_vec2text(engine: Engine, version: str | None = None, store: ModelStore | None = None) -> object:
    """`engine.load_vec2text`, with a model made for another backbone answered like any model
    that does not fit (409). Its manifest does not record the backbone's size, so torch finds
    out only while copying the weights, and says so with a RuntimeError."""
    try:
        return engine.load_vec2text(version, store=store)
    except (NotReadyError, ModelFileError):
        raise
    except RuntimeError as err:
        raise ModelMismatchError(f"the Vec2Text model does not fit the backbone in use "
                                 f"({engine.backbone_path or 'SmolLM2'}): {str(err).splitlines()[0]} "
                                 "Train one for this backbone (train-vec2text).") from err


def _run_job(worker: Worker, response: Response, name: str,
             start: Callable[[threading.Event], Generator[Progress, None, object]], background: bool) -> dict:
    job = worker.start(name, start)
    if background:
        response.status_code = 202
        return {"job": job.snapshot().to_dict()}
    snapshot = worker.wait(job)
    return plain({"job": snapshot.to_dict(history=SUMMARY_HISTORY), "metrics": getattr(job.result, "metrics", None)})


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _worker(request: Request) -> Worker:
    return request.app.state.worker


EngineDep = Annotated[Engine, Depends(_engine)]
WorkerDep = Annotated[Worker, Depends(_worker)]
router = APIRouter(prefix=PREFIX, max_body_size=JSON_LIMIT_BYTES)


# ---- corpus and status ---------------------------------------------------------------------

@router.post("/initialize", max_body_size=UPLOAD_LIMIT_BYTES)
def initialize(engine: EngineDep, worker: WorkerDep,
               n: Annotated[int | None, Query(ge=1, description="Documents of the built-in corpus.")] = None,
               file: Annotated[UploadFile | None, File(description="A CSV corpus.")] = None,
               text_column: Annotated[str | None, Form(description="The CSV's text column.")] = None) -> dict:
    """Load the built-in corpus (no file) or a CSV, then the saved map made for it and a
    Vec2Text model when there are. A bad file changes nothing."""
    with worker.exclusive("initialize"):
        if file is None:
            corpus = drive(engine.load_builtin(n=n or builtin_size()))
        else:
            corpus = drive(engine.load_csv(file.file.read(), text_column=text_column or None))
        map_version, vec2text_problem = engine.load_map_for_corpus(), None
        if engine.vec2text is None:
            try:
                _load_vec2text(engine)
            except (NotReadyError, ModelFileError) as err:  # none saved or shipped, or made for another setup
                vec2text_problem = str(err)
    return {"corpus": {"name": corpus.name, "size": len(corpus)},
            "report": corpus.report.summary() if corpus.report else None,
            "map_loaded": map_version, "vec2text_loaded": engine.vec2text is not None,
            "vec2text_problem": vec2text_problem}


@router.get("/status")
def status(engine: EngineDep, worker: WorkerDep) -> dict:
    corpus, pumap, vec2text, job = engine.corpus, engine.map, engine.vec2text, worker.job
    return plain({
        "corpus": None if corpus is None else {"name": corpus.name, "size": len(corpus)},
        "map": {"loaded": pumap is not None, "metrics": None if pumap is None else pumap.metrics},
        "vec2text": {"loaded": vec2text is not None,
                     "config": None if vec2text is None else vec2text.config.to_dict(),
                     "metrics": None if vec2text is None else vec2text.metrics},
        "job": None if job is None else job.snapshot().to_dict(history=50),
        "requests": worker.tasks(),  # fills, evaluations and loads: the one served, how many wait
    })


@router.post("/stop")
def stop(worker: WorkerDep) -> dict:
    """Ask the running job to stop between two steps; it keeps what it has done."""
    job = worker.stop()
    return {"stopping": job is not None, "job": None if job is None else plain(job.snapshot().to_dict())}


# ---- training ------------------------------------------------------------------------------

@router.post("/train-parametric-umap")
def train_parametric_umap(engine: EngineDep, worker: WorkerDep, response: Response,
                          body: MapBody | None = None) -> dict:  # type: ignore[valid-type]
    config = config_from(ParametricUMAPConfig, body)
    _require_corpus(engine, mappable=True)
    return _run_job(worker, response, "train-parametric-umap",
                    lambda stop: stoppable(engine.train_map(config), stop), body is not None and body.background)


@router.post("/train-vec2text")
def train_vec2text(engine: EngineDep, worker: WorkerDep, response: Response,
                   body: Vec2TextBody | None = None) -> dict:  # type: ignore[valid-type]
    config = config_from(Vec2TextConfig, body)
    _require_corpus(engine)
    return _run_job(worker, response, "train-vec2text",
                    lambda stop: engine.train_vec2text(config, stop=stop), body is not None and body.background)


@router.get("/evaluate-quality")
def evaluate_quality(engine: EngineDep, worker: WorkerDep,
                     n: Annotated[int, Query(ge=0, le=20, description="New fills of the largest gaps.")] = 3) -> dict:
    """The map's quality and, with a Vec2Text model, that of `n` new fills of the largest gaps
    together with this server's earlier fills."""
    with worker.exclusive("evaluate-quality"):
        return plain(engine.evaluate(n_fills=n))


# ---- saved models --------------------------------------------------------------------------

@router.post("/save-parametric-umap")
def save_parametric_umap(engine: EngineDep) -> dict:
    with engine.lock:  # the map and the corpus fingerprint saved with it belong together
        version = engine.save_map()
    return {"kind": MAP_KIND, "version": version, "path": str(engine.store.path(MAP_KIND, version))}


@router.post("/save-vec2text")
def save_vec2text(engine: EngineDep) -> dict:
    with engine.lock:
        version = engine.save_vec2text()
    return {"kind": VEC2TEXT_KIND, "version": version, "path": str(engine.store.path(VEC2TEXT_KIND, version))}


@router.post("/load-parametric-umap")
def load_parametric_umap(engine: EngineDep, worker: WorkerDep, body: VersionRequest | None = None) -> dict:
    """Load a saved map (default: the current one); a named version becomes current (roll back)."""
    version = body.version if body else None
    with worker.exclusive("load-parametric-umap"):
        _require_saved(engine.store, MAP_KIND, version)
        model = engine.load_map(version)
        if version is not None:
            engine.store.set_current(MAP_KIND, version)
    return plain({"kind": MAP_KIND, "version": engine.store.current(MAP_KIND), "metrics": model.metrics})


@router.post("/load-vec2text")
def load_vec2text(engine: EngineDep, worker: WorkerDep, body: VersionRequest | None = None) -> dict:
    """Load a saved Vec2Text model (default: the current one, else the shipped one); a named
    version becomes current (roll back)."""
    version = body.version if body else None
    with worker.exclusive("load-vec2text"):
        if version is not None:
            _require_saved(engine.store, VEC2TEXT_KIND, version)
        model = _load_vec2text(engine, version, store=engine.store if version else None)
        if version is not None:
            engine.store.set_current(VEC2TEXT_KIND, version)
    current = engine.store.current(VEC2TEXT_KIND)
    return plain({"kind": VEC2TEXT_KIND, "version": current or "shipped", "metrics": model.metrics})


@router.get("/models")
def models(engine: EngineDep) -> dict:
    return plain({kind: engine.store.versions(kind) for kind in (MAP_KIND, VEC2TEXT_KIND)})


# ---- gaps and fills ------------------------------------------------------------------------

@router.get("/gaps")
def gaps(engine: EngineDep, k: Annotated[int, Query(ge=1, le=100, description="How many gaps.")] = 10) -> list[dict]:
    return plain([{"x": g.x, "y": g.y, "radius": g.radius, "rank": g.rank} for g in engine.gaps(k)])


@router.post("/fill-gap", responses={200: {"content": {"application/x-ndjson": {}},
                                          "description": "The result and every step; NDJSON lines with `stream`."}})
def fill_gap(body: FillRequest, engine: EngineDep, worker: WorkerDep) -> Any:
    """Write a text for the point (x, y): the result and every correction step. With
    `"stream": true`, one NDJSON line per step as it is done (`{"step": ...}`), then
    `{"result": ...}`."""
    fill = functools.partial(engine.fill, body.x, body.y, num_steps=body.num_steps,
                             sequence_beam_width=body.sequence_beam_width, target_aware=body.target_aware,
                             seed_documents=body.seed_documents)
    if body.stream:
        stream = worker.stream("fill-gap", fill)
        first = stream.next()  # step 0; a refusal is raised here, a 4xx before the answer starts
        return StreamingResponse(_ndjson(first, stream), media_type="application/x-ndjson")
    steps: list = []
    with worker.exclusive("fill-gap"):
        result = drive(fill(), steps.append)
    return plain({"result": result, "steps": steps})


async def _ndjson(first: tuple[str, object], stream: Stream) -> AsyncIterator[str]:
    """One JSON line per item of a streamed task: {"step": ...}, then {"result": ...} (or
    {"error": ...})."""
    item: tuple[str, object] | None = first
    try:
        while item is not None:
            yield json.dumps(plain({item[0]: item[1]})) + "\n"
            item = await run_in_threadpool(stream.next)
    finally:
        stream.abandon()


@router.get("/fills.csv", response_class=Response)
def fills_csv(engine: EngineDep) -> Response:
    return Response(engine.fills_frame().to_csv(index=False), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="gapfill-fills.csv"'})


# ---- the app -------------------------------------------------------------------------------

def _error(status: int) -> Callable[[Request, Exception], JSONResponse]:
    def handler(request: Request, err: Exception) -> JSONResponse:
        body: dict[str, Any] = {"detail": str(err)}
        if isinstance(err, CorpusError) and err.columns:
            body["columns"] = err.columns  # the choices for `text_column`
        return JSONResponse(body, status_code=status)

    return handler


def _invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
    # The offending input is echoed back; a NaN in it must not break the JSON of the answer.
    return JSONResponse({"detail": plain(jsonable_encoder(err.errors()))}, status_code=422)


def _internal(request: Request, err: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"internal error: {type(err).__name__}: {err}"}, status_code=500)


def create_app(engine: Engine | None = None, *, token: str | None = None) -> FastAPI:
    """The API over `engine` (default: a new engine configured from the environment); with a
    `token`, every request that changes the server must send `Authorization: Bearer <token>`."""
    app = FastAPI(title="GapFill", summary="Write the documents a corpus is missing.")
    app.state.engine = engine or Engine()
    app.state.worker = Worker()
    app.include_router(router)
    for exc_type, status in ((NotReadyError, 409), (Busy, 409), (ModelFileError, 409), (QueueFull, 429),
                             (CorpusError, 422), (CorpusTooLarge, 413), (ValueError, 422)):
        app.add_exception_handler(exc_type, _error(status))
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _internal)
    app.add_middleware(ContentLengthLimit, limits={f"{PREFIX}/initialize": UPLOAD_LIMIT_BYTES},
                       default=JSON_LIMIT_BYTES)
    if token is not None:  # added last, so it runs first: no body is read for a refused request
        app.add_middleware(BearerToken, token=token, protected_reads=frozenset({f"{PREFIX}/evaluate-quality"}))
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory gapfill.api:app_factory`: requires the token of $GAPFILL_API_TOKEN
    when it is set (uvicorn does not tell the app its address; `gapfill serve` does better)."""
    return create_app(token=token_from_env())
