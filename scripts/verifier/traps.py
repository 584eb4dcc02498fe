#!/usr/bin/env python3
"""Synthetic hard negatives ("traps") and true paraphrases for the semantic-cache verifier,
made deterministically (seeded) from the real questions of one half of the labeled pair files.

The half follows the gateway's split (src/cli/eval_cache/mod.rs): pairs are indexed 0.. in file
order after the header; even index = tune/train half, odd index = held-out test half.

Traps (label 0), each a (real question, altered question) pair:
  number     a number (digits or a number word) changed
  negation   a negation inserted or removed ("Why is X" -> "Why isn't X", "not" dropped)
  antonym    a word replaced by its antonym (word list below)
  entity     a place or other proper name replaced by another
  direction  "from X to Y" -> "from Y to X", "convert X to Y" -> "convert Y to X",
             "X better than Y" -> "Y better than X"
  target     a language / platform / product swapped (Python -> Rust, iPhone -> Android)
About a third of the traps also get a meaning-keeping surface rewrite on the altered side,
so that "differs in one word" is not by itself the sign of a trap.

Paraphrases (label 1):
  dup_qqp, dup_stsb  the half's own pairs labeled duplicate, as they are
  rewrite            a real question and a light meaning-keeping rewrite of it ("How do I" <->
                     "How can I", "What's" <-> "What is", case, punctuation, a typo, a synonym)
  order_neutral      "X vs Y" <-> "Y vs X", "between X and Y" <-> "between Y and X"

A few antonym pairs and target words are held out of the train half (marked EVAL_ONLY), so the
eval file also measures traps on words training never saw.

    python3 traps.py            # writes traps-train.tsv (even half) and traps-eval.tsv (odd half)
Output: TSV with a header, text1<TAB>text2<TAB>label<TAB>kind.
"""
from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data" / "cache"
SEED = 20
# Caps per kind and half: keeps the committed files small (a few hundred KB).
CAP = {"number": 260, "negation": 260, "antonym": 260, "entity": 260, "direction": 200,
       "target": 200, "rewrite": 700, "order_neutral": 100}
REWRITE_TRAP_SHARE = 0.35

# ---------------------------------------------------------------------------------------
# Word lists
# ---------------------------------------------------------------------------------------

# (word, antonym, eval_only). Both directions are used.
ANTONYMS = [
    ("increase", "decrease", 0), ("increasing", "decreasing", 0), ("buy", "sell", 0),
    ("buying", "selling", 0), ("before", "after", 0), ("best", "worst", 0),
    ("better", "worse", 0), ("cheap", "expensive", 0), ("cheapest", "most expensive", 0),
    ("maximum", "minimum", 0), ("largest", "smallest", 0), ("biggest", "smallest", 0),
    ("highest", "lowest", 0), ("high", "low", 0), ("longest", "shortest", 0),
    ("oldest", "youngest", 0), ("first", "last", 0), ("open", "close", 0),
    ("start", "stop", 0), ("win", "lose", 0), ("won", "lost", 0), ("add", "remove", 0),
    ("enable", "disable", 0), ("true", "false", 0), ("hot", "cold", 0), ("fast", "slow", 0),
    ("faster", "slower", 0), ("import", "export", 0), ("upload", "download", 0),
    ("positive", "negative", 0), ("pros", "cons", 0), ("advantages", "disadvantages", 0),
    ("men", "women", 0), ("man", "woman", 0), ("boy", "girl", 0), ("boys", "girls", 0),
    ("love", "hate", 0), ("legal", "illegal", 0), ("possible", "impossible", 0),
    ("safe", "dangerous", 0), ("more", "less", 0), ("most", "least", 0), ("rich", "poor", 0),
    ("easy", "difficult", 0), ("easiest", "hardest", 0), ("strong", "weak", 0),
    ("good", "bad", 0), ("success", "failure", 0), ("successful", "unsuccessful", 0),
    ("happy", "sad", 0), ("always", "never", 0), ("old", "new", 0), ("young", "old", 0),
    ("big", "small", 0), ("long", "short", 0), ("higher", "lower", 0), ("online", "offline", 0),
    ("gain", "lose", 0), ("lose", "gain", 0), ("early", "late", 0), ("day", "night", 0),
    ("summer", "winter", 0), ("inside", "outside", 0), ("above", "below", 0),
    ("accept", "reject", 0), ("include", "exclude", 0), ("input", "output", 0),
    ("profit", "loss", 0), ("like", "dislike", 0), ("agree", "disagree", 0),
    ("top", "bottom", 0), ("right", "wrong", 0), ("male", "female", 0),
    ("husband", "wife", 0), ("father", "mother", 0), ("son", "daughter", 0),
    # Held out of the train half.
    ("heavy", "light", 1), ("beginner", "expert", 1), ("healthy", "unhealthy", 1),
    ("friend", "enemy", 1), ("cheaper", "more expensive", 1), ("smart", "stupid", 1),
    ("private", "public", 1), ("hardest", "easiest", 1), ("win", "lose", 1),
    ("attractive", "unattractive", 1), ("morning", "evening", 1), ("north", "south", 1),
    ("east", "west", 1), ("rise", "fall", 1), ("entry", "exit", 1), ("import", "export", 1),
    ("useful", "useless", 1), ("common", "rare", 1), ("modern", "ancient", 1),
]

