#!/usr/bin/env python3
"""Trains the semantic-cache pair verifier (see README.md) on the EVEN half of qqp-dev.tsv and
stsb-dev.tsv, traps-train.tsv and more traps generated from the even half (hard negatives
mined from the even half are available but weighted 0: they hurt in CV); chooses
hyperparameters by cross-validation within the even half; evaluates on the ODD half and
traps-eval.tsv; exports verifier.safetensors, reference.json and metrics.json.

    OMP_NUM_THREADS=1 /tmp/vvenv/bin/python train.py            # CV over the grid, final fit, eval, export
    ... train.py --no-cv                                         # final fit with the defaults only
    ... train.py --eval-only                                     # evaluate the exported weights
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import data as D  # noqa: E402
import lexical  # noqa: E402
import traps  # noqa: E402
from model import N_FEAT, build_torch, forward_np  # noqa: E402

OUT = HERE / "verifier.safetensors"
REF = HERE / "reference.json"
METRICS = HERE / "metrics.json"

DEFAULT = dict(d=64, h=64, m=32, drop=0.3, feat_drop=0.3, wd=1e-2, lr=2e-3, epochs=8,
               batch=64, qqp_w=2.0, stsb_w=1.0, trap_w=1.0, mined_w=0.0, use_feats=True,
               veto=False, lin_l2=1e-3, lin_src="real")
GRID = [
    {},
    dict(d=32, h=32, m=16, drop=0.1),
    dict(drop=0.3, trap_w=0.5),
]


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------


def pr_points(scores: np.ndarray, y: np.ndarray):
    """Precision and recall at every cut (accept score >= scores[k]), highest first."""
    order = np.argsort(-scores, kind="stable")
    s, yy = scores[order], y[order]
    tp = np.cumsum(yy)
    n = np.arange(1, len(s) + 1)
    # Ties: only cut where the next score differs.
    last = np.r_[s[1:] != s[:-1], True]
    return s[last], tp[last] / n[last], tp[last] / max(yy.sum(), 1)


def precision_at_recall(scores, y, r=0.30):
    """Precision at the highest threshold whose recall reaches r (no interpolation)."""
    t, p, rec = pr_points(scores, y)
    k = int(np.argmax(rec >= r))
    return float(p[k]), float(t[k]), float(rec[k])


def threshold_for_precision(scores, y, target=0.95, min_hits=20):
    """The lowest threshold such that it and every threshold above it (once min_hits pairs are
    accepted) keep precision >= target: the even-half tuning rule."""
    t, p, rec = pr_points(scores, y)
    best = float(t[0]) + 1e-6
    for k in range(len(t)):
        n = int((scores >= t[k]).sum())
        if p[k] < target and n >= min_hits:
            break
        best = float(t[k])
    return best


def at_threshold(scores, y, t):
    acc = scores >= t
    hits = int(acc.sum())
    tp = int((acc & (y == 1)).sum())
    return dict(threshold=float(t), precision=tp / hits if hits else 1.0,
                recall=tp / max(int(y.sum()), 1), accepted=hits)


def paraphrase_threshold(scores, y, accept=0.80):
    """The highest threshold accepting >= `accept` of the label-1 rows."""
    pos = np.sort(scores[y == 1])[::-1]
    k = int(math.ceil(accept * len(pos))) - 1
    return float(pos[k])


def trap_report(scores, pairs, t):
    y = np.array([p.y for p in pairs])
    kinds = sorted({p.kind for p in pairs})
    acc = scores >= t
    out = dict(threshold=float(t), paraphrase_accept=float(acc[y == 1].mean()),
               trap_hit_rate=float(acc[y == 0].mean()), per_kind={})
    for k in kinds:
        m = np.array([p.kind == k for p in pairs])
        out["per_kind"][k] = dict(n=int(m.sum()), accepted=float(acc[m].mean()))
    return out


def auc(scores, y):
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    npos = y.sum()
    nneg = len(y) - npos
    return float((ranks[y == 1].sum() - npos * (npos + 1) / 2) / max(npos * nneg, 1))


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


class Batcher:
    def __init__(self, pairs, states, feats):
        self.pairs = pairs
        self.A = [states.tokens(p.a).astype(np.float32) for p in pairs]
        self.B = [states.tokens(p.b).astype(np.float32) for p in pairs]
        self.f = feats.astype(np.float32)
        self.y = np.array([p.y for p in pairs], np.float32)
        self.src = np.array([p.src for p in pairs])
        self.w = np.ones(len(pairs), np.float32)

    def set_weights(self, hp):
        """Training weight of each pair by its source."""
        per = {"qqp": hp["qqp_w"], "stsb": hp["stsb_w"], "trap": hp["trap_w"], "mined": hp["mined_w"]}
        self.w = np.array([per[s] for s in self.src], np.float32)

    def batch(self, idx, swap=None):
        import torch

        def pad(xs):
            T = max(len(x) for x in xs)
            X = np.zeros((len(xs), T, 384), np.float32)
            M = np.zeros((len(xs), T), np.float32)
            for i, x in enumerate(xs):
                X[i, : len(x)] = x
                M[i, : len(x)] = 1
            return torch.from_numpy(X), torch.from_numpy(M)

        A, ma = pad([self.A[i] for i in idx])
        B, mb = pad([self.B[i] for i in idx])
        return (A, ma, B, mb, torch.from_numpy(self.f[idx]), torch.from_numpy(self.y[idx]),
                torch.from_numpy(self.w[idx]))


def token_stats(bt: Batcher, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(bt.A), min(n, len(bt.A)), replace=False)
    X = np.concatenate([bt.A[i] for i in idx] + [bt.B[i] for i in idx])
    return X.mean(0), X.std(0) + 1e-3


def fit_linear(model, bt: Batcher, idx: np.ndarray, hp: dict):
    import torch
    if hp["lin_src"] == "real":
        # Only the labeled file pairs: keeps the cosine-led ranking that suits real questions.
        idx = idx[np.isin(bt.src[idx], ["qqp", "stsb"])]
    X = torch.tensor(bt.f[idx], dtype=torch.float64)
    y = torch.tensor(bt.y[idx], dtype=torch.float64)
    w = torch.tensor(bt.w[idx], dtype=torch.float64)
    beta = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b0 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta, b0], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(X @ beta + b0, y, reduction="none")
                * w).sum() / w.sum() + hp["lin_l2"] * (beta ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        model.lin.weight.copy_(beta.float().unsqueeze(0))
        model.lin.bias.copy_(b0.float())
    model.lin.weight.requires_grad_(False)
    model.lin.bias.requires_grad_(False)


def fit(bt: Batcher, idx: np.ndarray, hp: dict, seed: int = 0, log=False):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    bt.set_weights(hp)
    idx = idx[bt.w[idx] > 0]
    Head = build_torch()
    mu, sd = token_stats(bt)
    model = Head(hp["d"], hp["h"], hp["m"], hp["drop"], hp["feat_drop"],
                 torch.tensor(mu, dtype=torch.float32), torch.tensor(sd, dtype=torch.float32),
                 hp["use_feats"], hp["veto"])
    # Stage 1: the logistic regression on the 11 features, fitted to convergence (L-BFGS),
    # then frozen; stage 2 trains the network as a correction on top of it, starting at zero.
    fit_linear(model, bt, idx, hp)
    torch.nn.init.zeros_(model.mlp2.weight)
    torch.nn.init.zeros_(model.mlp2.bias)
    params = [p for n, p in model.named_parameters() if not n.startswith("lin.")]
    opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["wd"])
    steps = hp["epochs"] * math.ceil(len(idx) / hp["batch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], total_steps=steps, pct_start=0.1)
    # Sort each epoch's shuffled indices into length buckets (less padding).
    lens = np.array([max(len(bt.A[i]), len(bt.B[i])) for i in range(len(bt.A))])
    model.train()
    for ep in range(hp["epochs"]):
        t0 = time.time()
        perm = rng.permutation(idx)
        chunks = [perm[i:i + hp["batch"] * 20] for i in range(0, len(perm), hp["batch"] * 20)]
        batches = []
        for c in chunks:
            c = c[np.argsort(lens[c], kind="stable")]
            batches += [c[i:i + hp["batch"]] for i in range(0, len(c), hp["batch"])]
        rng.shuffle(batches)
        tot = 0.0
        for b in batches:
            A, ma, B, mb, f, y, w = bt.batch(b)
            logit = model(A, ma, B, mb, f)
            loss = (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * w).sum() / w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss) * len(b)
        if log:
            print(f"    epoch {ep + 1}: loss {tot / len(idx):.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    return model


def predict(model, bt: Batcher, idx=None, batch=256):
    import torch
    idx = np.arange(len(bt.A)) if idx is None else idx
    out = np.zeros(len(idx), np.float32)
    lens = np.array([max(len(bt.A[i]), len(bt.B[i])) for i in idx])
    order = np.argsort(lens, kind="stable")
    with torch.no_grad():
        for s in range(0, len(idx), batch):
            sel = order[s:s + batch]
            A, ma, B, mb, f, *_ = bt.batch(idx[sel])
            out[sel] = model(A, ma, B, mb, f).numpy()
    return out


def fold_of(p: D.Pair, k: int, real: set[str] = frozenset()) -> int:
    """Folds by source question: a file pair by its text1, a trap by its real (unaltered) side,
    so every trap made from one question lands in the same fold."""
    if p.src in ("qqp", "stsb"):
        key = p.a
    elif p.a in real or p.b in real:
        key = p.a if p.a in real else p.b
    else:
        key = min(p.a, p.b)
    return int(hashlib.md5(key.encode()).hexdigest(), 16) % k


def summary(scores, pairs):
    """The CV objective's parts for one set of out-of-fold scores."""
    y = np.array([p.y for p in pairs])
    m_qqp = np.array([p.src == "qqp" for p in pairs])
    m_stsb = np.array([p.src == "stsb" for p in pairs])
    m_trap = np.array([p.src == "trap" for p in pairs])
    out = {}
    out["qqp_p@r30"], *_ = precision_at_recall(scores[m_qqp], y[m_qqp])
    out["qqp_auc"] = auc(scores[m_qqp], y[m_qqp])
    out["stsb_auc"] = auc(scores[m_stsb], y[m_stsb])
    # Traps against the file duplicates of the same half as paraphrases, like traps-eval.tsv.
    m_para = (m_trap & (y == 1)) | ((m_qqp | m_stsb) & (y == 1))
    t = paraphrase_threshold(scores[m_para], y[m_para])
    out["trap_hit@80"] = float((scores[m_trap & (y == 0)] >= t).mean())
    out["objective"] = out["qqp_p@r30"] + out["qqp_auc"] + out["stsb_auc"] - out["trap_hit@80"]
    return out


