"""A checkpoint resumes only under the config that wrote it (its hash); keys added later keep old checkpoints valid."""

import dataclasses

from eqtrain.schema import Config
from eqtrain.training.settings import validate

# What commit db20837 (0.2, before dataset.rotate, model.padding/pool_kind/norm/group_pool and eval_*)
# wrote into every checkpoint of the default config: measured by running that commit's code.
HASH_BEFORE_THE_NEW_KEYS = "bb3c8dfd4ef425d7"


def test_keys_added_later_at_their_default_leave_the_hash_of_older_checkpoints():
    assert validate(Config()).config_hash() == HASH_BEFORE_THE_NEW_KEYS


def test_a_new_key_away_from_its_default_changes_the_hash():
    base = Config()
    rotated = dataclasses.replace(base, dataset=dataclasses.replace(base.dataset, rotate="continuous"))
    maxpool = dataclasses.replace(base, model=dataclasses.replace(base.model, pool_kind="max"))
    hashes = {validate(c).config_hash() for c in (base, rotated, maxpool)}
    assert len(hashes) == 3


def test_the_evaluation_cadence_may_change_on_resume():
    assert validate(dataclasses.replace(Config(), eval_every=3, eval_train_images=10)).config_hash() == (
        HASH_BEFORE_THE_NEW_KEYS
    )
