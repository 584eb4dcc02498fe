"""How far two readers' hand verdicts agree, and a file of what both say.

The hand verdicts (`same` / `different` / `unclear`: would one answer serve both?) are one
reader's call; this compares two verdict files over the items both judged. It reads either
kind of verdict file: the cache hits' (`cache-hit-verdicts.tsv`: KEY, VERDICT) and the
calibration pairs' (`qqp-calibration-verdicts.tsv`: INDEX, HASH, VERDICT). Every column but
the last names the item, so both files must be of the same kind.

    python3 agree.py cache-hit-verdicts.tsv cache-hit-verdicts-2.tsv [--both OUT]

It prints each reader's counts, the 3 x 3 table, the share of items judged alike, Cohen's
kappa over the three verdicts and over "same" against the rest (the call that moves a
precision), and the items one reader judged that the other did not. `--both OUT` writes a
verdict file of what the two readers say together, for `quartermaster eval cache --verdicts
OUT` or `audit.py --verdicts OUT`: `same` when both say same, `different` when both say
different, `unclear` otherwise; an item only one reader judged is left out (a cache hit
without a verdict keeps the labels' reading). Counting `unclear` wrong then counts a hit right only when
both readers call it the same question; counting it right, wrong only when both call it
different.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

VERDICTS = ("same", "different", "unclear")


HEX12 = re.compile(r"[0-9a-f]{12}")
# The two kinds of verdict file: the columns naming an item, and the header line naming them.
KINDS = {
    1: "# key = sha256(normalised query TAB normalised cached question)[:12]\tverdict",
    2: "# index\tsha256(text1 TAB text2)[:12]\tverdict (same / different / unclear)",
}


def valid(item: list[str]) -> bool:
    if len(item) == 1:
        return bool(HEX12.fullmatch(item[0]))
    return len(item) == 2 and item[0].isdigit() and bool(HEX12.fullmatch(item[1]))


def read(path: Path) -> dict[tuple[str, ...], str]:
    """The verdicts by item; every line must be of the file's one kind."""
    out: dict[tuple[str, ...], str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        *item, v = line.split("\t")
        if not valid(item) or v not in VERDICTS:
            raise SystemExit(f"{path}:{n}: expected KEY<TAB>VERDICT or INDEX<TAB>HASH<TAB>VERDICT "
                             "(12 lower-case hex digits; same, different or unclear)")
        if out and len(next(iter(out))) != len(item):
            raise SystemExit(f"{path}:{n}: a line of the other kind of verdict file")
        key = tuple(item)
        if out.get(key, v) != v:
            raise SystemExit(f"{path}:{n}: {key} judged two ways in one file")
        out[key] = v
    return out


def kappa(pairs: list[tuple[str, str]], classes) -> float:
    """Cohen's kappa: agreement beyond what the two readers' own rates give by chance."""
    n = len(pairs)
    if n == 0:
        return float("nan")
    seen = sum(a == b for a, b in pairs) / n
    chance = sum(
        (sum(a == c for a, _ in pairs) / n) * (sum(b == c for _, b in pairs) / n) for c in classes
    )
    return 1.0 if chance == 1.0 else (seen - chance) / (1.0 - chance)


def both(a: str, b: str) -> str:
    return a if a == b and a != "unclear" else "unclear"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--both", type=Path, help="write the verdicts both readers give together")
    args = ap.parse_args()
    first = read(args.first)
    second = read(args.second)
    if first and second and len(next(iter(first))) != len(next(iter(second))):
        raise SystemExit("the two files are not the same kind of verdict file")
    common = sorted(first.keys() & second.keys())
    pairs = [(first[k], second[k]) for k in common]
    print(f"{args.first.name}: {len(first)} verdicts; {args.second.name}: {len(second)}; both judged {len(common)}")
    for name, only in ((args.first.name, first.keys() - second.keys()), (args.second.name, second.keys() - first.keys())):
        if only:
            print(f"  judged only in {name}: {len(only)}")
    print()
    print(f"| first \\ second | {' | '.join(VERDICTS)} | total |")
    print("| --- | --- | --- | --- | --- |")
    for a in VERDICTS:
        row = [sum(x == a and y == b for x, y in pairs) for b in VERDICTS]
        print(f"| {a} | {' | '.join(map(str, row))} | {sum(row)} |")
    cols = [sum(y == b for _, y in pairs) for b in VERDICTS]
    print(f"| total | {' | '.join(map(str, cols))} | {len(pairs)} |")
    print()
    if pairs:
        alike = sum(a == b for a, b in pairs) / len(pairs)
        binary = [(a == "same", b == "same") for a, b in pairs]
        opposed = sum({a, b} == {"same", "different"} for a, b in pairs)
        print(f"judged alike: {alike:.1%}; kappa (three verdicts): {kappa(pairs, VERDICTS):.3f}; "
              f"kappa (same or not): {kappa(binary, (True, False)):.3f}; "
              f"one says same, the other different: {opposed} ({opposed / len(pairs):.1%})")
    if args.both:
        lines = [
            "# What two readers say together (agree.py --both): same when both say same, different when both say",
            f"# different, unclear otherwise. From {args.first.name} and {args.second.name}; items only one judged are left out.",
            *([KINDS[len(common[0])]] if common else []),
            *("\t".join((*k, both(first[k], second[k]))) for k in common),
        ]
        args.both.write_text("\n".join(lines) + "\n")
        print(f"\n{len(common)} verdicts written to {args.both}", file=sys.stderr)


if __name__ == "__main__":
    main()
