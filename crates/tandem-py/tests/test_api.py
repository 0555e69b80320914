"""tandem from Python: arrays in and out, errors, and train → evaluate → index → search equal to
the CLI's on the same seed."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

import tandem

ROOT = pathlib.Path(__file__).resolve().parents[3]
DEMO = ROOT / "data" / "emoji"
SMALL = dict(model__hidden=[64], model__dim=32, train__epochs=2, train__batch_size=250)
SMALL_SETS = ["model.hidden=[64]", "model.dim=32", "train.epochs=2", "train.batch_size=250"]


def tandem_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("TANDEM_BIN", ROOT / "target" / "debug" / "tandem"))
    assert path.exists(), f"{path}: build the CLI first (cargo build -p tandem-cli) or set TANDEM_BIN"
    return path


def toy(n=40, d_img=6, d_txt=4, per_image=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, d_img))
    ids = np.repeat(np.arange(n), per_image)
    texts = images[ids, :d_txt] + 0.05 * rng.standard_normal((len(ids), d_txt))
    return images, texts, ids


def test_arrays_of_any_float_dtype_and_order_give_the_same_dataset():
    images, texts, ids = toy()
    reference = tandem.Dataset(images.astype(np.float32), texts.astype(np.float32), ids)
    for convert in (
        lambda a: a,  # float64
        lambda a: a.astype(np.float32),
        lambda a: np.asfortranarray(a.astype(np.float32)),
        lambda a: a.astype(np.float32)[:, ::1].copy(order="F"),
        lambda a: a.tolist(),
    ):
        d = tandem.Dataset(convert(images), convert(texts), ids.astype(np.int32))
        assert d.n_images == 40 and d.n_texts == 80 and d.image_dim == 6 and d.text_dim == 4
        np.testing.assert_array_equal(d.images, reference.images)
        np.testing.assert_array_equal(d.texts, reference.texts)
        np.testing.assert_array_equal(d.text_to_image, ids)
    half = tandem.Dataset(images.astype(np.float16), texts.astype(np.float16), ids)
    np.testing.assert_array_equal(half.images, images.astype(np.float16).astype(np.float32))
    assert repr(reference) == "Dataset(40 images × 6, 80 captions × 4)"


def test_bad_arrays_are_value_errors_that_say_where():
    images, texts, ids = toy()
    bad = images.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="images: non-finite value NaN at row 3, column 2"):
        tandem.Dataset(bad, texts, ids)
    with pytest.raises(ValueError, match="only 40 images|out of range|40"):
        tandem.Dataset(images, texts, ids + 1)
    with pytest.raises(ValueError, match="empty"):
        tandem.Dataset(np.zeros((0, 6)), texts, ids)
    with pytest.raises(ValueError, match="unknown key"):
        tandem.Dataset(images, texts, ids, splits={"tran": [0]})
    with pytest.raises(ValueError, match="captions for 80 text rows"):
        tandem.Dataset(images, texts, ids, captions=["a"])
    with pytest.raises(FileNotFoundError):
        tandem.load("/nonexistent/run")
    with pytest.raises(ValueError, match="not a folder"):
        tandem.Dataset.load("/nonexistent/data")


def test_features_streamed_from_disk_read_as_in_memory():
    streamed = tandem.Dataset.load(DEMO, features="stream")
    loaded = tandem.Dataset.load(DEMO, features="memory")
    assert np.array_equal(streamed.images, loaded.images)
    assert np.array_equal(streamed.texts, loaded.texts)
    assert np.array_equal(streamed.text_to_image, loaded.text_to_image)
    with pytest.raises(ValueError, match="choose one of auto, memory, stream"):
        tandem.Dataset.load(DEMO, features="disk")


def test_config_dicts_and_overrides_resolve_like_the_cli():
    text = tandem.config({"train": {"lr": 0.001}, "loss.kind": "info_nce"}, model__dim=64)
    assert "lr = 0.001" in text and 'kind = "info_nce"' in text and "dim = 64" in text
    cli = subprocess.run(
        [tandem_bin(), "config", "--set", "train.lr=0.001", "--set", "loss.kind=info_nce", "--set", "model.dim=64"],
        check=True, capture_output=True, text=True,
    ).stdout
    assert text == cli
    with pytest.raises(ValueError, match="unknown key `train.lrr`"):
        tandem.config(train__lrr=1.0)
    with pytest.raises(ValueError, match="must be"):
        tandem.config(model__dropout=1.5)


def test_train_evaluate_index_search_equal_the_cli(tmp_path):
    data = tandem.Dataset.load(DEMO)
    events = []
    outcome = tandem.train(data, tmp_path / "py", callback=events.append, progress=False, **SMALL)
    assert outcome["epochs_run"] == 2 and outcome["best_epoch"] in (1, 2)
    kinds = [e["kind"] for e in events]
    assert kinds.count("epoch") == 2 and kinds.count("step") == outcome["steps"]
    metrics = tandem.evaluate(tandem.load(tmp_path / "py"), data, split="test")

    cli_run = tmp_path / "cli"
    args = [tandem_bin(), "train", "--data", DEMO, "--out", cli_run, "--format", "json"]
    for s in SMALL_SETS:
        args += ["--set", s]
    cli = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    assert metrics == cli, "the same seed and config give the same metrics from Python and the CLI"

    model = tandem.load(tmp_path / "py")
    index = tandem.Index.build(model, data)
    ids, scores = index.search(text_ids=[0, 5, 9], k=4)
    assert ids.shape == (3, 4) and ids.dtype == np.int64 and scores.dtype == np.float32
    assert np.all(np.diff(scores, axis=1) <= 0)
    index.save(tmp_path / "index")
    cli_search = json.loads(
        subprocess.run(
            [tandem_bin(), "search", "--index", tmp_path / "index", "--text-id", "5", "--k", "4", "--format", "json"],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    hits = cli_search["results"][0]
    assert [h["id"] for h in hits] == ids[1].tolist()
    np.testing.assert_allclose([h["score"] for h in hits], scores[1], rtol=1e-6)
    # Raw features embed to the stored embeddings.
    reopened = tandem.Index.open(tmp_path / "index")
    by_features, _ = reopened.search(text_features=data.texts[[0, 5, 9]], k=4)
    np.testing.assert_array_equal(by_features, ids)


def test_embedding_matches_the_index_and_takes_any_layout(tmp_path):
    data = tandem.Dataset.load(DEMO)
    tandem.train(data, tmp_path / "run", progress=False, **SMALL)
    model = tandem.load(tmp_path / "run")
    x = data.texts[:300]
    a = model.embed_texts(x)
    assert a.shape == (300, 32) and a.dtype == np.float32
    np.testing.assert_allclose((a * a).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(model.embed_texts(np.asfortranarray(x)), a)
    # Other batch sizes round differently in the matrix products, no more.
    np.testing.assert_allclose(model.embed_texts(x, batch_size=7), a, atol=1e-6)
    np.testing.assert_allclose(model.embed_texts(x.astype(np.float64)), a)
    with pytest.raises(ValueError, match="dimension 384"):
        model.embed_texts(np.zeros((2, 5), np.float32))


def test_a_callback_can_stop_and_resume_continues(tmp_path):
    data = tandem.Dataset.load(DEMO)
    settings = dict(SMALL, train__epochs=3)
    outcome = tandem.train(
        data, tmp_path / "run", progress=False,
        callback=lambda e: not (e["kind"] == "epoch" and e["epoch"] == 1), **settings,
    )
    assert outcome["paused"] and outcome["epochs_run"] == 1
    resumed = tandem.resume(data, tmp_path / "run", progress=False)
    straight = tandem.train(data, tmp_path / "straight", progress=False, **settings)
    assert resumed["epochs_run"] == 3
    assert resumed["best_val"] == straight["best_val"]

    def boom(event):
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        tandem.train(data, tmp_path / "boom", progress=False, callback=boom, **settings)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tandem.train(data, tmp_path / "straight", progress=False, **settings)


def test_devices_train_one_device_or_ranks_and_bad_names_are_value_errors(tmp_path):
    data = tandem.Dataset.load(DEMO)

    def run(name, devices):
        epochs = []
        outcome = tandem.train(
            data, tmp_path / name, progress=False, devices=devices,
            callback=lambda e: epochs.append(e) if e["kind"] == "epoch" else None, **SMALL,
        )
        return outcome, [e["train_loss"] for e in epochs]

    default, default_losses = run("default", None)
    one, one_losses = run("one", ["cpu"])
    assert one["best_val"] == default["best_val"] and one_losses == default_losses
    # Two ranks: the same steps and, to rounding, the same training.
    two, two_losses = run("two", ["cpu", "cpu"])
    assert two["steps"] == one["steps"] > 0 and len(two_losses) == len(one_losses)
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-4)
    with pytest.raises(ValueError, match="device `gpu`: expected `cpu`, `cuda` or `cuda:N`"):
        tandem.train(data, tmp_path / "bad", progress=False, devices=["cpu", "gpu"], **SMALL)
    assert not (tmp_path / "bad").exists(), "nothing is written for a bad device"


def test_a_trainer_stepped_from_python_equals_train_and_pauses_between_epochs(tmp_path):
    data = tandem.Dataset.load(DEMO)
    settings = dict(SMALL, train__epochs=3)
    straight = tandem.train(data, tmp_path / "straight", progress=False, **settings)

    trainer = tandem.Trainer(data, tmp_path / "stepped", **settings)
    assert (trainer.epochs, trainer.completed_epochs, trainer.done) == (3, 0, False)
    steps = []
    while (event := trainer.step()) is not None:
        steps.append(event)
    assert [e["step_in_epoch"] for e in steps] == list(range(1, trainer.steps_per_epoch + 1))
    assert all(e["kind"] == "step" and e["epoch"] == 1 for e in steps)
    first = trainer.end_epoch()
    assert first["kind"] == "epoch" and first["epoch"] == 1 and trainer.completed_epochs == 1
    # Held, not written: train.checkpoint_seconds (60) has not passed; finish writes it.
    assert first["checkpointed"] is False
    assert trainer.validate() == first["val"]  # the model has not moved since
    # A pause after epoch 1, then resume: the run equals one never interrupted.
    paused = trainer.finish(paused=True)
    assert paused["paused"] and paused["epochs_run"] == 1
    with pytest.raises(RuntimeError, match="has finished"):
        trainer.step()
    resumed = tandem.Trainer.resume(data, tmp_path / "stepped")
    second = resumed.epoch()
    assert second["epoch"] == 2
    with pytest.raises(ValueError, match="whole epochs"):
        resumed.step()
        resumed.checkpoint()
    while resumed.step() is not None:
        pass
    assert resumed.end_epoch()["checkpointed"] is True  # the last epoch writes
    assert resumed.done and resumed.step() is None
    outcome = resumed.finish()
    assert outcome["best_val"] == straight["best_val"]
    assert outcome["steps"] == straight["steps"] and outcome["epochs_run"] == 3
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tandem.Trainer(data, tmp_path / "straight", **settings)


def test_ctrl_c_interrupts_within_a_step_and_resume_continues(tmp_path):
    import signal

    data = tandem.Dataset.load(DEMO)
    settings = dict(SMALL, train__epochs=3)

    def interrupt(event):
        # Ctrl-C during the second epoch: SIGINT to this process, as the terminal sends it.
        if event["kind"] == "step" and event["epoch"] == 2 and event["step_in_epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        tandem.train(data, tmp_path / "run", progress=False, callback=interrupt, **settings)
    # The checkpoint of epoch 1 stayed; resuming ends as a run never interrupted.
    resumed = tandem.resume(data, tmp_path / "run", progress=False)
    straight = tandem.train(data, tmp_path / "straight", progress=False, **settings)
    assert resumed["epochs_run"] == 3
    assert resumed["best_val"] == straight["best_val"]
