"""Tree packing (lib/packing.py): mask, positions, kept logits, and log-probs equal unpacked ones."""

from __future__ import annotations

import pytest
import torch

from lib.config import params_for
from lib.models import load_model
from lib.packing import continuation_logprobs, tree_pack

CPU = torch.device("cpu")


def test_layout_mask_positions_and_targets_by_hand():
    # group 0: prompt [10, 11], continuations [20, 21] and [30]; group 1: prompt [40], [50, 51].
    # Short groups share one row (width 8 costs less than two rows of 5).
    pack = tree_pack([([10, 11], [[20, 21], [30]]), ([40], [[50, 51]])], CPU)
    assert pack.input_ids.tolist() == [[10, 11, 20, 21, 30, 40, 50, 51]]
    assert pack.position_ids.tolist() == [[0, 1, 2, 3, 2, 0, 1, 2]]
    want = [
        # 10 11 20 21 30 40 50 51
        [1, 0, 0, 0, 0, 0, 0, 0],  # 10
        [1, 1, 0, 0, 0, 0, 0, 0],  # 11
        [1, 1, 1, 0, 0, 0, 0, 0],  # 20
        [1, 1, 1, 1, 0, 0, 0, 0],  # 21
        [1, 1, 0, 0, 1, 0, 0, 0],  # 30: its prompt and itself, not the sibling 20 21
        [0, 0, 0, 0, 0, 1, 0, 0],  # 40: a new example sees nothing before it
        [0, 0, 0, 0, 0, 1, 1, 0],  # 50
        [0, 0, 0, 0, 0, 1, 1, 1],  # 51
    ]
    assert pack.allowed.long().tolist() == [want]
    # 20 from 11, 21 from 20; 30 from 11; 50 from 40, 51 from 50
    assert pack.keep.tolist() == [1, 2, 1, 5, 6]
    assert pack.targets.tolist() == [20, 21, 30, 50, 51]
    assert pack.owner.tolist() == [0, 0, 1, 2, 2]
    mask = pack.additive_mask(torch.float32)
    assert mask.shape == (1, 1, 8, 8)
    assert float(mask[0, 0, 4, 2]) == torch.finfo(torch.float32).min
    assert float(mask[0, 0, 4, 1]) == 0.0


def test_long_groups_go_to_separate_rows_with_padding_that_sees_only_itself(monkeypatch):
    import lib.packing

    monkeypatch.setattr(lib.packing, "ATTN_WIDTH", 1)  # attention dear: one group a row
    pack = tree_pack([([1, 2, 3], [[4, 5]]), ([6, 7], [[8]])], CPU, pad_id=99)
    assert pack.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 99, 99]]
    assert pack.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 0]]
    assert pack.allowed[1].long().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    assert pack.keep.tolist() == [2, 3, 6]  # flat indices: row 1 starts at 5
    assert pack.targets.tolist() == [4, 5, 8]
    assert pack.owner.tolist() == [0, 0, 1]


def test_empty_prompt_or_nothing_to_score_is_refused():
    with pytest.raises(ValueError, match="group 1: empty prompt"):
        tree_pack([([1], [[2]]), ([], [[3]])], CPU)
    with pytest.raises(ValueError, match="no token to score"):
        tree_pack([([1], [[], []])], CPU)


@pytest.mark.parametrize("attn_width", [2048, 1])  # one shared row; one row per group, padded
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_logprobs_equal_one_unpadded_forward_per_continuation(
    dtype, attn_width, monkeypatch
):
    import lib.packing

    monkeypatch.setattr(lib.packing, "ATTN_WIDTH", attn_width)
    model, _ = load_model(params_for("model", base="tiny-random", device="cpu"))
    model = model.to(dtype).eval()
    groups = [
        ([1, 5, 9, 11], [[3, 4], [8, 8, 2, 6], []]),
        ([1, 7], [[5], [12, 13, 14]]),
    ]
    pack = tree_pack(groups, CPU)
    assert pack.input_ids.shape[0] == (1 if attn_width > 100 else 2)
    with torch.no_grad():
        hidden = model.get_decoder()(
            input_ids=pack.input_ids,
            attention_mask=pack.additive_mask(dtype),
            position_ids=pack.position_ids,
        ).last_hidden_state
        logits = model.get_output_embeddings()(hidden.flatten(0, 1)[pack.keep])
        assert logits.shape[0] == len(pack.keep)
        _, sums = continuation_logprobs(logits, pack)
        want = []
        for prompt, conts in groups:
            for c in conts:
                lp = model(input_ids=torch.tensor([prompt + c])).logits[0].log_softmax(-1)
                want.append(sum(float(lp[len(prompt) - 1 + t, y]) for t, y in enumerate(c)))
    tol = 1e-4 if dtype == torch.float32 else 1e-6
    assert sums.tolist() == pytest.approx(want, abs=tol)
    assert float(sums[2]) == 0.0  # the empty continuation owns no target


def test_first_fit_decreasing_by_hand():
    # Longest first, each into the first row with room (capacity 10): 7 (index 3) -> row 0, room
    # 3; 5 (1) -> row 1, room 5; 4 (4) -> row 1, room 1; 3 (0) -> row 0, room 0; 2 (6) -> row 2,
    # room 8; 1 (2, before index 5) -> row 1, room 0; 1 (5) -> row 2. Rows list indices ascending.
    from lib.packing import first_fit_decreasing

    assert first_fit_decreasing([3, 5, 1, 7, 4, 1, 2], 10) == [[0, 3], [1, 2, 4], [5, 6]]
    assert first_fit_decreasing([], 4) == []
    with pytest.raises(ValueError, match="a length of 11 exceeds a row of 10"):
        first_fit_decreasing([3, 11], 10)
