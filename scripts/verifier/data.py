"""Data for the verifier: the labeled pair files split into halves, the trap files, MiniLM token
states for every text (cached on disk, since the numpy forward takes ~10 ms a text), mined hard
negatives, and the 11 lexical features."""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import lexical  # noqa: E402
import traps  # noqa: E402

DATA = traps.DATA
CACHE = Path(os.environ.get("VERIFIER_CACHE", "/tmp/vverifier-cache"))
MAX_HEAD_TOKENS = 64  # the head reads the first 64 token states of each side


@dataclass
class Pair:
    a: str
    b: str
    y: int
    src: str          # qqp, stsb, trap, mined
    kind: str = ""    # trap kind / dup kind
    index: int = -1   # pair index in its file (qqp, stsb), else -1
    w: float = 1.0    # training weight


def file_pairs(name: str, parity: int | None) -> list[Pair]:
    path = DATA / f"{name}-dev.tsv"
    out = []
    for i, (a, b, y) in enumerate(traps.load_pairs(path)):
        if parity is None or i % 2 == parity:
            out.append(Pair(a, b, y, name, "pair", i))
    return out


def trap_pairs(which: str) -> list[Pair]:
    path = HERE / f"traps-{which}.tsv"
    if not path.exists():
        raise SystemExit(f"{path} missing: run traps.py first")
    return [Pair(a, b, y, "trap", k) for a, b, y, k in traps.read(path)]


class States:
    """MiniLM final-layer token states (float16, first MAX_HEAD_TOKENS rows) and pooled
    embeddings (float32, over all tokens) for texts, computed once and cached."""

    def __init__(self):
        CACHE.mkdir(parents=True, exist_ok=True)
        self.path = CACHE / "states.pkl"
        self.d: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.path.exists():
            with open(self.path, "rb") as f:
                self.d = pickle.load(f)
        self._enc = None

    def ensure(self, texts):
        todo = sorted({t for t in texts if t not in self.d})
        if not todo:
            return
        if self._enc is None:
            from minilm import MiniLM
            self._enc = MiniLM()
        t0 = time.time()
        for i, t in enumerate(todo):
            s, e = self._enc.encode_one(t)
            self.d[t] = (s[:MAX_HEAD_TOKENS].astype(np.float16), e)
            if (i + 1) % 1000 == 0:
                print(f"  embedded {i + 1}/{len(todo)} ({time.time() - t0:.0f} s)", flush=True)
        with open(self.path, "wb") as f:
            pickle.dump(self.d, f, protocol=4)

    def tokens(self, t: str) -> np.ndarray:
        return self.d[t][0]

    def emb(self, t: str) -> np.ndarray:
        return self.d[t][1]

    def cos(self, a: str, b: str) -> float:
        return float(self.emb(a) @ self.emb(b))


def mine_negatives(pairs: list[Pair], states: States, k: int = 5, floor: float = 0.5) -> list[Pair]:
    """For each text2 of a file's pairs, its k nearest text1s (by MiniLM cosine) among the
    same pairs that are not labeled duplicates of it nor the same text: negatives, as the cache
    would meet them (its candidates are nearest neighbours). Only those at cosine >= floor."""
    out = []
    by_src: dict[str, list[Pair]] = {}
    for p in pairs:
        by_src.setdefault(p.src, []).append(p)
    for src, ps in by_src.items():
        t1 = sorted({p.a for p in ps})
        pos = {(p.b, p.a) for p in ps if p.y == 1} | {(p.a, p.b) for p in ps if p.y == 1}
        labeled = {(p.b, p.a) for p in ps} | {(p.a, p.b) for p in ps}
        E1 = np.stack([states.emb(t) for t in t1])
        seen = set()
        for p in ps:
            if p.b in seen:
                continue
            seen.add(p.b)
            sims = E1 @ states.emb(p.b)
            for j in np.argsort(-sims)[: k + 1]:
                c = t1[j]
                norm = lambda s: " ".join(s.split())  # noqa: E731
                if norm(c) == norm(p.b) or (p.b, c) in pos or (p.b, c) in labeled:
                    continue
                if sims[j] < floor:
                    break
                out.append(Pair(p.b, c, 0, "mined", "mined", p.index, 0.5))
    return out


def lexical_features(pairs: list[Pair], states: States) -> np.ndarray:
    cache_path = CACHE / "lexical.pkl"
    cache = {}
    if cache_path.exists():
        with open(cache_path, "rb") as f:
            cache = pickle.load(f)
    out = np.zeros((len(pairs), lexical.N_FEATURES), np.float32)
    dirty = False
    for i, p in enumerate(pairs):
        key = (p.a, p.b)
        if key not in cache:
            cache[key] = lexical.features(p.a, p.b, 0.0)
            dirty = True
        f = list(cache[key])
        c = states.cos(p.a, p.b)
        f[0], f[1] = c, c * c
        out[i] = f
    if dirty:
        with open(cache_path, "wb") as f:
            pickle.dump(cache, f, protocol=4)
    return out


def rule_veto(pairs: list[Pair]) -> np.ndarray:
    """1 where a gateway rule check vetoes the pair."""
    return np.array([lexical.verify(p.a, p.b) is not None for p in pairs])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
