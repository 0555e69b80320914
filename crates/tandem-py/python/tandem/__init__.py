"""tandem: joint image–text embeddings trained with batch-wise ranking losses.

Numpy arrays in and out; the Rust library does the work with the GIL released.

    import tandem
    data = tandem.Dataset.load("data/emoji")           # or tandem.Dataset(images, texts, text_to_image)
    run = tandem.train(data, "runs/py", train__epochs=10)
    model = tandem.load("runs/py")
    print(tandem.evaluate(model, data, split="test")["rsum"])
    index = tandem.Index.build(model, data)
    ids, scores = index.search(text_ids=[0, 1], k=5)

The losses alone, for your own training loop: :mod:`tandem.losses` (numpy) and
:mod:`tandem.torch` (a drop-in PyTorch loss).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from . import _tandem
from ._tandem import Dataset, Index, ImageEncoder, Model, SentenceEncoder, evaluate, load
from ._config import assignments

__version__ = _tandem.__version__
__all__ = [
    "Dataset",
    "Index",
    "ImageEncoder",
    "Model",
    "SentenceEncoder",
    "Trainer",
    "config",
    "evaluate",
    "load",
    "losses",
    "resume",
    "train",
]

_log = logging.getLogger("tandem")

PathLike = Union[str, "os.PathLike[str]"]
Callback = Callable[[dict], Optional[bool]]


def config(config: Union[None, PathLike, Mapping[str, Any]] = None, **overrides: Any) -> str:
    """The resolved config as TOML: the reference recipe, then ``config`` (a TOML file or a
    dict, nested ``{"train": {"lr": 1e-3}}`` or dotted ``{"train.lr": 1e-3}``), then
    ``overrides`` (``train__lr=1e-3``)."""
    path, sets = _split_config(config, overrides)
    return _tandem.default_config(path, sets)


def train(
    dataset: Dataset,
    out: PathLike,
    config: Union[None, PathLike, Mapping[str, Any]] = None,
    *,
    overwrite: bool = False,
    callback: Optional[Callback] = None,
    progress: bool = True,
    devices: Optional[Sequence[str]] = None,
    **overrides: Any,
) -> dict:
    """Train a two-branch model on ``dataset``'s training split into the run folder ``out``.

    ``config`` is a TOML file or a dict of keys (see :func:`config`); keyword ``overrides``
    name keys with ``__`` for the dot: ``train__epochs=5``, ``loss__kind="info_nce"``.
    Missing keys keep the reference recipe (Wang, Li & Lazebnik 2016).

    ``callback(event)`` is called after every step (``event["kind"] == "step"``: epoch, step,
    lr, loss, terms) and epoch (``"epoch"``: train_loss, val metrics, improved, seconds);
    returning ``False`` ends the run after the current epoch (resume continues it). Ctrl-C
    interrupts within a step, keeping the last epoch's checkpoint.

    ``progress`` shows a tqdm bar when tqdm is installed, else logs each epoch.

    ``devices`` (``["cuda:0", "cuda:1"]``; names ``"cpu"``, ``"cuda"``, ``"cuda:N"``) trains
    one data-parallel rank on each, as one device with the whole batch would to rounding; one
    device trains on it alone; None, the default device (the first GPU of a CUDA build, else
    the CPU). GPUs need a build with the ``cuda`` feature.

    Returns a dict: run, best_epoch, best_val (validation metrics), epochs_run, steps,
    stopped_early, paused, skipped_batches, seconds.

    Raises ValueError for a bad config or dataset, FileExistsError when ``out`` holds a run
    (pass ``overwrite=True``), FloatingPointError when training diverges.
    """
    path, sets = _split_config(config, overrides)
    with _Progress(progress, callback) as observer:
        return _tandem.train(
            dataset, os.fspath(out), path, sets, overwrite, observer, list(devices or [])
        )


def resume(
    dataset: Dataset,
    run: PathLike,
    *,
    epochs: Optional[int] = None,
    callback: Optional[Callback] = None,
    progress: bool = True,
) -> dict:
    """Continue the run in ``run`` from its last checkpoint, exactly as if it had never
    stopped; ``epochs`` extends (or shortens) it. Returns what :func:`train` returns."""
    with _Progress(progress, callback) as observer:
        return _tandem.resume(dataset, os.fspath(run), epochs, observer)


class Trainer:
    """A training run you drive step by step, for your own loop (logging, schedules of your
    own, evaluation at chosen steps). It is the trainer :func:`train` runs to the end, so the
    same seed gives the same run either way::

        trainer = tandem.Trainer(data, "runs/r1", train__epochs=20)   # config as in train()
        while not trainer.done:
            while (event := trainer.step()) is not None:   # one batch: a step dict
                ...
            epoch = trainer.end_epoch()                     # validation and checkpoints
        outcome = trainer.finish()                          # what train() returns

    Stopping between epochs is a pause: ``Trainer.resume(data, run)`` continues exactly.
    Stopping mid-epoch loses that epoch's steps only. Each ``step()`` releases the GIL, so
    Ctrl-C interrupts between steps.
    """

    def __init__(
        self,
        dataset: Dataset,
        out: PathLike,
        config: Union[None, PathLike, Mapping[str, Any]] = None,
        *,
        overwrite: bool = False,
        **overrides: Any,
    ) -> None:
        path, sets = _split_config(config, overrides)
        self._inner = _tandem.Trainer(dataset, os.fspath(out), path, sets, overwrite)

    @classmethod
    def resume(cls, dataset: Dataset, run: PathLike, *, epochs: Optional[int] = None) -> "Trainer":
        """Continue the run in ``run`` from its last checkpoint; ``epochs`` extends it."""
        trainer = cls.__new__(cls)
        trainer._inner = _tandem.Trainer.resume(dataset, os.fspath(run), epochs)
        return trainer

    @property
    def epochs(self) -> int:
        """The epochs planned (``train.epochs``)."""
        return self._inner.epochs

    @property
    def completed_epochs(self) -> int:
        """Epochs completed and checkpointed."""
        return self._inner.completed_epochs

    @property
    def steps_per_epoch(self) -> int:
        """Optimisation steps in each epoch."""
        return self._inner.steps_per_epoch

    @property
    def done(self) -> bool:
        """Every planned epoch is trained, or early stopping ended the run."""
        return self._inner.done

    def step(self) -> Optional[dict]:
        """Train the next batch (starting the next epoch when none is in progress); returns
        the step's dict, as a :func:`train` callback gets it, or None once the epoch's batches
        are done (call :meth:`end_epoch`)."""
        return self._inner.step()

    def end_epoch(self) -> dict:
        """Validation, the best checkpoint when it improved, the resumable last checkpoint;
        returns the epoch's dict."""
        return self._inner.end_epoch()

    def epoch(self) -> dict:
        """One whole epoch: :meth:`step` until the epoch ends, then :meth:`end_epoch`."""
        while self._inner.step() is not None:
            pass
        return self._inner.end_epoch()

    def validate(self) -> Optional[dict]:
        """The validation metrics of the model as it is now (at any step)."""
        return self._inner.validate()

    def checkpoint(self) -> None:
        """Write the resumable last checkpoint (between epochs only)."""
        self._inner.checkpoint()

    def finish(self, paused: bool = False) -> dict:
        """End the run; returns what :func:`train` returns."""
        return self._inner.finish(paused)


