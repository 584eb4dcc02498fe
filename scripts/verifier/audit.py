"""How much of the cross-encoder's error at the top of its ranking is the labels'.

QQP's labels are one annotator's call on each pair; some pairs labeled "different" are the
same question in other words. This script ranks the calibration quarter's QQP pairs (index
% 4 == 2: never trained on, never in the reported odd half) by a cross-encoder's logit and
compares, at recalls 0.10-0.30, the precision by the file's labels with the precision by a
hand verdict on each pair.

The verdicts (`qqp-calibration-verdicts.tsv`: pair index in `qqp-dev.tsv`, a hash of the
pair's text so a different file is noticed, and `same` / `different` / `unclear`) were
written blind: the pairs to judge were listed in hash order without their label or score
(`--list`), and judged by the question Quora's annotators answered (would one answer serve
both?). The file holds no dataset text.

    /tmp/vvenv/bin/python audit.py --list [--weights W ...]   # pairs still to judge
    /tmp/vvenv/bin/python audit.py [--weights W ...]          # the comparison

`--verdicts FILE` reads another reader's verdicts (default `qqp-calibration-verdicts.tsv`);
with `--list` and a file not yet written, every pair is listed for that reader.
`agree.py` compares two readers.

It reads the weights of every `--weights` (default: the shipped ones) and judges only the
pairs each ranks above recall 0.30, so a verdict file covers the models it was written for.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cross as C  # noqa: E402
import data as D  # noqa: E402

VERDICTS = HERE / "qqp-calibration-verdicts.tsv"
RECALLS = (0.10, 0.20, 0.30)


def pair_hash(p: D.Pair) -> str:
    return hashlib.sha256(f"{p.a}\t{p.b}".encode()).hexdigest()[:12]


def read_verdicts(path: Path, calib: dict[int, D.Pair]) -> dict[int, str]:
    out = {}
    if not path.exists():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 3 or not cols[0].isdigit():
            raise SystemExit(f"{path.name}:{n}: expected INDEX<TAB>HASH<TAB>VERDICT")
        idx, h, v = cols
        if int(idx) in out:
            raise SystemExit(f"{path.name}:{n}: pair {idx} judged twice")
        p = calib.get(int(idx))
        if p is None or pair_hash(p) != h:
            raise SystemExit(f"{path.name}: pair {idx} is not the one judged (another qqp-dev.tsv?)")
        if v not in ("same", "different", "unclear"):
            raise SystemExit(f"{path.name}: pair {idx}: unknown verdict {v!r}")
        out[int(idx)] = v
    return out


def top(scores: np.ndarray, y: np.ndarray, recall: float) -> np.ndarray:
    """The indices ranked above the point where `recall` of the positives is reached."""
    order = np.argsort(-scores, kind="stable")
    need = int(np.ceil(recall * y.sum()))
    reached = np.cumsum(y[order]) >= need
    return order[: int(np.argmax(reached)) + 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, action="append")
    ap.add_argument("--list", action="store_true", help="print the pairs still to judge, blind")
    ap.add_argument("--verdicts", type=Path, default=VERDICTS,
                    help="the verdict file to read (a new name lists every pair for a second reader)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    calib = [p for p in D.file_pairs("qqp", None) if p.index % 4 == 2]
    by_index = {p.index: p for p in calib}
    verdicts = read_verdicts(args.verdicts, by_index)
    y = np.array([p.y for p in calib])
    C.embeddings().ensure({t for p in calib for t in (p.a, p.b)})
    tok = C.tokenizer()
    ranked = {}
    for w in args.weights or [C.OUT]:
        from safetensors import safe_open
        with safe_open(str(w), "np") as f:
            layers = int((f.metadata() or {}).get("layers", "6"))
        model = C.build(torch, layers)
        C.load(model, torch, w)
        ranked[w] = C.score(model, tok, calib)
    wanted = sorted({calib[i].index for s in ranked.values() for i in top(s, y, max(RECALLS))})
    if args.list:
        todo = sorted((i for i in wanted if i not in verdicts), key=lambda i: pair_hash(by_index[i]))
        for i in todo:
            p = by_index[i]
            print(f"{i}\t{pair_hash(p)}\t{p.a}\t{p.b}")
        print(f"{len(todo)} of {len(wanted)} pairs to judge", file=sys.stderr)
        return
    missing = [i for i in wanted if i not in verdicts]
    if missing:
        raise SystemExit(f"{len(missing)} pairs above recall 0.30 have no verdict: run --list")
    print("| weights | recall (labels) | hits | precision by labels | by hand verdicts (unclear as wrong / as right) "
          "| labeled different, judged same | labeled same, judged different / unclear |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for w, s in ranked.items():
        for r in RECALLS:
            hits = [calib[i] for i in top(s, y, r)]
            v = [verdicts[p.index] for p in hits]
            n = len(hits)
            same = sum(x == "same" for x in v)
            unclear = sum(x == "unclear" for x in v)
            labeled = sum(p.y for p in hits)
            flipped_up = sum(p.y == 0 and x == "same" for p, x in zip(hits, v))
            flipped_down = sum(p.y == 1 and x == "different" for p, x in zip(hits, v))
            unclear_pos = sum(p.y == 1 and x == "unclear" for p, x in zip(hits, v))
            print(f"| {w.name} | {r:.2f} | {n} | {labeled / n:.3f} | "
                  f"{same / n:.3f} / {(same + unclear) / n:.3f} | {flipped_up} | {flipped_down} / {unclear_pos} |")


if __name__ == "__main__":
    main()
