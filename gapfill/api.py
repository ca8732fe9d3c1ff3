"""The REST API: the engine's verbs under /api/advanced-gap-filling/, for scripts and pipelines.

Handlers only turn a request into one engine call and its result into JSON (house style, rule 1).
Training runs as a `gapfill.jobs.Job`, one at a time: a call blocks until the job ends, or with
`"background": true` answers 202 at once and `GET status` follows the job. Fills, evaluations
and corpus loads run in the request thread and are refused while a job runs. Every answer,
errors included, is JSON (the fills export excepted). Serve it with `gapfill serve`.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import threading
import typing
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from gapfill.corpus import CorpusError, load_csv
from gapfill.engine import MAP_KIND, VEC2TEXT_KIND, Engine, NotReadyError
from gapfill.events import Progress, drive
from gapfill.jobs import Job, JobSnapshot, stoppable
from gapfill.pumap import ParametricUMAPConfig
from gapfill.storage import ModelFileError, ModelStore
from gapfill.vec2text import Vec2TextConfig

T = TypeVar("T")

PREFIX = "/api/advanced-gap-filling"
# The CSV loader's own limit, plus room for the multipart envelope around the file.
UPLOAD_LIMIT_BYTES: int = inspect.signature(load_csv).parameters["max_bytes"].default + 2**16
JSON_LIMIT_BYTES = 64 * 2**10  # a config or a click is a few hundred bytes
SUMMARY_HISTORY = 20  # events returned with a finished training job


# ---- one long task at a time ---------------------------------------------------------------

class Busy(RuntimeError):
    """Another long task is running; the message names it and what to do."""


class Worker:
    """The app's one long task: a training `Job` in its own thread, or a fill, evaluation or
    corpus load in a request thread. Starting one while another runs raises `Busy`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.job: Job | None = None  # the running or the last training job
        self._job_error: list[Exception] = []
        self._inline: str | None = None

    def _refuse_if_busy(self) -> None:  # the lock is held
        if self.job is not None and self.job.running:
            raise Busy(f"a {self.job.name} job is running; wait for it or POST stop")
        if self._inline is not None:
            raise Busy(f"a {self._inline} request is running; wait for it")

    def start(self, name: str, start: Callable[[threading.Event], Generator[Progress, None, T]]) -> Job:
        caught: list[Exception] = []

        def run(stop: threading.Event) -> Generator[Progress, None, T]:
            try:
                return (yield from start(stop))
            except Exception as err:  # kept so `wait` can answer it like an error of any call
                caught.append(err)
                raise

        with self._lock:
            self._refuse_if_busy()
            self.job, self._job_error = Job(name, run), caught
            return self.job

    def wait(self, job: Job) -> JobSnapshot:
        """Block until `job` ends; re-raise its error, so that a bad setting found during
        training gets the same answer as one found before."""
        errors = self._job_error if job is self.job else []
        snapshot = job.wait()
        if snapshot.state == "failed" and errors:
            raise errors[0]
        return snapshot

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        with self._lock:
            self._refuse_if_busy()
            self._inline = name
        try:
            yield
        finally:
            with self._lock:
                self._inline = None

    def stop(self) -> Job | None:
        """Ask the running job to stop; the job it asked, or None when none runs."""
        with self._lock:
            job = self.job if self.job is not None and self.job.running else None
        if job is not None:
            job.stop()
        return job


# ---- request bodies ------------------------------------------------------------------------

def _config_body(config_cls: type) -> type[BaseModel]:
    """A body with the config's fields (each optional, with its help sentence) and
    `background`; an unknown field is refused with the list of valid ones."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]

    def known_only(data: Any) -> Any:
        unknown = sorted(set(data) - set(names) - {"background"}) if isinstance(data, dict) else []
        if unknown:
            raise ValueError(f"unknown {config_cls.what} {unknown}; valid ones are {sorted(names)} and 'background'")
        return data

    fields = {f.name: (hints[f.name] | None, Field(None, description=f.metadata.get("help")))
              for f in dataclasses.fields(config_cls)}
    return create_model(
        f"{config_cls.__name__}Body",
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
        __validators__={"known_only": model_validator(mode="before")(known_only)},
        background=(bool, Field(False, description="Answer 202 at once; follow the job with GET status.")),
        **fields,
    )


MapBody = _config_body(ParametricUMAPConfig)
Vec2TextBody = _config_body(Vec2TextConfig)


def _config(config_cls: type[T], body: BaseModel | None) -> T:
    return config_cls.from_dict(body.model_dump(exclude_none=True, exclude={"background"}) if body else {})


class FillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    x: float
    y: float
    num_steps: int | None = Field(None, ge=0, le=50, description="Correction steps (default: the model's).")
    sequence_beam_width: int | None = Field(None, ge=1, le=16, description="Hypotheses kept per step.")
    target_aware: bool = Field(True, description="Prefer texts that land near the point.")


class VersionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(None, description="e.g. 'v0002' (default: the current version); becomes current.")


# ---- helpers -------------------------------------------------------------------------------

def _plain(obj: Any) -> Any:
    """JSON-ready: dataclasses, numpy values and paths become plain values, NaN and ±inf null."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return str(obj) if isinstance(obj, Path) else obj