# ---------------------------------------------------------------------------------------
# Evaluation on the odd half
# ---------------------------------------------------------------------------------------


def evaluate(name, score_fn, odd_qqp, odd_stsb, ev_traps, thresholds, veto=None):
    """score_fn(pairs) -> scores. Prints and returns the figures."""
    res = {"name": name}
    lines = [f"\n### {name}\n"]
    for label, ps in (("QQP odd", odd_qqp), ("STS-B odd", odd_stsb)):
        s = score_fn(ps)
        if veto is not None:
            s = np.where(veto(ps), -np.inf, s)
        y = np.array([p.y for p in ps])
        p30, t30, r30 = precision_at_recall(s, y, 0.30)
        curve = []
        for r in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
            p, t, rr = precision_at_recall(s, y, r)
            curve.append(dict(recall=r, precision=p, threshold=t))
        fixed = at_threshold(s, y, thresholds["precision95"])
        res[label] = dict(pairs=len(ps), positives=int(y.sum()), auc=auc(np.nan_to_num(s, neginf=-1e9), y),
                          precision_at_recall30=p30, threshold_at_recall30=t30, curve=curve,
                          at_even_threshold=fixed)
        lines.append(f"{label}: {len(ps)} pairs, {int(y.sum())} duplicates; AUC {res[label]['auc']:.3f}; "
                     f"precision at recall 0.30: {p30:.3f} (threshold {t30:.3f})")
        lines.append("  curve (recall: precision @ threshold): " + ", ".join(
            f"{c['recall']:.1f}: {c['precision']:.3f} @ {c['threshold']:.2f}" for c in curve))
        lines.append(f"  at the even-half threshold for precision 0.95 ({fixed['threshold']:.3f}): "
                     f"precision {fixed['precision']:.3f}, recall {fixed['recall']:.3f}, accepted {fixed['accepted']}")
    s = score_fn(ev_traps)
    if veto is not None:
        s = np.where(veto(ev_traps), -np.inf, s)
    y = np.array([p.y for p in ev_traps])
    t80 = paraphrase_threshold(s, y, 0.80)
    tr = trap_report(s, ev_traps, t80)
    tr_fixed = trap_report(s, ev_traps, thresholds["paraphrase80"])
    res["traps"] = dict(at_odd_80=tr, at_even_threshold=tr_fixed)
    lines.append(f"traps-eval: {int((y == 0).sum())} traps, {int(y.sum())} paraphrases. At the threshold "
                 f"accepting 80 % of its paraphrases ({t80:.3f}): trap hit rate {tr['trap_hit_rate']:.3f}")
    lines.append("  per kind (accepted share): " + ", ".join(
        f"{k} {v['accepted']:.2f}" for k, v in tr["per_kind"].items()))
    lines.append(f"  at the even-half threshold ({thresholds['paraphrase80']:.3f}): paraphrases accepted "
                 f"{tr_fixed['paraphrase_accept']:.3f}, trap hit rate {tr_fixed['trap_hit_rate']:.3f}")
    print("\n".join(lines), flush=True)
    return res


