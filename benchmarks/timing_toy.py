"""Can a model read *where* in an utterance a nonverbal cue sits? A toy with a known answer, in seconds.

``python -m benchmarks.timing_toy --models mult,tfn``

Every item is a random utterance: random word pieces (the text says nothing), acoustic and visual rows of
standard normal noise, and an acoustic cue (a shift of ``--strength`` on each of 4 fixed dimensions) on 3 words,
all in the first half of the words (target −1.5) or all in the second half (target +1.5), with probability 1/2
each. Presence tells nothing, only position does, so chance Acc2 is 50 % and a model that keeps word order in the
acoustic stream can reach 100 %. This is ``probe-timing``'s rule without the real text, so a failure there can be
split into "the model cannot read order" (fails here too) and "the budget or the cue is too small for it" (learns
here). ``--fixed-length`` gives every utterance 12 words, so *first half* is a fixed set of positions; otherwise
lengths are 6 to 20 words and a model must compare the cue's position with the utterance's length.

Each run: the model at its defaults (tiny random BERT, frozen), Adam at ``--lr``, L1 loss, ``--steps`` batches
of ``--batch-size`` (32) drawn from 2,000 training items, then Acc2 on 1,000 fresh items. Prints one JSON line
per run and a summary table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

N_TRAIN, N_TEST = 2000, 1000
CUE_WORDS, CUE_DIMS = 3, 4


POSITIVE, NEGATIVE = 2000, 3000  # the toy's two "sentiment" word pieces (rule irony)


def make(n_items: int, *, strength: float, fixed_length: bool, seed: int, d_acoustic: int = 74,
         d_visual: int = 47, max_words: int = 20, rule: str = "position") -> dict:
    """``n_items`` toy utterances as padded tensors (``[CLS]`` and ``[SEP]`` around the words, right padding).

    ``rule="position"``: the cue's half decides the target (above). ``rule="irony"``: the first word is a
    positive or a negative word piece (text value y = ±1.5, p = 1/2), the cue sits on 3 random words of 30 % of the
    utterances, and the target is −y where it does and y elsewhere: ``probe-unique-a``'s rule, so a model must
    multiply what the text says by what the acoustic cue says (text alone: 70 % Acc2)."""
    if rule not in ("position", "irony"):
        raise ValueError(f"rule must be 'position' or 'irony', got {rule!r}")
    import torch

    from fusionkit.testing import TINY_VOCAB

    rng = np.random.default_rng(seed)
    words = np.full(n_items, 12) if fixed_length else rng.integers(6, max_words + 1, n_items)
    steps = max_words + 2
    ids = np.zeros((n_items, steps), dtype=np.int64)
    mask = np.zeros((n_items, steps), dtype=bool)
    acoustic = np.zeros((n_items, steps, d_acoustic), dtype=np.float32)
    visual = np.zeros((n_items, steps, d_visual), dtype=np.float32)
    target = np.zeros(n_items, dtype=np.float32)
    for i, n in enumerate(words):
        mask[i, :n + 2] = True
        ids[i, 0], ids[i, n + 1] = 101, 102
        ids[i, 1:n + 1] = rng.integers(1000, TINY_VOCAB, n)
        acoustic[i, 1:n + 1] = rng.standard_normal((n, d_acoustic))
        visual[i, 1:n + 1] = rng.standard_normal((n, d_visual))
        if rule == "irony":
            y = 1.5 if rng.random() < 0.5 else -1.5
            ids[i, 1] = POSITIVE if y > 0 else NEGATIVE
            ironic = rng.random() < 0.3
            if ironic:
                acoustic[i, 1 + rng.choice(n, CUE_WORDS, replace=False), :CUE_DIMS] += strength
            target[i] = -y if ironic else y
            continue
        first = rng.random() < 0.5
        half = np.arange(0, n // 2) if first else np.arange(n // 2, n)
        acoustic[i, 1 + rng.choice(half, CUE_WORDS, replace=False), :CUE_DIMS] += strength
        target[i] = -1.5 if first else 1.5
    return {k: torch.from_numpy(v) for k, v in dict(ids=ids, mask=mask, acoustic=acoustic, visual=visual,
                                                     target=target).items()}


def batch_of(data: dict, index):
    import torch

    from fusionkit.data.batch import MultimodalBatch

    mask = data["mask"][index]
    features = mask.clone()  # no nonverbal row at [CLS] and [SEP], as the loaders build them
    features[:, 0] = False
    features[torch.arange(len(index)), mask.sum(1) - 1] = False
    return MultimodalBatch(input_ids=data["ids"][index], attention_mask=mask,
                           token_type_ids=torch.zeros_like(data["ids"][index]),
                           acoustic=data["acoustic"][index] * features[..., None],
                           visual=data["visual"][index] * features[..., None], label=data["target"][index],
                           ids=[str(i) for i in index.tolist()])


def run(model_name: str, *, strength: float, fixed_length: bool, steps: int, seed: int, lr: float,
        batch_size: int = 32, rule: str = "position") -> dict:
    import torch

    import fusionkit
    from fusionkit.testing import tiny_bert_config

    torch.manual_seed(seed)
    train = make(N_TRAIN, strength=strength, fixed_length=fixed_length, seed=seed, rule=rule)
    test = make(N_TEST, strength=strength, fixed_length=fixed_length, seed=10_000 + seed, rule=rule)
    model = fusionkit.create(model_name, bert_config=tiny_bert_config(), d_acoustic=74, d_visual=47,
                             encoder_mode="frozen")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    draw = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    model.train()
    for _ in range(steps):
        index = torch.randint(0, N_TRAIN, (batch_size,), generator=draw)
        loss = torch.nn.functional.l1_loss(model(batch_of(train, index)).prediction, train["target"][index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(batch_of(test, torch.arange(i, min(i + 250, N_TEST)))).prediction
                                 for i in range(0, N_TEST, 250)])
    acc2 = float(((predictions > 0) == (test["target"] > 0)).float().mean())
    return {"model": model_name, "rule": rule, "fixed_length": fixed_length, "strength": strength, "seed": seed, "steps": steps,
            "batch_size": batch_size, "lr": lr, "test_acc2": round(100 * acc2, 1),
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.timing_toy", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mult,tfn", help="registered model names (default: mult,tfn)")
    p.add_argument("--strengths", default="4.0,1.4", help="cue shifts in noise standard deviations (default: "
                                                         "4.0,1.4; the probes use 1.4 against a noisier channel)")
    p.add_argument("--lengths", default="fixed,variable", help="fixed (12 words), variable (6 to 20), or both")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default: 300)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rule", choices=("position", "irony"), default="position",
                   help="position: the cue's half decides the target (probe-timing's rule); irony: the target is the "
                        "text's value, negated where the cue is (probe-unique-a's rule; text alone: 70 %%)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    import torch

    from fusionkit.registry import list_components

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in list_components("model")]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; see python -m fusionkit list --kind model",
              file=sys.stderr)
        return 2
    lengths = [x.strip() for x in args.lengths.split(",")]
    if set(lengths) - {"fixed", "variable"}:
        print("error: --lengths takes fixed, variable or fixed,variable", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for model in models:
        for length in lengths:
            for strength in (float(s) for s in args.strengths.split(",")):
                for seed in range(args.seeds):
                    row = run(model, strength=strength, fixed_length=length == "fixed", steps=args.steps,
                              seed=seed, lr=args.lr, batch_size=args.batch_size, rule=args.rule)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print("\n| model | lengths | cue strength | test Acc2 per seed (chance 50) | steps × batch |")
    print("|---|---|---|---|---|")
    seen = []
    for r in rows:
        key = (r["model"], r["fixed_length"], r["strength"])
        if key in seen:
            continue
        seen.append(key)
        accs = [x["test_acc2"] for x in rows if (x["model"], x["fixed_length"], x["strength"]) == key]
        print(f"| `{key[0]}` | {'fixed 12' if key[1] else '6 to 20'} | {key[2]:g} | "
              f"{' / '.join(f'{a:.1f}' for a in accs)} | {args.steps} × {args.batch_size} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
