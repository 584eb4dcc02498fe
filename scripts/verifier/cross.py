"""Train the semantic cache's cross-encoder verifier: all-MiniLM-L6-v2 reading both questions
together ("[CLS] cached [SEP] query [SEP]", token types 0 and 1), fine-tuned with low-rank
adapters (LoRA) on every linear layer, the layer norms, the token-type embeddings and a linear
head on the [CLS] state. Only those small tensors are exported (models/verifier/cross.safetensors,
~1.4 MB, compiled into the gateway);
the gateway merges the adapters into the MiniLM weights that models/fetch.sh already fetched.

Splits (pairs indexed 0.. in file order after the header, as in src/cli/eval_cache/mod.rs):
  train        index % 4 == 0 of qqp-dev.tsv and stsb-dev.tsv, the even half's traps and
               rewrites except those made from a calibration-quarter question, and
               nearest-neighbour negatives mined from those pairs; with --external, the
               Quora pairs of external.py that share no question with either dev file
  calibration  index % 4 == 2 (never trained on): the thresholds and the error bound's table
  evaluation   the odd half and traps-eval.tsv (never trained or tuned on)

    /tmp/vvenv/bin/python cross.py            # train (about 18 min on 2 cores), evaluate, export
    /tmp/vvenv/bin/python cross.py --external --epochs 1 --out /tmp/cross-ext.safetensors
                                              # + 26k outside Quora pairs (external.py --fetch first)
    /tmp/vvenv/bin/python cross.py --eval-only
    /tmp/vvenv/bin/python cross.py --reference  # tests/fixtures/cross_verifier_reference.json
"""
from __future__ import annotations

import argparse
import json
import math
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import data as D  # noqa: E402
import traps  # noqa: E402
import external as E  # noqa: E402
import train as T  # noqa: E402

MODEL = HERE.parent.parent / "models" / "all-MiniLM-L6-v2"
OUT = HERE.parent.parent / "models" / "verifier" / "cross.safetensors"
# Pairs written for the parity test (no dataset text), with the logits this script gives them.
REF = HERE.parent.parent / "tests" / "fixtures" / "cross_verifier_reference.json"
REF_PAIRS = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("How do I reset my password?", "How do I change my username?"),
    ("How do I reset my password?", "How do I change my password?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("What is the capital of France?", "What is the capital of Spain?"),
    ("Flights from New York to Boston", "Flights from Boston to New York"),
    ("Is it safe to run the migration twice?", "Is it unsafe to run the migration twice?"),
    ("How many vacation days do new employees get?", "How many vacation days do new hires get?"),
    ("How do I sort a list in Python?", "How do I sort a list in Rust?"),
    ("What are the top 5 reasons to learn Go?", "What are the top 10 reasons to learn Go?"),
    ("Why is the sky blue?", "Why does the sky look blue during the day?"),
    ("Summarise the quarterly revenue report for the board, highlighting risks and the outlook for next year in three short bullet points.",
     "Give the board a summary of the quarterly revenue report: three short bullets on risks and next year's outlook."),
    ("a", "b"),
]
MAX_LEN = 128
RANK, ALPHA = 8, 16.0
LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value",
           "attention.output.dense", "intermediate.dense", "output.dense")


def tokenizer():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_LEN)  # longest-first over the pair, as the gateway does
    return tok