def even_thresholds(scores, pairs):
    """Thresholds chosen on even-half (out-of-fold) scores, then applied to the odd half."""
    y = np.array([p.y for p in pairs])
    m_qqp = np.array([p.src == "qqp" for p in pairs])
    m_trap = np.array([p.src == "trap" for p in pairs])
    m_para = (m_trap | ((np.array([p.src in ("qqp", "stsb") for p in pairs])))) & (y == 1)
    return dict(precision95=threshold_for_precision(scores[m_qqp], y[m_qqp], 0.95),
                paraphrase80=paraphrase_threshold(scores[m_para], y[m_para], 0.80))


# ---------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------


def export(W: dict, hp: dict, thresholds: dict, path: Path):
    meta = {
        "format": "quartermaster-pair-verifier-v1",
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 final layer token states",
        "max_tokens_per_side": str(D.MAX_HEAD_TOKENS),
        "d": str(W["proj_w"].shape[0]), "h": str(W["cmp_w"].shape[0]), "m": str(W["mlp1_w"].shape[0]),
        "features": ",".join(lexical.FEATURE_NAMES),
        "threshold_precision95": f"{thresholds['precision95']:.6f}",
        "threshold_paraphrase80": f"{thresholds['paraphrase80']:.6f}",
        "hyperparameters": json.dumps(hp, sort_keys=True),
    }
    write_safetensors({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in W.items()}, path, meta)


