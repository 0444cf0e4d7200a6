"""Schedule parsing (including bad strings) and the block ramp reaching every block."""

import pytest

from yolos_bf16accum.patching import apply_patch_state, count_patched, encoder_blocks, install_attention_function
from yolos_bf16accum.schedule import ProgressiveSchedule, ScheduleEntry, parse_schedule

SEED_SCHEDULE = "attn@0.2,mlp@0.4,qkv@0.6,head@0.8"


def test_parse_seed_schedule():
    assert parse_schedule(" qkv@0.6, attn@0.2 ,mlp@0.4,head@0.8") == [
        ScheduleEntry("attn", 0.2), ScheduleEntry("mlp", 0.4), ScheduleEntry("qkv", 0.6), ScheduleEntry("head", 0.8)]


@pytest.mark.parametrize("text,msg", [
    ("", "empty"),
    ("attn", "group@fraction"),
    ("attn@", "group@fraction"),
    ("@0.2", "group@fraction"),
    ("ffn@0.2", "unknown group 'ffn'"),
    ("attn@abc", "not a number"),
    ("attn@1.0", r"\[0, 1\)"),
    ("attn@-0.1", r"\[0, 1\)"),
    ("attn@0.2,attn@0.5", "twice"),
    ("attn@0.2,,mlp@0.4", "group@fraction"),
])
def test_bad_schedules_are_clear_errors(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_schedule(text)


@pytest.mark.parametrize("total", [1, 2, 5, 7, 100, 1001])
@pytest.mark.parametrize("blocks,per_stage", [(12, 2), (12, 5), (4, 1), (3, 4)])
@pytest.mark.parametrize("mode", ["blocks", "all"])
def test_ramp_patches_every_block_by_the_last_step(total, blocks, per_stage, mode):
    s = ProgressiveSchedule(parse_schedule(SEED_SCHEDULE), total, blocks, mode, per_stage)
    last = s.state_at(total - 1)
    for g in ("attn", "mlp", "qkv"):
        assert last[g] == tuple(range(blocks)), (g, last)
    assert last["head"] == (0,)
    # monotone: nothing is ever switched off again
    prev = {}
    for step in range(total):
        cur = s.state_at(step)
        for g, b in prev.items():
            assert set(b) <= set(cur.get(g, ())), (step, g)
        prev = cur


def test_groups_start_at_their_fraction_and_ramp_in_stages():
    s = ProgressiveSchedule(parse_schedule(SEED_SCHEDULE), 100, 12, "blocks", 2)
    assert s.state_at(19) == {}
    assert s.state_at(20) == {"attn": (0, 1)}
    assert s.blocks_at("mlp", 39) == () and s.blocks_at("mlp", 40) == (0, 1)
    assert s.blocks_at("head", 79) == () and s.blocks_at("head", 80) == (0,)
    # attn: 6 stages over steps 20..99, the last starting before step 99 (upstream stopped at 8 blocks)
    assert s.stage_starts["attn"] == [20, 33, 46, 60, 73, 86]
    assert s.blocks_at("attn", 85) == tuple(range(10)) and s.blocks_at("attn", 86) == tuple(range(12))
    assert s.describe(50)["attn"] == "blocks 0-5 of 12" and s.describe(50)["qkv"] == "off"


def test_ramp_on_a_model_ends_fully_patched(tiny_model):
    n = len(encoder_blocks(tiny_model))
    s = ProgressiveSchedule(parse_schedule(SEED_SCHEDULE), 10, n, "blocks", 1)
    install_attention_function(tiny_model)
    counts = [apply_patch_state(tiny_model, s.state_at(step), accum_chunk=16)["linears"] for step in range(10)]
    assert counts[0] == 0 and counts == sorted(counts)
    assert count_patched(tiny_model) == {"linears": 6 * n + 6, "attention": n, "convs": 0}


def test_bad_schedule_arguments():
    entries = parse_schedule("attn@0.5")
    for kwargs in (dict(total_steps=0), dict(num_blocks=0), dict(ramp_mode="some"), dict(blocks_per_stage=0)):
        args = dict(entries=entries, total_steps=10, num_blocks=4, ramp_mode="blocks", blocks_per_stage=1) | kwargs
        with pytest.raises(ValueError):
            ProgressiveSchedule(**args)


def test_a_schedule_that_collapses_warns():
    """4 steps: the seed's four groups and their stages cannot start on different steps; say so."""
    import warnings

    seed = parse_schedule("attn@0.2,mlp@0.4,qkv@0.6,head@0.8")
    with pytest.warns(RuntimeWarning, match="collapses with 4 steps"):
        ProgressiveSchedule(seed, 4, 12, "blocks", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProgressiveSchedule(seed, 1000, 12, "blocks", 2)   # a real run: no warning


def test_groups_sharing_a_fraction_do_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProgressiveSchedule(parse_schedule("attn@0.5,mlp@0.5"), 100_000, 12, "blocks", 2)
        ProgressiveSchedule(parse_schedule("attn@0.2,head@0.2"), 1000, 12, "all", 2)
