"""Hook specifications: the extension points third-party distributions implement.

Every hook receives a :class:`~brats_ad.registry.Registry` and adds entries to it with
``registry.add(name, "module:attr", help=..., ...)``. Built-in components register through these
same hooks. An implementation may accept any subset of a hook's arguments (pluggy passes only the
arguments an implementation names). None of the hooks is ``firstresult``: every implementation runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    from brats_ad.registry import Registry

hookspec = pluggy.HookspecMarker("brats_ad")


@hookspec
def brats_ad_register_datasets(registry: "Registry") -> None:
    """Register dataset readers: where cases (scans, optional segmentations) come from.

    When it runs: once, when the plugin manager is built (any ``brats-ad`` command that needs
    components).

    :param registry: the dataset registry. Call ``registry.add(name, "module:attr", help=...,
        params={...})``; the factory takes the data folder as its first argument plus the
        parameters, and returns an object with ``cases()`` listing
        :class:`brats_ad.data.scan.Case` records.
    :return: nothing; add entries to ``registry``.

    Not ``firstresult``. Added in version 0.1.
    """


@hookspec
def brats_ad_register_preprocessors(registry: "Registry") -> None:
    """Register preprocessing steps: one callable class per step, chained in a pipeline.

    When it runs: once, when the plugin manager is built.

    :param registry: the preprocessor registry. The factory takes the step's parameters and
        returns a callable ``step(scan) -> scan`` on :class:`brats_ad.data.scan.Scan` (channel
        first, float32, affine kept in step with any geometric change).
    :return: nothing; add entries to ``registry``.

    Not ``firstresult``. Added in version 0.1.
    """


@hookspec
def brats_ad_register_models(registry: "Registry") -> None:
    """Register anomaly-detection models (GANomaly, AnoGAN, autoencoders, baselines).

    When it runs: once, when the plugin manager is built.

    :param registry: the model registry. Declare ``dims`` ({2}, {3} or both) and what the model
        ``provides`` in its ``ModelOutput`` (e.g. ``reconstruction``, ``latent_pair``,
        ``disc_features``, ``image_score``).
    :return: nothing; add entries to ``registry``.

    Not ``firstresult``. Added in version 0.1.
    """


@hookspec
def brats_ad_register_scorers(registry: "Registry") -> None:
    """Register anomaly scorers: ``ModelOutput -> (anomaly map, sample score)``.

    When it runs: once, when the plugin manager is built.

    :param registry: the scorer registry. Declare what each scorer ``requires`` from a
        ``ModelOutput``; the benchmark matrix pairs it only with models that provide it.
    :return: nothing; add entries to ``registry``.

    Not ``firstresult``. Added in version 0.1.
    """


@hookspec
def brats_ad_register_metrics(registry: "Registry") -> None:
    """Register evaluation metrics (voxel AUROC/AUPRC, Dice, sample-level metrics, ...).

    When it runs: once, when the plugin manager is built.

    :param registry: the metric registry. Name metrics so their direction is clear
        (``*_score``: higher is better; ``*_error``/``*_loss``: lower is better).
    :return: nothing; add entries to ``registry``.

    Not ``firstresult``. Added in version 0.1.
    """


@hookspec
def brats_ad_register_executors(registry: "Registry") -> None:
    """Register executors that run benchmark cells (in-process, SLURM, ...).

    When it runs: once, when the plugin manager is built.

    :param registry: the executor registry.
    :return: nothing; add entries to ``registry``.

    Not ``firstresult``. Added in version 0.1.
    """