def write_safetensors(tensors: dict[str, np.ndarray], path: Path, meta: dict[str, str]):
    """A safetensors file with tensors and header keys in sorted order, so the same weights
    always give the same bytes (the library's writer orders its metadata at random)."""
    header: dict = {"__metadata__": dict(sorted(meta.items()))}
    blobs, off = [], 0
    for k in sorted(tensors):
        b = tensors[k].astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(tensors[k].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def load_weights(path: Path = OUT):
    from safetensors import safe_open
    with safe_open(str(path), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def reference_pairs(ev_traps, odd_qqp, odd_stsb):
    """~20 pairs for the Rust parity test: one per traps-eval kind, some odd QQP and STS-B pairs,
    and three hand-written ones."""
    picks = []
    rng = np.random.default_rng(1)
    kinds = {}
    for p in ev_traps:
        kinds.setdefault(p.kind, []).append(p)
    for k in sorted(kinds):
        picks.append(kinds[k][int(rng.integers(len(kinds[k])))])
    picks += odd_qqp[1:60:10] + odd_stsb[:1]
    picks += [D.Pair("flights from New York to Florida", "flights from Florida to New York", 0, "manual", "direction"),
              D.Pair("How do I sort a list in Python?", "How do I sort a list in Rust?", 0, "manual", "target"),
              D.Pair("How do I learn Python?", "What is the best way to learn Python?", 1, "manual", "paraphrase")]
    return picks


def make_reference(W, pairs_by_kind, path: Path):
    """Expected logits from a fresh float32 MiniLM pass (training read float16-rounded states)."""
    from minilm import MiniLM
    enc = MiniLM()
    rows = []
    for p in pairs_by_kind:
        (A, ea), (B, eb) = enc.encode_one(p.a), enc.encode_one(p.b)
        A, B = A[: D.MAX_HEAD_TOKENS], B[: D.MAX_HEAD_TOKENS]
        cos = float(ea @ eb)
        f = lexical.features(p.a, p.b, cos)
        rows.append(dict(text1=p.a, text2=p.b, label=p.y, kind=p.kind or p.src,
                         tokens1=len(A), tokens2=len(B), cosine=round(cos, 6),
                         features=[round(x, 6) for x in f],
                         logit=round(forward_np(W, A, B, np.array(f, np.float32)), 5)))
    path.write_text(json.dumps({"model": "verifier.safetensors",
                                "note": "logit from model.forward_np; features from lexical.features with "
                                        "f[0] = cosine of the MiniLM embeddings; tokens = head input rows",
                                "items": rows}, indent=1, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-cv", action="store_true", help="skip the cross-validation grid")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--grid", type=str, default="", help="comma-separated grid entries to run (default all)")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--reference-only", action="store_true",
                    help="only rewrite reference.json from the exported weights")
    ap.add_argument("--no-mine", action="store_true")
    ap.add_argument("--extra-traps", type=float, default=4.0,
                    help="also train on traps made from the even half with caps scaled by this (0 = none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", type=str, default="", help="override defaults: key=value,...")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)

    hp = dict(DEFAULT)
    for kv in filter(None, args.set.split(",")):
        k, v = kv.split("=")
        hp[k] = type(DEFAULT[k])(v) if not isinstance(DEFAULT[k], bool) else v.lower() in ("1", "true")

    t0 = time.time()
    even = D.file_pairs("qqp", 0) + D.file_pairs("stsb", 0)
    odd_qqp, odd_stsb = D.file_pairs("qqp", 1), D.file_pairs("stsb", 1)
    tr_traps = [p for p in D.trap_pairs("train") if not p.kind.startswith("dup_")]
    if args.extra_traps > 0:
        # More traps and rewrites from the even half (another seed, larger caps), for training only.
        have = {(p.a, p.b) for p in tr_traps} | {(p.b, p.a) for p in tr_traps}
        extra = [D.Pair(a, b, y, "trap", k) for a, b, y, k in
                 traps.generate(0, D.DATA / "qqp-dev.tsv", D.DATA / "stsb-dev.tsv", traps.SEED + 1,
                                args.extra_traps)
                 if not k.startswith("dup_") and (a, b) not in have]
        tr_traps += extra
    ev_traps = D.trap_pairs("eval")
    if args.reference_only:
        W, _ = load_weights()
        make_reference(W, reference_pairs(ev_traps, odd_qqp, odd_stsb), REF)
        print(f"wrote {REF.name}")
        return
    states = D.States()
    states.ensure({t for ps in (even, odd_qqp, odd_stsb, tr_traps, ev_traps) for p in ps for t in (p.a, p.b)})
    mined = [] if args.no_mine else D.mine_negatives(even, states)
    train = even + tr_traps + mined
    print(f"train: {len(even)} even pairs ({sum(p.y for p in even)} dup), {len(tr_traps)} traps/rewrites, "
          f"{len(mined)} mined negatives; odd: {len(odd_qqp)} QQP, {len(odd_stsb)} STS-B, "
          f"{len(ev_traps)} traps-eval  ({time.time() - t0:.0f} s)", flush=True)

    def feats(ps):
        return D.lexical_features(ps, states)

    bt = Batcher(train, states, feats(train))
    cache_bt = {}

    def bt_for(name, ps):
        if name not in cache_bt:
            cache_bt[name] = Batcher(ps, states, feats(ps))
        return cache_bt[name]

    results = {"hyperparameters": hp, "cv": []}
    real = {p.a for p in even} | {p.b for p in even}
    folds = np.array([fold_of(p, args.folds, real) for p in train])
    oof = None
    if not args.eval_only and not args.no_cv:
        grid = GRID if not args.grid else [GRID[int(i)] for i in args.grid.split(",")]
        best = None
        for g in grid:
            h = dict(hp, **g)
            o = np.zeros(len(train), np.float32)
            t1 = time.time()
            for k in range(args.folds):
                tr_idx = np.where(folds != k)[0]
                te_idx = np.where(folds == k)[0]
                m = fit(bt, tr_idx, h, seed=args.seed + k)
                o[te_idx] = predict(m, bt, te_idx)
            sm = summary(o, train)
            results["cv"].append(dict(change=g, **sm))
            print(f"  CV {g or 'defaults'}: " + ", ".join(f"{k} {v:.3f}" for k, v in sm.items())
                  + f"  ({time.time() - t1:.0f} s)", flush=True)
            if best is None or sm["objective"] > best[0]:
                best = (sm["objective"], h, o)
        hp = best[1]
        oof = best[2]
        results["hyperparameters"] = hp
        print(f"chosen: {hp}", flush=True)

    if args.eval_only:
        W, meta = load_weights()
        thresholds = dict(precision95=float(meta["threshold_precision95"]),
                          paraphrase80=float(meta["threshold_paraphrase80"]))
    else:
        if oof is None:
            # Thresholds still come from out-of-fold even scores.
            oof = np.zeros(len(train), np.float32)
            for k in range(args.folds):
                tr_idx = np.where(folds != k)[0]
                te_idx = np.where(folds == k)[0]
                m = fit(bt, tr_idx, hp, seed=args.seed + k)
                oof[te_idx] = predict(m, bt, te_idx)
            sm = summary(oof, train)
            print("  CV (chosen): " + ", ".join(f"{k} {v:.3f}" for k, v in sm.items()), flush=True)
        thresholds = even_thresholds(oof, train)
        print(f"thresholds from even out-of-fold scores: {thresholds}", flush=True)
        t1 = time.time()
        model = fit(bt, np.arange(len(train)), hp, seed=args.seed, log=True)
        print(f"final fit: {time.time() - t1:.0f} s", flush=True)
        W = model.export()
        export(W, hp, thresholds, OUT)
        # Parity: the numpy reference against torch on a sample.
        sample = ev_traps[::60] + odd_qqp[::100]
        sb = bt_for("parity", sample)
        tt = predict(model, sb)
        npv = np.array([forward_np(W, sb.A[i], sb.B[i], sb.f[i]) for i in range(len(sample))])
        print(f"numpy forward vs torch: max abs diff {np.abs(tt - npv).max():.2e} over {len(sample)} pairs")

    def head_scores(ps):
        key = f"n{len(ps)}:{ps[0].a[:20]}"
        b = bt_for(key, ps)
        return np.array([forward_np(W, b.A[i], b.B[i], b.f[i]) for i in range(len(ps))], np.float32)

    def cos_scores(ps):
        return np.array([states.cos(p.a, p.b) for p in ps], np.float32)

    def veto(ps):
        return D.rule_veto(ps)

    even_cos = cos_scores(train)
    cos_thr = even_thresholds(even_cos, train)
    cos_thr_rules = even_thresholds(np.where(veto(train), -np.inf, even_cos), train)
    res = [
        evaluate("cosine only (baseline)", cos_scores, odd_qqp, odd_stsb, ev_traps, cos_thr),
        evaluate("cosine + rule checks (current gateway)", cos_scores, odd_qqp, odd_stsb, ev_traps,
                 cos_thr_rules, veto),
        evaluate("learned head (logit)", head_scores, odd_qqp, odd_stsb, ev_traps, thresholds),
        evaluate("learned head + rule checks veto", head_scores, odd_qqp, odd_stsb, ev_traps, thresholds, veto),
    ]
    results["eval"] = res
    results["thresholds"] = thresholds
    if not args.eval_only:
        W_n = sum(v.size for v in W.values())
        results["parameters"] = int(W_n)
        print(f"\nparameters: {W_n} ({OUT.stat().st_size} bytes as float32 safetensors)")
        picks = reference_pairs(ev_traps, odd_qqp, odd_stsb)
        make_reference(W, picks, REF)
        print(f"wrote {OUT.name}, {REF.name} ({len(picks)} pairs)")
    if not args.eval_only:
        METRICS.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