def builtin_size() -> int | None:
    """Size of the built-in corpus when a call names none: env GAPFILL_BUILTIN_N, else all."""
    value = os.environ.get("GAPFILL_BUILTIN_N")
    return int(value) if value else None


def _require_corpus(engine: Engine) -> None:
    if engine.corpus is None:  # checked before a job starts, so that the call itself answers 409
        raise NotReadyError("no corpus loaded: load the built-in corpus or a CSV first (initialize)")


def _require_saved(store: ModelStore, kind: str, version: str | None) -> None:
    """404 unless the store holds `version` (or, with none named, any version) of `kind`."""
    complete = [v.version for v in store.versions(kind) if v.complete]
    if version is None and not complete:
        raise HTTPException(404, f"no saved {kind} model under {store.root}: train one and save it first")
    if version is not None and store.path(kind, version).name not in complete:
        raise HTTPException(404, f"no complete {kind} version {version!r}; available: {', '.join(complete) or 'none'}")


def _run_job(worker: Worker, response: Response, name: str,
             start: Callable[[threading.Event], Generator[Progress, None, object]], background: bool) -> dict:
    job = worker.start(name, start)
    if background:
        response.status_code = 202
        return {"job": job.snapshot().to_dict()}
    snapshot = worker.wait(job)
    return _plain({"job": snapshot.to_dict(history=SUMMARY_HISTORY), "metrics": getattr(job.result, "metrics", None)})


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
        map_version = engine.load_map_for_corpus()
        if engine.vec2text is None:
            try:
                engine.load_vec2text()
            except (NotReadyError, ModelFileError):
                pass  # none saved or shipped, or made for another embedder: train one
    return {"corpus": {"name": corpus.name, "size": len(corpus)},
            "report": corpus.report.summary() if corpus.report else None,
            "map_loaded": map_version, "vec2text_loaded": engine.vec2text is not None}


@router.get("/status")
def status(engine: EngineDep, worker: WorkerDep) -> dict:
    corpus, pumap, vec2text, job = engine.corpus, engine.map, engine.vec2text, worker.job
    return _plain({
        "corpus": None if corpus is None else {"name": corpus.name, "size": len(corpus)},
        "map": {"loaded": pumap is not None, "metrics": None if pumap is None else pumap.metrics},
        "vec2text": {"loaded": vec2text is not None,
                     "config": None if vec2text is None else vec2text.config.to_dict(),
                     "metrics": None if vec2text is None else vec2text.metrics},
        "job": None if job is None else job.snapshot().to_dict(history=50),
    })


@router.post("/stop")
def stop(worker: WorkerDep) -> dict:
    """Ask the running job to stop between two steps; it keeps what it has done."""
    job = worker.stop()
    return {"stopping": job is not None, "job": None if job is None else _plain(job.snapshot().to_dict())}


# ---- training ------------------------------------------------------------------------------

@router.post("/train-parametric-umap")
def train_parametric_umap(engine: EngineDep, worker: WorkerDep, response: Response,
                          body: MapBody | None = None) -> dict:  # type: ignore[valid-type]
    config = _config(ParametricUMAPConfig, body)
    _require_corpus(engine)
    return _run_job(worker, response, "train-parametric-umap",
                    lambda stop: stoppable(engine.train_map(config), stop), body is not None and body.background)


@router.post("/train-vec2text")
def train_vec2text(engine: EngineDep, worker: WorkerDep, response: Response,
                   body: Vec2TextBody | None = None) -> dict:  # type: ignore[valid-type]
    config = _config(Vec2TextConfig, body)
    _require_corpus(engine)
    return _run_job(worker, response, "train-vec2text",
                    lambda stop: engine.train_vec2text(config, stop=stop), body is not None and body.background)


