"""Import paths from before 0.3, when every module sat in one flat folder, listed in one place.

A script written for 0.2 keeps working: ``import charrnn.sampler`` gives a module whose names
are those of ``charrnn.sampling.sampler``, looked up there on each use (PEP 562). The old
``charrnn.model`` is now a package that still gives ``CharRNN`` (charrnn/model/__init__.py). New
code should use the new paths; nothing inside the package imports through this table.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# Each old module and the module that now holds its names.
OLD_PATHS = {
    "charrnn.corpus": "charrnn.data.corpus", "charrnn.tokenizer": "charrnn.data.tokenizer",
    "charrnn.cache": "charrnn.data.cache", "charrnn.streams": "charrnn.data.batches",
    "charrnn.checkpoint": "charrnn.model.checkpoint", "charrnn.evaluate": "charrnn.model.evaluate",
    "charrnn.device": "charrnn.model.device",
    "charrnn.sampler": "charrnn.sampling.sampler", "charrnn.engine": "charrnn.sampling.engine",
    "charrnn.request": "charrnn.sampling.engine", "charrnn.choice": "charrnn.sampling.choice",
    "charrnn.fast_step": "charrnn.sampling.fast_step",
    "charrnn.report": "charrnn.insight.report", "charrnn.probe": "charrnn.insight.probe",
    "charrnn.units": "charrnn.insight.units", "charrnn.plots": "charrnn.insight.plots",
    "charrnn.novelty": "charrnn.insight.novelty",
    "charrnn.trainer": "charrnn.training.trainer", "charrnn.presets": "charrnn.training.presets",
    "charrnn.schedule": "charrnn.training.schedule", "charrnn.finetune": "charrnn.training.finetune",
    "charrnn.config_tools": "charrnn.config",
}
# Names an old module re-exported from others, looked up there after its new module: the old
# sampler gave choice's names (sample_seed, which the 0.2 README names) and SampleOptions.
ALSO_FROM = {"charrnn.sampler": ("charrnn.sampling.choice", "charrnn.config")}
# Names renamed in 0.3 (one meaning per name), still given under the old name at the old path.
OLD_NAMES = {"charrnn.streams": {"Streams": "Batches"}}


class _OldPath(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of OLD_PATHS and makes it a view of the new module."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in OLD_PATHS:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None                      # the default: a new, empty module

    def exec_module(self, module) -> None:
        new = importlib.import_module(OLD_PATHS[module.__name__])
        also = [importlib.import_module(name) for name in ALSO_FROM.get(module.__name__, ())]
        renamed = OLD_NAMES.get(module.__name__, {})
        module.__getattr__ = lambda name: _first(renamed.get(name, name), [new, *also])
        module.__dir__ = lambda: sorted({name for source in [new, *also] for name in dir(source)})
        module.__doc__ = f"The pre-0.3 path of {new.__name__} (charrnn/aliases.py)."


def _first(name: str, sources: list):
    """``name`` of the first module in ``sources`` that has it. Raises AttributeError."""
    for source in sources:
        if hasattr(source, name):
            return getattr(source, name)
    raise AttributeError(f"module {sources[0].__name__!r} has no attribute {name!r}")


def install() -> None:
    """Adds the finder once (charrnn/__init__.py calls it)."""
    if not any(isinstance(finder, _OldPath) for finder in sys.meta_path):
        sys.meta_path.append(_OldPath())