# Groups of interchangeable targets; a word marked with * is held out of the train half.
TARGET_GROUPS = [
    ["Python", "Rust", "Java", "JavaScript", "C++", "Ruby", "PHP", "Go", "Swift", "C#",
     "*Kotlin", "*Haskell", "*Scala", "*Perl"],
    ["iPhone", "Android", "*Windows Phone", "BlackBerry"],
    ["Windows", "Linux", "macOS", "Ubuntu", "*FreeBSD"],
    ["Mac", "PC", "*Chromebook"],
    ["iOS", "Android"],
    ["Chrome", "Firefox", "Safari", "*Opera", "Internet Explorer"],
    ["MySQL", "PostgreSQL", "MongoDB", "SQLite", "*Oracle", "*Redis"],
    ["AWS", "Azure", "Google Cloud", "*DigitalOcean"],
    ["Facebook", "Twitter", "Instagram", "LinkedIn", "Snapchat", "*Reddit", "Quora",
     "WhatsApp", "YouTube"],
    ["Samsung", "Apple", "Xiaomi", "OnePlus", "*Nokia", "Sony", "Lenovo", "Motorola"],
    ["Google", "Amazon", "Microsoft", "Apple", "*IBM", "Flipkart", "Uber"],
    ["Excel", "Word", "PowerPoint", "*Google Sheets"],
    ["React", "Angular", "Vue", "*Django", "Flask", "Rails"],
    ["PS4", "Xbox One", "*Nintendo Switch"],
    ["Hindi", "English", "French", "German", "Spanish", "Chinese", "Japanese", "*Tamil",
     "*Korean", "Arabic"],
    ["Bitcoin", "Ethereum", "*Litecoin"],
    ["Netflix", "Hulu", "*Amazon Prime"],
    ["Paytm", "PayPal", "*Stripe"],
]

PLACES = [
    "India", "China", "USA", "America", "United States", "UK", "England", "Canada", "Australia",
    "Germany", "France", "Italy", "Spain", "Japan", "Russia", "Pakistan", "Bangladesh",
    "Brazil", "Mexico", "Nigeria", "Egypt", "Israel", "Iran", "Iraq", "Turkey", "Singapore",
    "Dubai", "Sweden", "Norway", "Netherlands", "Switzerland", "Ireland", "Poland", "Greece",
    "Indonesia", "Thailand", "Vietnam", "Korea", "Nepal", "Sri Lanka", "Europe", "Asia",
    "Africa", "New York", "London", "Paris", "Berlin", "Tokyo", "Delhi", "Mumbai",
    "Bangalore", "Chennai", "Hyderabad", "Kolkata", "Pune", "California", "Texas", "Florida",
    "Boston", "Chicago", "Seattle", "San Francisco", "Los Angeles", "Toronto", "Sydney",
    "Melbourne", "Hong Kong", "Kerala", "Punjab", "Gujarat", "Rome", "Madrid", "Moscow",
    "Beijing", "Shanghai", "Washington", "Vancouver", "Dublin", "Amsterdam",
]

