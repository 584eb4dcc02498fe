"""Labeled Quora question pairs from outside `../shared/data/cache/`, for training only.

Two public GitHub repositories hold real slices of the Quora Question Pairs release (found
with the code-search tools; most copies online are Git LFS pointers or no data at all):

| file | repository, commit, path | pairs |
| --- | --- | --- |
| `qqp_new_dev.tsv` | mieseung/Cutoff_with_Attribution @ 0ef7460e, `glue_data/QQP/new_dev.tsv` | 23,496 |
| `quora_10k.tsv` | ask95/quora-duplicate-questions @ 185e1b1 (the file since 5eff5c0a), `data/mini_quora_duplicate_questions.tsv` | 9,997 |

Both carry Quora's columns (id, qid1, qid2, question1, question2, is_duplicate) and Quora's
terms (non-commercial research; the text belongs to Quora), like `qqp-dev.tsv`, so they are
not committed: `python3 external.py --fetch` downloads them into $VERIFIER_EXTERNAL
(default /tmp/vverifier-external) and checks their MD5.

**Nothing of the dev files leaks in.** The first file is a re-split of GLUE's QQP, and about a
quarter of its pairs share a question with `qqp-dev.tsv`. Every pair that shares a question
(lower-cased, letters and digits only) with any pair of either dev file, in any half, is left
out, so no evaluation or calibration question is seen, up to case, spacing and punctuation
(a reworded variant can remain: matching on the set of words finds about 8); pairs the two
files share are kept once; rows with a malformed label are dropped.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import traps  # noqa: E402

DIR = Path(os.environ.get("VERIFIER_EXTERNAL", "/tmp/vverifier-external"))

# name, raw URL, MD5, whether the first line is a header
SOURCES = [
    ("qqp_new_dev.tsv",
     "https://raw.githubusercontent.com/mieseung/Cutoff_with_Attribution/"
     "0ef7460ee83f01034891e92b4f405d2c14944daf/glue_data/QQP/new_dev.tsv",
     "5ccbd0a84877f310ff3e7aedef0edda0", False),
    ("quora_10k.tsv",
     "https://raw.githubusercontent.com/ask95/quora-duplicate-questions/"
     "5eff5c0a659bc15124d5969c3a8329bd6d75cc43/data/mini_quora_duplicate_questions.tsv",
     "7ba8a2da44c28420439a29c54178dc37", True),
]


def key(t: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", t.lower())


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def fetch():
    DIR.mkdir(parents=True, exist_ok=True)
    for name, url, want, _ in SOURCES:
        path = DIR / name
        if not path.exists():
            print(f"downloading {url}")
            urllib.request.urlretrieve(url, path)
        got = md5(path)
        if got != want:
            raise SystemExit(f"{path}: MD5 {got}, expected {want}")
        print(f"{path}: ok")


def dev_keys() -> set[str]:
    keys = set()
    for name in ("qqp", "stsb"):
        for a, b, _ in traps.load_pairs(traps.DATA / f"{name}-dev.tsv"):
            keys.add(key(a))
            keys.add(key(b))
    return keys


def pairs() -> list[tuple[str, str, int]]:
    """(question1, question2, label) for every usable pair, in file order."""
    held = dev_keys()
    seen: set[tuple[str, str]] = set()
    out = []
    stats = dict(rows=0, malformed=0, dev=0, repeated=0)
    for name, _, want, header in SOURCES:
        path = DIR / name
        if not path.exists() or md5(path) != want:
            raise SystemExit(f"{path} missing or changed: run `python3 external.py --fetch`")
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if header and i == 0:
                    continue
                stats["rows"] += 1
                p = line.rstrip("\n").split("\t")
                if len(p) != 6 or p[5] not in ("0", "1") or not p[3].strip() or not p[4].strip():
                    stats["malformed"] += 1
                    continue
                a, b = p[3].strip(), p[4].strip()
                ka, kb = key(a), key(b)
                if ka in held or kb in held:
                    stats["dev"] += 1
                    continue
                k = (min(ka, kb), max(ka, kb))
                if k in seen:
                    stats["repeated"] += 1
                    continue
                seen.add(k)
                out.append((a, b, int(p[5])))
    print(f"external pairs: {len(out)} kept ({sum(y for _, _, y in out)} duplicates) of {stats['rows']} rows; "
          f"left out: {stats['dev']} sharing a question with the dev files, {stats['repeated']} repeated, "
          f"{stats['malformed']} malformed", flush=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fetch", action="store_true", help="download the files and check them")
    args = ap.parse_args()
    if args.fetch:
        fetch()
    pairs()