def build(torch, layers: int = 6):
    nn = torch.nn
    from safetensors.numpy import load_file
    W = {k: torch.from_numpy(v.copy()) for k, v in load_file(str(MODEL / "model.safetensors")).items()}

    class LoRA(nn.Module):
        def __init__(self, name):
            super().__init__()
            w, b = W[name + ".weight"], W[name + ".bias"]
            self.register_buffer("w", w)
            self.register_buffer("b", b)
            out_f, in_f = w.shape
            self.a = nn.Parameter(torch.randn(RANK, in_f) / math.sqrt(in_f))
            self.bb = nn.Parameter(torch.zeros(out_f, RANK))

        def forward(self, x):
            return x @ self.w.T + self.b + (x @ self.a.T) @ self.bb.T * (ALPHA / RANK)

    def ln(name):
        m = nn.LayerNorm(384, eps=1e-12)
        m.weight.data.copy_(W[name + ".weight"])
        m.bias.data.copy_(W[name + ".bias"])
        return m

    class Layer(nn.Module):
        def __init__(self, i):
            super().__init__()
            p = f"encoder.layer.{i}."
            self.lin = nn.ModuleDict({n.replace(".", "_"): LoRA(p + n) for n in LINEARS})
            self.ln1 = ln(p + "attention.output.LayerNorm")
            self.ln2 = ln(p + "output.LayerNorm")

        def forward(self, x, bias):
            B, L, _ = x.shape
            heads = lambda t: t.view(B, L, 12, 32).transpose(1, 2)  # noqa: E731
            q = heads(self.lin["attention_self_query"](x))
            k = heads(self.lin["attention_self_key"](x))
            v = heads(self.lin["attention_self_value"](x))
            att = (q @ k.transpose(-1, -2)) / math.sqrt(32) + bias
            ctx = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, L, 384)
            x = self.ln1(x + self.lin["attention_output_dense"](ctx))
            h = torch.nn.functional.gelu(self.lin["intermediate_dense"](x))
            return self.ln2(x + self.lin["output_dense"](h))

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("word", W["embeddings.word_embeddings.weight"])
            self.register_buffer("pos", W["embeddings.position_embeddings.weight"])
            self.types = nn.Parameter(W["embeddings.token_type_embeddings.weight"].clone())
            self.ln0 = ln("embeddings.LayerNorm")
            self.layers = nn.ModuleList([Layer(i) for i in range(layers)])
            self.head = nn.Linear(384, 1)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            # The bi-encoder's cosine (which the cache computed to find the candidate) enters
            # the logit linearly: the pair reading starts as a correction to it.
            self.cos_w = nn.Parameter(torch.tensor(0.0))
            self.cos_b = nn.Parameter(torch.tensor(0.0))
            self.drop = nn.Dropout(0.1)

        def forward(self, ids, types, mask, cos):
            L = ids.shape[1]
            x = self.word[ids] + self.pos[:L][None] + self.types[types]
            x = self.drop(self.ln0(x))
            bias = (1.0 - mask[:, None, None, :].float()) * -1e4
            for layer in self.layers:
                x = layer(x, bias)
            return self.head(self.drop(x[:, 0])).squeeze(-1) + self.cos_w * cos + self.cos_b

    return Cross()


