"""TensorBoard's HParams table opens on what a sweep compares: the keys a job's command line
sets, then mode, γ, seed, group and model — judged by TensorBoard's own ordering of the columns."""

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import backend_context
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from eqtrain.run.tblog import RunLogger
from eqtrain.training.settings import COMPARED, compared_keys, hparams_of

from ..helpers import make_config


def hparams():
    from eqtrain.training.settings import validate

    settings = validate(make_config("mode=augreg", "gamma=1"))
    return hparams_of(settings.config, settings)


def test_the_keys_a_job_sets_are_compared_then_mode_gamma_seed_group_model():
    names = list(hparams())
    overrides = [
        "experiment=smoke",
        "lr=0.1",
        "model.channels=[8,8]",
        "init.scheme=reference",
        "seeds=30",
        "+twin=true",
    ]
    assert compared_keys(overrides, names) == ("lr", "channels", "init", "seed", "twin", *COMPARED[:2], *COMPARED[3:])
    assert compared_keys([], names) == COMPARED
    # keys logged under another hparam's name
    assert compared_keys(["gamma_ramp_epochs=3", "dataset.rotate_seed=2"], names)[:2] == ("gamma_ramp", "rotate")
    assert all(key in names for key in COMPARED)


def test_tensorboard_shows_the_compared_keys_first(tmp_path):
    params = hparams()
    logger = RunLogger(tmp_path)
    logger.hparams(params, ["acc/test"], compared_keys(["batch_size=20"], list(params)))
    logger.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    (content,) = [
        v.metadata.plugin_data.content
        for e in EventFileLoader(str(events)).Load()
        for v in e.summary.value
        if v.tag == "_hparams_/experiment"
    ]
    experiment = HParamsPluginData.FromString(content).experiment
    assert len(experiment.hparam_infos) == len(params)
    backend_context._sort_and_reduce_to_hparams_limit(experiment, 6)  # what the table's first screen shows
    assert {info.name for info in experiment.hparam_infos} == {"batch_size", *COMPARED}
    # without the marks, TensorBoard would open on the alphabet's first keys
    assert min(params) == "activation" and "activation" not in {info.name for info in experiment.hparam_infos}
