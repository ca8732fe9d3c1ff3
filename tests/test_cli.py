"""The command line end to end on tiny models: train a map and Vec2Text, list gaps, fill them,
evaluate; every verb prints JSON and keeps its models in the store the environment names."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gapfill.backbone import backbone_dir, build_tiny_backbone
from gapfill.cli import main
from gapfill.storage import ModelStore

pytestmark = pytest.mark.skipif(
    not (backbone_dir() / "READY.json").exists(), reason="backbone not prepared: run `make setup`"
)

CORPUS = ["--builtin-n", "60"]
MAP = ["--n-epochs", "20", "--encoder-epochs", "3", "--decoder-epochs", "5"]
V2T = ["--epochs", "1", "--batch-size", "4", "--warmup-steps", "1", "--num-prefix", "2", "--lora-rank", "2",
       "--corrector-documents", "4", "--max-documents", "12", "--max-length", "24"]


@pytest.fixture()
def env(tiny_st_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path_factory.mktemp("cli")
    monkeypatch.setenv("GAPFILL_EMBEDDER", str(tiny_st_model_dir))
    monkeypatch.setenv("GAPFILL_BACKBONE", str(build_tiny_backbone(root / "lm")))
    monkeypatch.setenv("GAPFILL_MODELS", str(root / "models"))
    monkeypatch.setenv("GAPFILL_CACHE", str(root / "cache"))
    return root


def run(capsys: pytest.CaptureFixture, *argv: str):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_train_then_fill_gaps_and_evaluate_from_the_command_line(env: Path, capsys: pytest.CaptureFixture) -> None:
    trained = run(capsys, "train-map", *CORPUS, *MAP)
    assert trained["version"] == "v0001" and 0 < trained["metrics"]["trust"] <= 1
    assert run(capsys, "train-vec2text", *CORPUS, *V2T)["version"] == "v0001"
    store = ModelStore(env / "models")
    assert store.current("pumap") == "v0001" and store.current("vec2text") == "v0001"

    gaps = run(capsys, "gaps", *CORPUS, "-k", "3")
    assert [g["rank"] for g in gaps] == [1, 2, 3] and gaps[0]["radius"] >= gaps[2]["radius"] > 0

    fills = run(capsys, "fill", *CORPUS, "--gaps", "2", "--num-steps", "1", "--sequence-beam-width", "2",
                "--save-csv", str(env / "fills.csv"))
    assert len(fills) == 2 and all(f["text"] and f["distance"] >= 0 for f in fills)
    assert fills[0]["x"] == pytest.approx(gaps[0]["x"])
    assert len(pd.read_csv(env / "fills.csv")) == 2

    point = run(capsys, "fill", *CORPUS, str(gaps[1]["x"]), str(gaps[1]["y"]), "--num-steps", "0", "--cosine-only")
    assert len(point) == 1 and point[0]["steps"] == 1

    report = run(capsys, "evaluate", *CORPUS, "--fills", "1")
    assert 0 <= report["map"]["reconstruction_error"] and report["fills"]["n"] == 1


def test_fill_without_a_point_or_gaps_says_what_to_give(env: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["fill", *CORPUS]) == 2
    assert "give a point (X Y) or --gaps K" in capsys.readouterr().err


def test_fill_before_any_map_says_to_train_one(env: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["gaps", *CORPUS]) == 2
    assert "run `gapfill train-map` first" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fill", "1", "1", "--seed-documents", "-1"], "argument --seed-documents: must be 0 or more, got -1"),
        (["fill", "1", "1", "--num-steps", "two"], "argument --num-steps: must be a whole number, got 'two'"),
        (["fill", "1", "1", "--sequence-beam-width", "9"], "argument --sequence-beam-width: must be 8 or less, got 9"),
        (["fill", "nan", "1"], "argument x: must be a finite number, got 'nan'"),
        (["fill", "--gaps", "0"], "argument --gaps: must be 1 or more, got 0"),
        (["gaps", "-k", "0"], "argument -k: must be 1 or more, got 0"),
    ],
)
def test_bad_numbers_fail_before_anything_loads(argv: list[str], message: str, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_engine(*_: object) -> None:
        raise AssertionError("the engine was loaded for a command line argparse must refuse")

    monkeypatch.setattr("gapfill.cli._engine_with_corpus", no_engine)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_bad_training_setting_fails_before_the_corpus_loads(capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def no_engine(*_: object) -> None:
        raise AssertionError("the corpus was loaded for a setting the config refuses")

    monkeypatch.setattr("gapfill.cli._engine_with_corpus", no_engine)
    assert main(["train-vec2text", "--epochs", "0"]) == 2
    assert "epochs" in capsys.readouterr().err