class Embeddings:
    """The base MiniLM's pooled, L2-normalised embeddings (what the cache's search compares),
    computed in length-sorted batches with torch (truncation at 256 tokens, as the gateway's
    embedder) and cached on disk. `--check-embeddings` compares them with minilm.py."""

    def __init__(self, name: str = "cross-embeddings.pkl"):
        D.CACHE.mkdir(parents=True, exist_ok=True)
        self.path = D.CACHE / name
        self.d: dict[str, np.ndarray] = {}
        if self.path.exists():
            with open(self.path, "rb") as f:
                self.d = pickle.load(f)

    def ensure(self, texts):
        import torch
        todo = sorted({t for t in texts if t not in self.d}, key=len)
        if not todo:
            return
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(256)
        # The adapters start at zero, so this is the base model; building it draws random
        # adapter weights, which must not move the training's random stream.
        with torch.random.fork_rng():
            base = build(torch).eval()
        t0 = time.time()
        with torch.no_grad():
            for k in range(0, len(todo), 128):
                chunk = todo[k:k + 128]
                enc = [tok.encode(t).ids for t in chunk]
                L = max(len(e) for e in enc)
                ids = torch.zeros(len(chunk), L, dtype=torch.long)
                mask = torch.zeros(len(chunk), L)
                for r, e in enumerate(enc):
                    ids[r, :len(e)] = torch.tensor(e)
                    mask[r, :len(e)] = 1
                x = base.ln0(base.word[ids] + base.pos[:L][None] + base.types[0])
                bias = (1.0 - mask[:, None, None, :]) * -1e4
                for layer in base.layers:
                    x = layer(x, bias)
                pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                for t, e in zip(chunk, pooled):
                    self.d[t] = e.astype(np.float32)
                if (k // 128) % 40 == 39:
                    print(f"  embedded {k + len(chunk)}/{len(todo)} ({time.time() - t0:.0f} s)", flush=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(self.d, f, protocol=4)
        tmp.replace(self.path)

    def emb(self, t: str) -> np.ndarray:
        return self.d[t]

    def cos(self, a: str, b: str) -> float:
        return float(self.emb(a) @ self.emb(b))


EMB = None


def embeddings() -> Embeddings:
    global EMB
    if EMB is None:
        EMB = Embeddings()
    return EMB


def cosine(a: str, b: str) -> float:
    """The base MiniLM's cosine of the two texts (what the cache's search reports)."""
    e = embeddings()
    e.ensure([a, b])
    return e.cos(a, b)


def encode(tok, pairs, swap=False):
    """Token ids for "[CLS] cached [SEP] query [SEP]" (the pairs' text1 is the cached side)
    and the pair's cosine."""
    emb = embeddings()
    emb.ensure({t for p in pairs for t in (p.a, p.b)})
    out = []
    for p in pairs:
        a, b = (p.b, p.a) if swap else (p.a, p.b)
        e = tok.encode(a, b)
        out.append((e.ids, e.type_ids, emb.cos(p.a, p.b)))
    return out


def batches(enc, idx, size):
    """enc: (ids, type_ids, cosine) per pair."""
    import torch
    idx = sorted(idx, key=lambda i: len(enc[i][0]))
    chunks = [idx[k:k + size] for k in range(0, len(idx), size)]
    for ch in chunks:
        L = max(len(enc[i][0]) for i in ch)
        ids = torch.zeros(len(ch), L, dtype=torch.long)
        types = torch.zeros(len(ch), L, dtype=torch.long)
        mask = torch.zeros(len(ch), L, dtype=torch.long)
        for r, i in enumerate(ch):
            n = len(enc[i][0])
            ids[r, :n] = torch.tensor(enc[i][0])
            types[r, :n] = torch.tensor(enc[i][1])
            mask[r, :n] = 1
        yield ch, ids, types, mask, torch.tensor([enc[i][2] for i in ch], dtype=torch.float32)


def score(model, tok, pairs, both_orders=False):
    import torch
    model.eval()
    out = np.zeros(len(pairs), np.float32)
    with torch.no_grad():
        for swap in ((False, True) if both_orders else (False,)):
            enc = encode(tok, pairs, swap)
            for ch, ids, types, mask, cos in batches(enc, range(len(pairs)), 64):
                out[ch] += model(ids, types, mask, cos).numpy()
    return out / (2 if both_orders else 1)


def splits(extra_scale: float, external: bool, trap_weight: float = 1.0):
    quarter = lambda name, r: [p for p in D.file_pairs(name, None) if p.index % 4 == r]  # noqa: E731
    train = quarter("qqp", 0) + quarter("stsb", 0)
    calib = quarter("qqp", 2) + quarter("stsb", 2)
    for p in train:
        p.w = 2.0 if p.src == "qqp" else 1.0
    tr_traps = [p for p in D.trap_pairs("train") if not p.kind.startswith("dup_")]
    have = {(p.a, p.b) for p in tr_traps} | {(p.b, p.a) for p in tr_traps}
    if extra_scale > 0:
        tr_traps += [D.Pair(a, b, y, "trap", k) for a, b, y, k in
                     traps.generate(0, D.DATA / "qqp-dev.tsv", D.DATA / "stsb-dev.tsv", traps.SEED + 1,
                                    extra_scale)
                     if not k.startswith("dup_") and (a, b) not in have]
    # The trap generator reads every even-numbered pair, so some traps are altered copies
    # of calibration-quarter questions: those are left out, so the bar is calibrated on
    # questions the verifier never saw in any form.
    held = {traps.clean(t).lower() for p in calib for t in (p.a, p.b)}
    kept = [p for p in tr_traps if traps.clean(p.a).lower() not in held and traps.clean(p.b).lower() not in held]
    print(f"traps: {len(tr_traps)}, {len(tr_traps) - len(kept)} left out (calibration-quarter questions)", flush=True)
    tr_traps = kept
    for p in tr_traps:
        p.w = trap_weight
    states = embeddings()
    states.ensure({t for p in train for t in (p.a, p.b)})
    mined = D.mine_negatives(train, states)
    ext = [D.Pair(a, b, y, "qqp_ext", "pair") for a, b, y in E.pairs()] if external else []
    return train + tr_traps + mined + ext, calib


def export(model, meta: dict, out: Path):
    W = {"token_type_embeddings": model.types.detach().numpy(),
         "embeddings_ln_w": model.ln0.weight.detach().numpy(), "embeddings_ln_b": model.ln0.bias.detach().numpy(),
         "head_w": model.head.weight.detach().numpy()[0], "head_b": model.head.bias.detach().numpy(),
         "cos_w": model.cos_w.detach().numpy().reshape(1), "cos_b": model.cos_b.detach().numpy().reshape(1)}
    for i, layer in enumerate(model.layers):
        for n, m in layer.lin.items():
            W[f"layer{i}.{n}.lora_a"] = m.a.detach().numpy()
            W[f"layer{i}.{n}.lora_b"] = (m.bb.detach() * (ALPHA / RANK)).numpy()  # scale folded in
        for n in ("ln1", "ln2"):
            W[f"layer{i}.{n}_w"] = getattr(layer, n).weight.detach().numpy()
            W[f"layer{i}.{n}_b"] = getattr(layer, n).bias.detach().numpy()
    T.write_safetensors({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in W.items()}, out, meta)


def load(model, torch, path: Path):
    from safetensors.numpy import load_file
    W = load_file(str(path))
    t = lambda k: torch.from_numpy(W[k].copy())  # noqa: E731
    model.types.data.copy_(t("token_type_embeddings"))
    model.ln0.weight.data.copy_(t("embeddings_ln_w"))
    model.ln0.bias.data.copy_(t("embeddings_ln_b"))
    model.head.weight.data.copy_(t("head_w")[None])
    model.head.bias.data.copy_(t("head_b"))
    model.cos_w.data.copy_(t("cos_w")[0])
    model.cos_b.data.copy_(t("cos_b")[0])
    for i, layer in enumerate(model.layers):
        for n, m in layer.lin.items():
            m.a.data.copy_(t(f"layer{i}.{n}.lora_a"))
            m.bb.data.copy_(t(f"layer{i}.{n}.lora_b") / (ALPHA / RANK))
        for n in ("ln1", "ln2"):
            getattr(layer, n).weight.data.copy_(t(f"layer{i}.{n}_w"))
            getattr(layer, n).bias.data.copy_(t(f"layer{i}.{n}_b"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--extra-traps", type=float, default=4.0)
    ap.add_argument("--trap-weight", type=float, default=1.0,
                    help="training weight of the traps, rewrites and order-neutral pairs (a Quora pair of the dev files weighs 2)")
    ap.add_argument("--external", action="store_true",
                    help="add the Quora pairs of external.py (not in the shipped weights; README: "
                         "\"Quora pairs from outside the dev files\")")
    ap.add_argument("--limit", type=int, default=0, help="train on this many pairs only (a speed check)")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--check-embeddings", action="store_true",
                    help="compare the batched embeddings with minilm.py's on the texts of 100 dev pairs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=6,
                    help="read the pair with MiniLM's first N layers only (the gateway runs as many)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--metrics", type=Path, default=HERE / "cross-metrics.json")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tok = tokenizer()
    if args.check_embeddings:
        from minilm import MiniLM
        texts = sorted({t for p in D.file_pairs("qqp", 0)[:100] for t in (p.a, p.b)})
        ref = MiniLM()
        (D.CACHE / "cross-embeddings-check.pkl").unlink(missing_ok=True)
        emb = Embeddings("cross-embeddings-check.pkl")
        emb.ensure(texts)
        diff = max(float(np.abs(ref.encode_one(t)[1] - emb.emb(t)).max()) for t in texts)
        print(f"{len(texts)} texts: max abs difference {diff:.2e}")
        if diff > 1e-4:
            raise SystemExit("the batched embeddings differ from minilm.py's")
        return
    if args.eval_only or args.reference:
        from safetensors import safe_open
        with safe_open(str(args.out), "np") as f:
            args.layers = int(f.metadata().get("layers", "6"))
    model = build(torch, args.layers)
    odd_qqp, odd_stsb = D.file_pairs("qqp", 1), D.file_pairs("stsb", 1)
    ev_traps = D.trap_pairs("eval")

    if args.reference:
        load(model, torch, args.out)
        ps = [D.Pair(a, b, 0, "ref") for a, b in REF_PAIRS]
        embeddings().ensure({t for p in ps for t in (p.a, p.b)})
        s = score(model, tok, ps)
        REF.write_text(json.dumps([dict(cached=p.a, query=p.b, similarity=round(cosine(p.a, p.b), 6),
                                        logit=round(float(x), 6)) for p, x in zip(ps, s)], indent=1) + "\n")
        print(f"wrote {REF.name}")
        return

    train, calib = splits(args.extra_traps, args.external, args.trap_weight)
    print(f"train {len(train)} pairs ({sum(p.y for p in train)} positive), calibration {len(calib)}", flush=True)
    if not args.eval_only:
        if args.limit:
            random.shuffle(train)
            train = train[:args.limit]
        # Start from a logistic regression on the cosine alone.
        embeddings().ensure({t for p in train for t in (p.a, p.b)})
        cs = torch.tensor([cosine(p.a, p.b) for p in train])
        yy = torch.tensor([float(p.y) for p in train])
        ww = torch.tensor([p.w for p in train])
        wb = torch.zeros(2, requires_grad=True)
        lb = torch.optim.LBFGS([wb], max_iter=200)

        def closure():
            lb.zero_grad()
            l = (torch.nn.functional.binary_cross_entropy_with_logits(wb[0] * cs + wb[1], yy, reduction="none")
                 * ww).sum() / ww.sum()
            l.backward()
            return l
        lb.step(closure)
        model.cos_w.data.fill_(float(wb[0]))
        model.cos_b.data.fill_(float(wb[1]))
        print(f"cosine-only start: logit = {float(wb[0]):.3f} * cos + {float(wb[1]):.3f}", flush=True)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
        steps = args.epochs * math.ceil(len(train) / args.batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
        y = torch.tensor([float(p.y) for p in train])
        w = torch.tensor([p.w for p in train])
        t0, step = time.time(), 0
        for ep in range(args.epochs):
            model.train()
            # Each pair in a random order of its two texts, so the score is close to symmetric.
            enc = [e for e in encode(tok, train)]
            sw = encode(tok, train, swap=True)
            enc = [sw[i] if random.random() < 0.5 else enc[i] for i in range(len(train))]
            order = list(range(len(train)))
            random.shuffle(order)
            # Length-bucketed batches (sorted within blocks of 50 batches), in random order.
            blocks = [order[k:k + 50 * args.batch] for k in range(0, len(order), 50 * args.batch)]
            bl = [b for blk in blocks for b in batches(enc, blk, args.batch)]
            random.shuffle(bl)
            tot = 0.0
            for ch, ids, types, mask, cos in bl:
                logits = model(ids, types, mask, cos)
                loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, y[ch], reduction="none")
                        * w[ch]).sum() / w[ch].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                tot += loss.item()
                if step % 50 == 0:
                    print(f"  epoch {ep} step {step}/{steps} loss {tot / 50:.4f} ({time.time() - t0:.0f} s)", flush=True)
                    tot = 0.0
        cs = score(model, tok, calib)
        yc = np.array([p.y for p in calib])
        mq = np.array([p.src == "qqp" for p in calib])
        th = dict(precision95=T.threshold_for_precision(cs[mq], yc[mq], 0.95),
                  paraphrase80=T.paraphrase_threshold(cs[yc == 1], yc[yc == 1], 0.80))
        export(model, {"format": "quartermaster-cross-verifier-v1",
                       "base": "sentence-transformers/all-MiniLM-L6-v2",
                       # The gateway refuses to merge the adapters into any other weights.
                       "base_sha256": D.digest(MODEL / "model.safetensors"),
                       "rank": str(RANK), "max_len": str(MAX_LEN), "layers": str(args.layers),
                       "threshold_precision95": f"{th['precision95']:.6f}",
                       "threshold_paraphrase80": f"{th['paraphrase80']:.6f}",
                       "hyperparameters": json.dumps({k: v for k, v in vars(args).items()
                                                      if k not in ("out", "metrics")}, sort_keys=True)},
               args.out)
        print(f"exported {args.out} ({args.out.stat().st_size} bytes) in {time.time() - t0:.0f} s; thresholds {th}")
    load(model, torch, args.out)
    from safetensors import safe_open
    with safe_open(str(args.out), "np") as f:
        meta = f.metadata()
    th = dict(precision95=float(meta["threshold_precision95"]), paraphrase80=float(meta["threshold_paraphrase80"]))
    sfn = lambda ps: score(model, tok, ps)  # noqa: E731
    res = [T.evaluate("cross-encoder", sfn, odd_qqp, odd_stsb, ev_traps, th),
           T.evaluate("cross-encoder + rule veto", sfn, odd_qqp, odd_stsb, ev_traps, th,
                      veto=lambda ps: D.rule_veto(ps))]
    args.metrics.write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