PEOPLE = [
    "Trump", "Donald Trump", "Hillary Clinton", "Clinton", "Obama", "Barack Obama",
    "Modi", "Narendra Modi", "Putin", "Rahul Gandhi", "Gandhi", "Nehru", "Elon Musk",
    "Bill Gates", "Steve Jobs", "Mark Zuckerberg", "Einstein", "Newton", "Shakespeare",
    "Hitler", "Lincoln", "Sachin Tendulkar", "Virat Kohli", "Messi", "Ronaldo",
    "Harry Potter", "Batman", "Superman", "Kejriwal", "Sanders", "Bernie Sanders",
]

NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "twenty", "hundred", "thousand", "million", "first", "second", "third"]

FUNCTION = set("""i what how why when where which who whom whose is are was were do does did can
could should would will the a an in on of to for and or if my your it its this that these
those there as at by with from be have has had any some all me we you he she they them our
their his her so but than then also about into after before am not no yes please tell give
explain describe list find show write quora hi hello hey thanks ok okay vs versus""".split())

AUX_NEG = {"is": "isn't", "are": "aren't", "was": "wasn't", "were": "weren't", "can": "can't",
           "could": "couldn't", "should": "shouldn't", "would": "wouldn't", "will": "won't",
           "do": "don't", "does": "doesn't", "did": "didn't", "has": "hasn't", "have": "haven't"}
NEG_AUX = {v: k for k, v in AUX_NEG.items()}
NEG_AUX.update({"cannot": "can", "can not": "can", "don’t": "do", "doesn’t": "does",
                "isn’t": "is", "can’t": "can"})

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def load_pairs(path: Path) -> list[tuple[str, str, int]]:
    out = []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 3 and cols[2].strip() in ("0", "1"):
                out.append((cols[0], cols[1], int(cols[2])))
    return out


def half(pairs, parity: int):
    return [p for i, p in enumerate(pairs) if i % 2 == parity]


def match_case(src: str, new: str) -> str:
    if src.isupper() and len(src) > 1:
        return new.upper()
    if src[:1].isupper():
        return new[:1].upper() + new[1:]
    if src.islower():
        return new.lower() if new.lower() != new or not any(c.isupper() for c in new[1:]) else new
    return new


def sub_word(text: str, word: str, new: str, count: int = 1) -> str | None:
    """Replaces whole-word `word` (case-insensitive) keeping the case style of each match."""
    pat = re.compile(r"(?<![\w+#])" + re.escape(word) + r"(?![\w+#])", re.I)
    if not pat.search(text):
        return None
    return pat.sub(lambda m: match_case(m.group(0), new), text, count=count)


def clean(t: str) -> str:
    return re.sub(r"\s+", " ", t.replace("\t", " ")).strip()


# ---------------------------------------------------------------------------------------
# Traps
# ---------------------------------------------------------------------------------------

NUM_RE = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)*)(?![\w])")


