"""lib.train.rewards: hand-computed rewards, and exact functional classes from one execution."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lib.train import credit
from lib.train.rewards import (
    NO_PROGRAM,
    call_probes,
    code_test_results,
    extract_program,
    human_similarity,
    make_reward,
    qa_match,
)

# A problem in MBPP's shape: three standalone asserts calling the entry point by name.
COUNT_UP = {
    "source": "mbpp",
    "entry_point": "count_up",
    "setup": "",
    "tests": [
        "assert count_up(3) == [1, 2, 3]",
        "assert count_up(1) == [1]",
        "assert count_up(0) == []",
    ],
}
SAMPLES = {
    "correct": "```python\ndef count_up(n):\n    return list(range(1, n + 1))\n```",
    "correct_other": "def count_up(n):\n    out = []\n    for i in range(n):\n        out.append(i + 1)\n    return out",
    # fails n = 0 only (returns None): 2 of 3
    "two_of_three": "def count_up(n):\n    if n > 0:\n        return list(range(1, n + 1))",
    # range(1, n): [1, 2], [], [] → passes n = 0 only: 1 of 3
    "off_by_one": "def count_up(n):\n    return list(range(1, n))",
    "raises": "def count_up(n):\n    return list(range(1, n + 1)) + n",
    "prose": "Return the numbers from 1 to n in a list, counting up.",
    "syntax_error": "def count_up(n) return list(range(1, n + 1))",
    "infinite_loop": "def count_up(n):\n    while True:\n        pass",
}
TIMEOUT = 0.3

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def count_up_run():
    names = list(SAMPLES)
    t0 = time.monotonic()
    rewards, behaviours = code_test_results([COUNT_UP], [[SAMPLES[k] for k in names]], TIMEOUT)
    elapsed = time.monotonic() - t0
    return (
        dict(zip(names, rewards[0].tolist(), strict=True)),
        dict(zip(names, behaviours[0], strict=True)),
        elapsed,
    )


def test_code_rewards_hand_computed(count_up_run):
    rewards, _, _ = count_up_run
    assert rewards == pytest.approx(
        {
            "correct": 1.0,
            "correct_other": 1.0,
            "two_of_three": 2 / 3,
            "off_by_one": 1 / 3,
            "raises": 0.0,
            "prose": 0.0,
            "syntax_error": 0.0,
            "infinite_loop": 0.0,
        }
    )


def test_infinite_loop_does_not_stall_the_batch(count_up_run):
    _, behaviours, elapsed = count_up_run
    assert behaviours["infinite_loop"] == ("timeout",) * 3
    # The loop costs its 3 probe timers ≈ 3·0.3 CPU s (the asserts, which would hit the same loop,
    # are skipped), run beside the others; the child's wall limit is 5 + 2·0.3·(2 + 6) = 9.8 s.
    assert elapsed < 3 * TIMEOUT + 2.0


def test_a_test_whose_probe_timed_out_is_not_run():
    # count_up loops on its first call only. Probe 1 times out; its assert would call count_up a
    # second time and pass, so running it would give 3/3. Skipped, it fails: 2/3.
    body = (
        "calls = []\n"
        "def count_up(n):\n"
        "    calls.append(n)\n"
        "    while len(calls) == 1:\n"
        "        pass\n"
        "    return list(range(1, n + 1))"
    )
    rewards, beh = code_test_results([COUNT_UP], [[body]], TIMEOUT)
    assert beh[0][0] == ("timeout", "r:list[1]", "r:list[]")
    assert rewards.tolist() == [[pytest.approx(2 / 3)]]


def test_test_timer_counts_cpu_seconds_not_wall_seconds():
    # Each call sleeps 2·TIMEOUT wall seconds and uses almost no CPU: a wall timer would stop every
    # probe and test; the CPU timer stops none (6 calls · 0.6 s = 3.6 s, under the 9.8 s wall limit).
    body = (
        "import time\n"
        "def count_up(n):\n"
        f"    time.sleep({2 * TIMEOUT})\n"
        "    return list(range(1, n + 1))"
    )
    rewards, beh = code_test_results([COUNT_UP], [[body]], TIMEOUT)
    assert beh[0][0] == ("r:list[1,2,3]", "r:list[1]", "r:list[]")
    assert rewards.tolist() == [[1.0]]


def test_behaviours_and_functional_classes_exact(count_up_run):
    _, beh, _ = count_up_run
    assert beh["correct"] == ("r:list[1,2,3]", "r:list[1]", "r:list[]")
    assert beh["correct_other"] == beh["correct"]
    assert beh["two_of_three"] == ("r:list[1,2,3]", "r:list[1]", "r:None")
    assert beh["off_by_one"] == ("r:list[1,2]", "r:list[]", "r:list[]")
    assert beh["raises"] == ("e:TypeError",) * 3
    assert beh["prose"] == beh["syntax_error"] == (NO_PROGRAM,) * 3
    classes = credit.functional_classes(list(beh.values()))
    # correct, correct_other | two_of_three | off_by_one | raises | prose, syntax_error | loop
    assert classes == [0, 0, 1, 2, 3, 4, 4, 5]


def test_set_results_share_a_class_across_hash_seeds():
    # Each child has its own random string-hash seed (python -I ignores PYTHONHASHSEED), so a
    # set's plain repr changes order between samples; the canonical repr sorts it.
    meta = {"entry_point": "fruit", "setup": "", "tests": ["assert fruit() == {'fig'}"]}
    body = "def fruit():\n    return {'apple', 'banana', 'cherry', 'date', 'elder', 'fig'}"
    _, beh = code_test_results([meta], [[body] * 6], TIMEOUT)
    assert credit.functional_classes(beh[0]) == [0] * 6
    assert beh[0][0] == ("r:set{'apple','banana','cherry','date','elder','fig'}",)


def test_setup_runs_after_the_program_and_before_the_tests():
    # MBPP's test_setup_code builds inputs from the solution's own classes (task 367: Node).
    meta = {
        "entry_point": "depth",
        "setup": "root = Node(1)\nroot.left = Node(2)",
        "tests": ["assert depth(root) == 2", "assert depth(None) == 0"],
    }
    good = (
        "class Node:\n    def __init__(self, v):\n        self.left = self.right = None\n"
        "def depth(t):\n    return 0 if t is None else 1 + max(depth(t.left), depth(t.right))"
    )
    no_node = "def depth(t):\n    return 2"
    rewards, beh = code_test_results([meta], [[good, no_node]], TIMEOUT)
    assert rewards[0].tolist() == [1.0, 0.0]  # without Node the setup fails: every test fails
    assert beh[0][1] == ("load e:NameError",) * 2


def test_a_sample_cannot_print_its_way_to_a_pass():
    # Fake result lines for every test, on print and straight to fd 1, then exit before the
    # harness writes its own: only lines carrying the harness's key (sent on stdin) count.
    fakes = "".join(f'\\n{{"i": {i}, "pass": true, "b": "x"}}\\n' for i in range(3))
    body = f"import os\nprint('{fakes}')\nos.write(1, b'{fakes}')\n"
    body += "def count_up(n):\n    os._exit(0)"
    rewards, beh = code_test_results([COUNT_UP], [[body]], TIMEOUT)
    assert rewards.tolist() == [[0.0]]
    assert beh[0][0] == ("missing",) * 3


def test_objects_without_repr_compare_without_their_address():
    meta = {"entry_point": "box", "setup": "", "tests": ["assert box(1) is not None"]}
    body = "class Box:\n    pass\ndef box(v):\n    return Box()"
    _, beh = code_test_results([meta], [[body, body]], TIMEOUT)
    assert beh[0][0] == beh[0][1] == ("r:<__main__.Box object>",)


def test_a_sample_with_an_invalid_escape_parses_without_a_warning():
    # The coder's samples hold regexes like "\d" in plain strings: on Python 3.12 each parse
    # printed "<unknown>:7: SyntaxWarning: invalid escape sequence" (3.11: DeprecationWarning,
    # hidden by default), 33 lines in one GPU run's log. Under `-W always` nothing may be printed,
    # and under `-W error` the sample must still count as a program (else it would score 0).
    sample = 'import re\ndef f(s):\n    return re.findall("\\d+", s)\n'
    code = (
        "from lib.train.rewards import extract_program; "
        f"print(extract_program({sample!r}) is not None)"
    )
    for flag in ("always", "error"):
        out = subprocess.run(
            [sys.executable, "-W", flag, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert (out.stdout.strip(), out.stderr) == ("True", ""), flag


def test_extract_program():
    assert extract_program("Here:\n```python\nx = 1\n```\nand ```py\ny = 2\n```") == "x = 1\n"
    assert extract_program("```\nx = 1\n") == "x = 1\n"  # cut off before the closing fence
    assert extract_program("x = [1,\n 2]") == "x = [1,\n 2]"
    assert extract_program("This function returns the sum.") is None
    assert extract_program("```python\ndef f(:\n```") is None
    assert extract_program("   \n") is None


def test_call_probes():
    assert call_probes("assert f(3) == [1, 2, 3]", "f") == ["f(3)"]
    assert call_probes("assert set(f([1, 1])) == set([1])", "f") == ["f([1, 1])"]
    assert call_probes("assert math.isclose(f(1.5), 2.0) and f(f(2)) == 3", "f") == [
        "f(1.5)",
        "f(f(2))",
    ]
    assert call_probes("def check(c):\n    assert c(1) == 1\ncheck(f)", "f") == []


def test_code_meta_without_tests_is_an_error():
    with pytest.raises(ValueError, match="needs 'tests' and 'entry_point'"):
        code_test_results([{"entry_point": "f", "tests": []}], [["def f(): pass"]], TIMEOUT)


# -- qa ---------------------------------------------------------------------------------------


def test_qa_match_uses_the_checkers_normalisation():
    texts = [["The answer is Paris.", "London", "42"], ["the  Beatles!", "The Rolling Stones", "4"]]
    refs = [["paris"], ["Beatles", "4"]]
    # "paris" is a whole-token span of "the answer is paris"; "4" is not inside "42" but is the
    # whole of "4"; the articles and "!" vanish under SQuAD normalisation.
    assert qa_match(texts, refs, 0.5).tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]]


# -- human similarity -------------------------------------------------------------------------

VECS = {
    "hi there": [1.0, 0.0, 0.0],
    "hello friend": [0.0, 1.0, 0.0],
    "sample a": [0.6, 0.8, 0.0],
    "sample b": [-1.0, 0.0, 0.0],
    "sample c": [0.0, 0.6, 0.8],
}


def _fake_embed(texts):
    return torch.tensor([VECS[t] for t in texts])


def test_human_similarity_hand_built_embeddings():
    texts = [["sample a", "sample b", "sample c"], ["sample a", "sample b", "sample c"]]
    refs = [["hi there", "hello friend"], ["hi there"]]
    # row 0: max(cos to r1, r2) = max(0.6, 0.8), max(−1, 0) = 0, max(0, 0.6)
    # row 1: cos to r1 only: 0.6, −1 → clipped to 0, 0
    got = human_similarity(texts, refs, _fake_embed)
    want = torch.tensor([[0.8, 0.0, 0.6], [0.6, 0.0, 0.0]])
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="no human reference"):
        human_similarity(texts, [["hi there"], []], _fake_embed)


def test_human_similarity_reward_caches_each_inputs_replies():
    calls = []

    def counting(texts):
        calls.append(list(texts))
        return _fake_embed(texts)

    reward = make_reward("human_similarity", embed_fn=counting)
    texts, refs = [["sample a", "sample c"]], [["hi there", "hello friend"]]
    first = reward([{}], refs, texts)
    assert torch.allclose(first, torch.tensor([[0.8, 0.6]]))
    assert torch.equal(reward([{}], refs, texts), first)
    # samples every time; the replies once, as their own call
    assert calls == [
        ["sample a", "sample c"],
        ["hi there", "hello friend"],
        ["sample a", "sample c"],
    ]


@pytest.mark.slow
def test_human_similarity_real_minilm_obvious_cases():
    reward = make_reward("auto", domain="social")
    refs = [["I love hiking in the mountains on weekends.", "Not much, just watching TV."]]
    texts = [["Not much, just watching TV.", "The derivative of x squared is 2x."]]
    got = reward([{}], refs, texts)[0].tolist()
    assert got[0] == pytest.approx(1.0, abs=1e-5)
    assert got[1] < 0.3


# -- the factory ------------------------------------------------------------------------------


def test_make_reward_auto_and_errors():
    assert make_reward("auto", domain="code", test_timeout_s=1).name == "code_tests"
    assert make_reward("auto", domain="qa", qa_f1_threshold=0.5).name == "qa_match"
    for domain in ("social", "creative", "jsonl"):
        assert make_reward("auto", domain=domain, embed_fn=_fake_embed).name == "human_similarity"
    with pytest.raises(ValueError, match="no reward for domain 'poetry'"):
        make_reward("auto", domain="poetry")
    with pytest.raises(ValueError, match="needs qa_f1_threshold"):
        make_reward("qa_match")
    with pytest.raises(ValueError, match="needs test_timeout_s"):
        make_reward("code_tests")
    with pytest.raises(ValueError, match="unknown 'bleu'"):
        make_reward("bleu")


def test_reward_fn_call_and_submit_agree_and_submit_returns_at_once():
    reward = make_reward("code_tests", test_timeout_s=TIMEOUT)
    metas = [json.dumps(COUNT_UP), COUNT_UP]  # a JSON string (the parquet column) or a mapping
    texts = [[SAMPLES["correct"], SAMPLES["infinite_loop"]], [SAMPLES["off_by_one"], "no"]]
    t0 = time.monotonic()
    fut = reward.submit(metas, [[], []], texts)
    assert time.monotonic() - t0 < 0.5 and not fut.done()  # the loop alone takes ≥ 6·0.3 s
    scored = fut.result()
    assert scored.rewards.shape == (2, 2) and scored.rewards.dtype == torch.float32
    assert torch.allclose(scored.rewards, torch.tensor([[1.0, 0.0], [1 / 3, 0.0]]))
    assert torch.equal(reward(metas, [[], []], texts), scored.rewards)
    with pytest.raises(ValueError, match="2 metas, 1 reference lists"):
        reward(metas, [[]], texts)


# The same problem in the HumanEval form the code domain writes (MBPP and HumanEval rows alike):
# the model sees `prompt` and writes a body (or restates the function), and the evaluation runs
# prompt + extract_code_body(sample) + test. The training reward must build that same program:
# a body that the evaluation passes must not score 0 because it does not parse on its own.
COUNT_UP_HE = {
    **COUNT_UP,
    "prompt": 'def count_up(n):\n    """[1, ..., n]"""\n',
    "test": "def check(candidate):\n    assert candidate(3) == [1, 2, 3]\n    assert candidate(1) == [1]\n"
    "    assert candidate(0) == []\n",
}
BODIES = {
    "body": "    return list(range(1, n + 1))\n",  # passes all 3
    "fenced_function": "```python\ndef count_up(n):\n    return list(range(1, n + 1))\n```",  # all 3
    "off_by_one_body": "    return list(range(1, n))\n",  # passes n = 0 only: 1/3
    "prose": "Count up from one to n and return the list.",  # 0
}


def test_code_reward_builds_the_evaluations_program_from_prompt_and_body():
    from lib.checkers import code_passes
    from lib.sandbox import SandboxLimits

    names = list(BODIES)
    rewards, _ = code_test_results([COUNT_UP_HE], [[BODIES[k] for k in names]], 2.0)
    got = dict(zip(names, rewards[0].tolist(), strict=True))
    assert got == pytest.approx(
        {"body": 1.0, "fenced_function": 1.0, "off_by_one_body": 1 / 3, "prose": 0.0}
    )
    # Independent reference: the score stage's checker passes exactly the samples scoring 1.
    passed = code_passes(
        [(json.dumps(COUNT_UP_HE), _body(BODIES[k]), k) for k in names], SandboxLimits(), 2
    )
    assert [got[k] == 1.0 for k in names] == passed


def _body(text: str) -> str:
    from lib.prompts import extract_code_body

    return extract_code_body(text, COUNT_UP_HE["entry_point"])