def _split_config(config, overrides):
    path = None
    sets = []
    if config is None:
        pass
    elif isinstance(config, Mapping):
        sets.extend(assignments(config))
    else:
        path = os.fspath(config)
    sets.extend(assignments({k.replace("__", "."): v for k, v in overrides.items()}))
    return path, sets


class _Progress:
    """Wraps the user's callback with a tqdm bar (or epoch log lines)."""

    def __init__(self, enabled: bool, callback: Optional[Callback]):
        self.enabled = enabled
        self.callback = callback
        self.bar = None

    def __enter__(self):
        return self if (self.enabled or self.callback) else None

    def __exit__(self, *exc):
        if self.bar:
            self.bar.close()
        return False

    def __call__(self, event: dict) -> Optional[bool]:
        if self.enabled:
            self._show(event)
        if self.callback is not None:
            return self.callback(event)
        return None

    def _show(self, event: dict) -> None:
        if event["kind"] == "step":
            if self.bar is None:
                try:
                    from tqdm.auto import tqdm
                except ImportError:
                    tqdm = None
                if tqdm is not None:
                    self.bar = tqdm(total=event["steps_in_epoch"], unit="step", leave=False)
                else:
                    self.bar = False
            if self.bar:
                if event["step_in_epoch"] == 1:
                    self.bar.reset(total=event["steps_in_epoch"])
                    self.bar.set_description(f"epoch {event['epoch']}")
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{event['loss']:.4f}")
        else:
            val = event.get("val")
            line = f"epoch {event['epoch']}/{event['epochs']} loss {event['train_loss']:.4f}"
            if val:
                line += f" val rsum {val['rsum']:.1f}" + (" (best)" if event["improved"] else "")
            if self.bar:
                self.bar.write(line)
            else:
                _log.info(line)


from . import losses  # noqa: E402  (after the names it uses)