@router.get("/evaluate-quality")
def evaluate_quality(engine: EngineDep, worker: WorkerDep,
                     n: Annotated[int, Query(ge=0, le=20, description="New fills of the largest gaps.")] = 3) -> dict:
    """The map's quality and, with a Vec2Text model, that of `n` new fills of the largest gaps
    together with this server's earlier fills."""
    with worker.exclusive("evaluate-quality"):
        return _plain(engine.evaluate(n_fills=n))


# ---- saved models --------------------------------------------------------------------------

@router.post("/save-parametric-umap")
def save_parametric_umap(engine: EngineDep) -> dict:
    version = engine.save_map()
    return {"kind": MAP_KIND, "version": version, "path": str(engine.store.path(MAP_KIND, version))}


@router.post("/save-vec2text")
def save_vec2text(engine: EngineDep) -> dict:
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
    return _plain({"kind": MAP_KIND, "version": engine.store.current(MAP_KIND), "metrics": model.metrics})


@router.post("/load-vec2text")
def load_vec2text(engine: EngineDep, worker: WorkerDep, body: VersionRequest | None = None) -> dict:
    """Load a saved Vec2Text model (default: the current one, else the shipped one); a named
    version becomes current (roll back)."""
    version = body.version if body else None
    with worker.exclusive("load-vec2text"):
        if version is not None:
            _require_saved(engine.store, VEC2TEXT_KIND, version)
        model = engine.load_vec2text(version, store=engine.store if version else None)
        if version is not None:
            engine.store.set_current(VEC2TEXT_KIND, version)
    current = engine.store.current(VEC2TEXT_KIND)
    return _plain({"kind": VEC2TEXT_KIND, "version": current or "shipped", "metrics": model.metrics})


@router.get("/models")
def models(engine: EngineDep) -> dict:
    return _plain({kind: engine.store.versions(kind) for kind in (MAP_KIND, VEC2TEXT_KIND)})


# ---- gaps and fills ------------------------------------------------------------------------

@router.get("/gaps")
def gaps(engine: EngineDep, k: Annotated[int, Query(ge=1, le=100, description="How many gaps.")] = 10) -> list[dict]:
    return _plain([{"x": g.x, "y": g.y, "radius": g.radius, "rank": g.rank} for g in engine.gaps(k)])


@router.post("/fill-gap")
def fill_gap(body: FillRequest, engine: EngineDep, worker: WorkerDep) -> dict:
    """Write a text for the point (x, y): the result and every correction step."""
    steps: list = []
    with worker.exclusive("fill-gap"):
        result = drive(engine.fill(body.x, body.y, num_steps=body.num_steps,
                                   sequence_beam_width=body.sequence_beam_width,
                                   target_aware=body.target_aware), steps.append)
    return _plain({"result": result, "steps": steps})


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
    return JSONResponse({"detail": _plain(jsonable_encoder(err.errors()))}, status_code=422)


def _internal(request: Request, err: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"internal error: {type(err).__name__}: {err}"}, status_code=500)


class ContentLengthLimit:
    """413, as JSON, for a body whose declared length is over the route's limit, before any of
    it is read. (FastAPI's `max_body_size` also counts undeclared, chunked bodies, but answers a
    declared one in plain text.)"""

    def __init__(self, app: Any, limits: dict[str, int], default: int) -> None:
        self.app, self.limits, self.default = app, limits, default

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            limit = self.limits.get(scope["path"].rstrip("/"), self.default)
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > limit:
                response = JSONResponse({"detail": f"the request body is over the limit of {limit} bytes"}, 413)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(engine: Engine | None = None) -> FastAPI:
    """The API over `engine` (default: a new engine configured from the environment)."""
    app = FastAPI(title="GapFill", summary="Write the documents a corpus is missing.")
    app.state.engine = engine or Engine()
    app.state.worker = Worker()
    app.include_router(router)
    for exc_type, status in ((NotReadyError, 409), (Busy, 409), (ModelFileError, 409),
                             (CorpusError, 422), (ValueError, 422)):
        app.add_exception_handler(exc_type, _error(status))
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _internal)
    app.add_middleware(ContentLengthLimit, limits={f"{PREFIX}/initialize": UPLOAD_LIMIT_BYTES},
                       default=JSON_LIMIT_BYTES)
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory gapfill.api:app_factory` (what `gapfill serve` runs)."""
    return create_app()