def t_number(text: str, rng: random.Random, eval_half: bool) -> str | None:
    nums = list(NUM_RE.finditer(text))
    if nums:
        m = rng.choice(nums)
        s = m.group(1)
        if "." in s or "," in s:
            digits = s.replace(",", "")
            try:
                v = float(digits)
            except ValueError:
                return None
            nv = v * rng.choice([2, 3, 0.5, 10]) if v else 5.0
            new = f"{nv:g}" if "," not in s else f"{int(nv):,}"
        else:
            v = int(s)
            if 1900 <= v <= 2035:
                nv = v + rng.choice([-10, -5, -3, -2, -1, 1, 2, 3, 5])
            elif v < 20:
                nv = rng.choice([x for x in range(0, 21) if x != v])
            else:
                nv = max(1, v + rng.choice([-1, 1]) * rng.randint(1, max(1, v // 2)))
            new = str(nv)
        if new == s:
            return None
        return text[: m.start(1)] + new + text[m.end(1):]
    words = [w for w in NUMBER_WORDS if re.search(r"\b" + w + r"\b", text, re.I)]
    if not words:
        return None
    w = rng.choice(words)
    # "one" is too often not a number ("the one", "no one").
    if w == "one" and re.search(r"\b(the|no|any|every|some|which|that) one\b", text, re.I):
        return None
    return sub_word(text, w, rng.choice([x for x in NUMBER_WORDS if x != w]))


def t_negation(text: str, rng: random.Random, eval_half: bool) -> str | None:
    # Removal first when there is a negation to remove (half the time).
    m = re.search(r"\b(\w+n't|\w+n’t|cannot)\b", text, re.I)
    m_not = re.search(r"\s+not\b", text, re.I)
    if (m or m_not) and rng.random() < 0.5:
        if m and m.group(1).lower() in NEG_AUX:
            return text[: m.start(1)] + match_case(m.group(1), NEG_AUX[m.group(1).lower()]) + text[m.end(1):]
        if m_not:
            return text[: m_not.start()] + text[m_not.end():]
    if re.search(r"\b(not|n't|never|no)\b", text, re.I):
        return None
    words = list(re.finditer(r"\b(\w+)\b", text))
    if not words:
        return None
    first = words[0].group(1).lower()
    # "Is it ..." / "Can I ..." -> "Isn't it ..." / "Can't I ..."
    if first in AUX_NEG:
        w = words[0]
        return text[: w.start()] + match_case(w.group(1), AUX_NEG[first]) + text[w.end():]
    # "Why do people ..." -> "Why don't people ..."
    if first in ("why", "when") and len(words) > 1 and words[1].group(1).lower() in AUX_NEG:
        w = words[1]
        return text[: w.start()] + AUX_NEG[w.group(1).lower()] + text[w.end():]
    # "How do/can I VERB" -> "How do/can I not VERB"
    m = re.search(r"\b(how|what|where)\s+(do|can|should|could|would)\s+(i|you|we|one|people)\s+", text, re.I)
    if m:
        return text[: m.end()] + "not " + text[m.end():]
    # "X is Y" -> "X is not Y"
    m = re.search(r"\s(is|are|was|were|can|will|should)\s", text[words[0].end():], re.I)
    if m:
        pos = words[0].end() + m.end()
        return text[:pos] + "not " + text[pos:]
    return None


def _antonym_table(eval_half: bool):
    table = {}
    for a, b, held in ANTONYMS:
        if held and not eval_half:
            continue
        table.setdefault(a, set()).add(b)
        table.setdefault(b, set()).add(a)
    return table


def t_antonym(text: str, rng: random.Random, eval_half: bool) -> str | None:
    table = _antonym_table(eval_half)
    found = [w for w in table if re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", text, re.I)]
    # Prefer the held-out words in the eval half, so they are represented there.
    if eval_half:
        held = {x for a, b, h in ANTONYMS if h for x in (a, b)}
        pref = [w for w in found if w in held]
        if pref and rng.random() < 0.6:
            found = pref
    if not found:
        return None
    w = rng.choice(sorted(found))
    return sub_word(text, w, rng.choice(sorted(table[w])))


def _targets(eval_half: bool):
    groups = []
    for g in TARGET_GROUPS:
        gg = [x.lstrip("*") for x in g if eval_half or not x.startswith("*")]
        groups.append(gg)
    return groups


def t_target(text: str, rng: random.Random, eval_half: bool) -> str | None:
    opts = []
    for g in _targets(eval_half):
        for x in g:
            if re.search(r"(?<![\w+#])" + re.escape(x) + r"(?![\w+#])", text, re.I):
                # "Go" and "Word" only as capitalised names.
                if x in ("Go", "Word", "Mac", "Apple", "Opera", "Oracle", "Swift", "Rust") and not re.search(
                        r"(?<!\w)" + re.escape(x) + r"(?!\w)", text):
                    continue
                if x in ("Go",) and re.search(r"^\s*Go\b", text):
                    continue
                opts.append((x, [y for y in g if y != x]))
    if not opts:
        return None
    x, others = rng.choice(opts)
    return sub_word(text, x, rng.choice(others))


def t_entity(text: str, rng: random.Random, eval_half: bool, proper_pool: list[str] = ()) -> str | None:
    # Known places and people first (type-coherent swaps), else any proper name.
    for lst in (PLACES, PEOPLE):
        hits = [x for x in sorted(lst, key=len, reverse=True)
                if re.search(r"(?<!\w)" + re.escape(x) + r"(?!\w)", text, re.I)]
        if hits:
            x = rng.choice(hits)
            others = [y for y in lst if y.lower() != x.lower() and y.lower() not in x.lower()
                      and x.lower() not in y.lower()]
            return sub_word(text, x, rng.choice(others))
    words = list(re.finditer(r"(?<![\w'])([A-Z][a-z]{2,}|[A-Z]{2,5})(?![\w'])", text))
    cands = []
    for i, m in enumerate(words):
        w = m.group(1)
        start = text[: m.start()].rstrip()
        if not start or start[-1] in ".?!:":  # sentence start
            continue
        if w.lower() in FUNCTION:
            continue
        cands.append(m)
    if not cands or not proper_pool:
        return None
    m = rng.choice(cands)
    pool = [p for p in proper_pool if p.lower() != m.group(1).lower()]
    return text[: m.start(1)] + rng.choice(pool) + text[m.end(1):]


PHRASE = r"((?:[\w.+#'-]+)(?:\s+[\w.+#'-]+){0,2}?)"
STOP = r"(?=\s*(?:[?.,!;:]|$|\s(?:and|in|for|with|using|by|without|if|or|so|at|on|within|after|before|via)\b))"


def _endpoint(x: str) -> bool:
    """A swappable endpoint: content words (an article or "my" may lead), no verb-ish glue."""
    ws = x.lower().split()
    if ws and ws[0] in ("the", "a", "an", "my", "your", "being"):
        ws = ws[1:]
    return bool(ws) and not any(w in FUNCTION or w in ("like", "feel", "get", "go", "want", "make")
                                for w in ws)


def t_direction(text: str, rng: random.Random, eval_half: bool) -> str | None:
    pats = [
        r"\bfrom\s+" + PHRASE + r"\s+(?:to|into)\s+" + PHRASE + STOP,
        r"\b(?:convert|converting|translate|translating|change|switch|switching|migrate|"
        r"migrating|move|moving|transfer|transferring|port|porting)\s+(?:a\s+|an\s+|my\s+)?"
        + PHRASE + r"\s+(?:to|into|in)\s+" + PHRASE + STOP,
        r"\b(?:is|are)\s+" + PHRASE + r"\s+(?:better|worse|bigger|smaller|faster|stronger|"
        r"cheaper|safer|smarter|richer|older|more \w+|less \w+)\s+than\s+" + PHRASE + STOP,
        # Subject and object: "What do Pakistanis think about Iranians?", "Why does X hate Y?"
        r"\b(?:do|does|did|can|could|would|will|should)\s+" + PHRASE + r"\s+(?:think|feel)\s+"
        r"(?:about|of)\s+" + PHRASE + STOP,
        r"\b(?:do|does|did|can|could|would|will|should)\s+" + PHRASE + r"\s+(?:hate|love|like|"
        r"support|fear|attack|beat|defeat|envy|trust|respect|hire|owe|help|follow|sue|invade|"
        r"block|pay|influence|outperform|replace)\s+" + PHRASE + STOP,
        r"(?<!\w)" + PHRASE + r"\s+(?:beat|beats|defeated|defeats|invaded|invades|acquired|"
        r"acquires|bought|sued|married|replaced|replaces)\s+" + PHRASE + STOP,
        # "X to Y" between names, units, languages: "Delhi to Mumbai", "USD to INR".
        r"(?<![\w-])([A-Z][\w.+#-]*(?:\s+[A-Z][\w.+#-]*)?)\s+(?:to|into)\s+"
        r"([A-Z][\w.+#-]*(?:\s+[A-Z][\w.+#-]*)?)" + STOP,
    ]
    for n, p in enumerate(pats):
        # The last pattern needs real capitals: case-sensitive.
        m = re.search(p, text, 0 if n == len(pats) - 1 else re.I)
        if not m:
            continue
        x, y = m.group(1), m.group(2)
        if x.lower() == y.lower() or not _endpoint(x) or not _endpoint(y):
            continue
        s = text[: m.start(1)] + y + text[m.end(1): m.start(2)] + x + text[m.end(2):]
        if s != text:
            return s
    return None


TRAPS = {"number": t_number, "negation": t_negation, "antonym": t_antonym,
         "entity": t_entity, "direction": t_direction, "target": t_target}

# ---------------------------------------------------------------------------------------
# Meaning-keeping rewrites
# ---------------------------------------------------------------------------------------

PHRASE_SWAPS = [
    ("How do I", "How can I"), ("How do I", "How do you"), ("How can I", "How should I"),
    ("What's", "What is"), ("it's", "it is"), ("don't", "do not"), ("doesn't", "does not"),
    ("can't", "cannot"), ("I'm", "I am"), ("isn't", "is not"), ("won't", "will not"),
    ("there's", "there is"), ("didn't", "did not"), ("aren't", "are not"),
    ("What are some", "What are"), ("What are the best ways to", "What is the best way to"),
    ("Which is the best", "What is the best"), ("Is it possible to", "Can I"),
    ("What is the best way to", "How do I best"), ("What should I do to", "How do I"),
    ("a lot of", "lots of"), ("a lot of", "many"), ("movie", "film"), ("movies", "films"),
    ("buy", "purchase"), ("kids", "children"), ("quickest", "fastest"), ("begin", "start"),
    ("cell phone", "mobile phone"), ("USA", "United States"), ("US", "United States"),
    ("UK", "United Kingdom"), ("TV", "television"), ("get rid of", "remove"),
    ("programming language", "language"), ("What is the meaning of", "What does"),
    ("Why do people", "Why do some people"),
    ("job", "work"), ("big", "large"), ("photo", "picture"), ("photos", "pictures"),
    ("car", "automobile"), ("doctor", "physician"), ("learn", "study"),
]
PREFIXES = ["Quick question: ", "Can anyone tell me: ", "I was wondering, ", "Serious question: ",
            "Hey Quora, "]
SUFFIXES = [" Please help.", " Thanks!", " Any advice?", " (asking for a friend)"]


def rewrites(text: str, rng: random.Random) -> list[str]:
    """Candidate single rewrites of `text` that keep its meaning."""
    out = []
    for a, b in PHRASE_SWAPS:
        for x, y in ((a, b), (b, a)):
            if x == y or not x.strip():
                continue
            if re.search(r"(?<!\w)" + re.escape(x) + r"(?!\w)", text, re.I):
                # "US" only as the capitalised abbreviation.
                if x in ("US", "UK", "TV", "USA") and not re.search(r"\b" + x + r"\b", text):
                    continue
                s = sub_word(text, x, y)
                if s and s != text:
                    out.append(s)
    t = text.rstrip()
    if t.endswith("?"):
        out.append(t.rstrip("?").rstrip())
        out.append(t + "?")
    else:
        out.append(t + "?")
    out.append(text.lower())
    if text[:1].islower():
        out.append(text[:1].upper() + text[1:])
    first_lower = text[:1].lower() + text[1:] if not re.match(r"^(I\b|[A-Z]{2})", text) else text
    out.append(rng.choice(PREFIXES) + first_lower)
    out.append(text.rstrip() + rng.choice(SUFFIXES))
    # A typo: two adjacent letters swapped in a long word.
    longw = [m for m in re.finditer(r"[A-Za-z]{6,}", text)]
    if longw:
        m = rng.choice(longw)
        w = m.group(0)
        i = rng.randint(1, len(w) - 3)
        out.append(text[: m.start()] + w[:i] + w[i + 1] + w[i] + w[i + 2:] + text[m.end():])
    return [clean(s) for s in out if clean(s) != clean(text)]


def rewrite(text: str, rng: random.Random, n: int | None = None) -> str | None:
    n = n or rng.choice([1, 1, 2])
    cur = text
    for _ in range(n):
        opts = rewrites(cur, rng)
        if not opts:
            break
        cur = rng.choice(opts)
    return cur if clean(cur) != clean(text) else None


def order_neutral(text: str, rng: random.Random) -> str | None:
    pats = [
        r"(?<!\w)" + PHRASE + r"\s+(vs\.?|versus)\s+" + PHRASE + STOP,
        r"\bbetween\s+" + PHRASE + r"\s+(and)\s+" + PHRASE + STOP,
        r"(?:better|prefer|choose)[,:]?\s+" + PHRASE + r"\s+(or)\s+" + PHRASE + STOP,
    ]
    for p in pats:
        m = re.search(p, text, re.I)
        if m:
            x, y = m.group(1), m.group(3)
            if x.lower() in FUNCTION or y.lower() in FUNCTION or x.lower() == y.lower():
                continue
            return text[: m.start(1)] + y + text[m.end(1): m.start(3)] + x + text[m.end(3):]
    return None


# ---------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------


def generate(parity: int, qqp: Path, stsb: Path, seed: int = SEED, scale: float = 1.0
             ) -> list[tuple[str, str, int, str]]:
    """Rows for one half; `scale` multiplies the per-kind caps (train.py asks for more
    traps from the even half than the committed file holds)."""
    eval_half = parity == 1
    cap = {k: int(v * scale) for k, v in CAP.items()}
    rng = random.Random(seed * 10 + parity)
    files = {"qqp": half(load_pairs(qqp), parity), "stsb": half(load_pairs(stsb), parity)}
    rows: list[tuple[str, str, int, str]] = []
    questions: list[str] = []
    seen = set()
    for name, pairs in files.items():
        for t1, t2, y in pairs:
            if y == 1:
                rows.append((clean(t1), clean(t2), 1, f"dup_{name}"))
            for t in (t1, t2):
                c = clean(t)
                if c and c not in seen and len(c) < 300:
                    seen.add(c)
                    questions.append(c)
    # Proper names seen in this half, for entity swaps of names not in the lists.
    pool = sorted({m.group(1) for q in questions
                   for m in re.finditer(r"(?<=\w\s)([A-Z][a-z]{3,})(?![\w'])", q)
                   if m.group(1).lower() not in FUNCTION})
    order = questions[:]
    rng.shuffle(order)
    made = set()

    def add(a, b, y, kind):
        a, b = clean(a), clean(b)
        if not a or not b or a == b or (a, b) in made:
            return False
        made.add((a, b))
        # Either order: the cache is asked both ways round.
        rows.append((a, b, y, kind) if rng.random() < 0.5 else (b, a, y, kind))
        return True

    for kind, fn in TRAPS.items():
        n = 0
        for q in order:
            if n >= cap[kind]:
                break
            r = random.Random(f"{seed}:{parity}:{kind}:{q}")
            s = fn(q, r, eval_half, pool) if kind == "entity" else fn(q, r, eval_half)
            if not s or clean(s).lower() == q.lower():
                continue
            if r.random() < REWRITE_TRAP_SHARE:
                s2 = rewrite(s, r, 1)
                # The rewrite must not undo the trap.
                if s2 and clean(s2).lower() != q.lower():
                    s = s2
            n += add(q, s, 0, kind)
    n = 0
    for q in order:
        if n >= cap["rewrite"]:
            break
        r = random.Random(f"{seed}:{parity}:rewrite:{q}")
        if r.random() < 0.5:
            continue
        s = rewrite(q, r)
        if s:
            n += add(q, s, 1, "rewrite")
    n = 0
    for q in order:
        if n >= cap["order_neutral"]:
            break
        s = order_neutral(q, random.Random(f"{seed}:{parity}:on:{q}"))
        if s:
            n += add(q, s, 1, "order_neutral")
    return rows


def write(rows, path: Path):
    with open(path, "w", encoding="utf-8") as f:
        f.write("text1\ttext2\tlabel\tkind\n")
        for a, b, y, k in rows:
            f.write(f"{a}\t{b}\t{y}\t{k}\n")


def read(path: Path) -> list[tuple[str, str, int, str]]:
    out = []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            a, b, y, k = line.rstrip("\n").split("\t")
            out.append((a, b, int(y), k))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qqp", type=Path, default=DATA / "qqp-dev.tsv")
    ap.add_argument("--stsb", type=Path, default=DATA / "stsb-dev.tsv")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    for parity, name in ((0, "traps-train.tsv"), (1, "traps-eval.tsv")):
        rows = generate(parity, args.qqp, args.stsb, args.seed)
        write(rows, args.out / name)
        kinds = {}
        for *_, y, k in rows:
            kinds[k] = kinds.get(k, 0) + 1
        print(f"{name}: {len(rows)} rows; " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()
