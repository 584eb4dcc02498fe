#!/usr/bin/env python3
"""Regenerate tests/fixtures/smollm2_tokens.json: llama.cpp's tokenization of
SmolLM2-135M-Instruct (GGUF) as the reference for quartermaster's own tokenizer,
which it builds from the same GGUF's metadata (gpt2-style byte-level BPE).

For each string in CASES it records the ids from
    Llama(model_path=GGUF, vocab_only=True).tokenize(text.encode(), add_bos=False, special=True)
(special=True: control tokens such as <|im_start|> written in the text are parsed
as those single tokens, as they are in a rendered chat prompt). It also records the
bos/eos ids and strings, tokenizer.chat_template from the GGUF metadata, and the
prompt for the conversation in benches/chat_prompt.json rendered from that template
with jinja2 (as transformers' apply_chat_template does: sandboxed environment,
trim_blocks, lstrip_blocks, add_generation_prompt=True) and its ids.

Run in the venv made by scripts/llama-env.sh:
  scripts/llama-env.sh && .venv-llama/bin/python scripts/smollm2_reference.py
Output is deterministic; `--check` compares with the committed fixture instead of
writing it (exit 1 on a difference).
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GGUF = ROOT / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_JSON = ROOT / "benches/chat_prompt.json"
OUT = ROOT / "tests/fixtures/smollm2_tokens.json"

CASES = [
    # plain English
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "antidisestablishmentarianism",
    "DON'T SHOUT. I'm fine, you're fine, they've left, she'll stay, it'd do.",
    # whitespace
    " leading space",
    "trailing space ",
    "  two leading spaces and two trailing  ",
    "multiple    spaces   between  words",
    "   ",
    "line one\nline two",
    "\n\nblank lines\n\n\nend\n",
    "indented\n    four spaces\n\ttab",
    "windows\r\nline endings\r\n",
    "",
    # digits (the smollm pre-tokenizer splits every digit)
    "12345",
    "Call 555-0199 or pay $1,234.56 by 2024-12-31.",
    "pi is 3.14159, 1e10 is big, 0x1F is hex, 007",
    # punctuation
    "Wait... what?! (yes) [no] {maybe} <tag> \"double\" 'single' `tick` -- a/b\\c @#%^&*_+=|~",
    "https://example.com/path/to?q=1&r=two#frag",
    # code
    'fn main() {\n    let name = "world";\n    println!("Hello, {}!", name);\n}\n',
    "def square(x):\n\treturn x ** 2  # comment\n",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    # emoji, CJK and other scripts
    "I love 🦀 Rust! 🎉👍🏽👨‍👩‍👧",
    "你好，世界！这是一个测试。",
    "こんにちは、東京。カタカナ",
    "안녕하세요 세계",
    "Ελληνικά και русский язык",
    # accented Latin, precomposed and combining
    "café naïve résumé Zürich São Paulo Ångström façade",
    "cafe\u0301 (combining acute) and \ufb01 ligature and zero\u200bwidth",
    # special tokens
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|endoftext|>",
    "a<|im_end|>b <|im_start|> c",
    "<|im_start <|im_start|x|> < |im_end|> im_end",
    "<filename>src/main.rs<file_sep><repo_name>x",
]


def render_chat(template, messages, bos_token, eos_token):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
    )


def dump(fixture):
    """Pretty JSON with one line per case (ids stay on the line of their text)."""
    compact = lambda v: json.dumps(v, ensure_ascii=False)
    lines = []
    for key, value in fixture.items():
        if key == "cases":
            body = ",\n".join("  " + compact(case) for case in value)
            lines.append(f' {compact(key)}: [\n{body}\n ]')
        elif key == "chat":
            body = ",\n".join(f"  {compact(k)}: {compact(v)}" for k, v in value.items())
            lines.append(f" {compact(key)}: {{\n{body}\n }}")
        else:
            lines.append(f" {compact(key)}: {compact(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=GGUF)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()

    import gguf
    import llama_cpp
    from llama_cpp import Llama

    reader = gguf.GGUFReader(str(args.model))

    def meta(key):
        field = reader.get_field(key)
        if field is None:
            return None
        return field.contents()

    template = meta("tokenizer.chat_template")
    bos_id = int(meta("tokenizer.ggml.bos_token_id"))
    eos_id = int(meta("tokenizer.ggml.eos_token_id"))
    pre = meta("tokenizer.ggml.pre")
    add_bos = meta("tokenizer.ggml.add_bos_token")
    tokens = meta("tokenizer.ggml.tokens")

    llm = Llama(model_path=str(args.model), vocab_only=True, verbose=False)
    # llama.cpp's own view of the same metadata must agree with gguf's.
    assert llm.token_bos() == bos_id, (llm.token_bos(), bos_id)
    assert llm.token_eos() == eos_id, (llm.token_eos(), eos_id)
    assert llm.metadata.get("tokenizer.chat_template") == template

    def tok(text):
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    cases = []
    for text in CASES:
        ids = tok(text)
        back = llm.detokenize(ids, special=True).decode("utf-8")
        if back != text:
            print(f"note: detokenize does not round-trip {text!r} -> {back!r}", file=sys.stderr)
        cases.append({"text": text, "ids": ids})

    messages = json.loads(PROMPT_JSON.read_text(encoding="utf-8"))["messages"]
    prompt = render_chat(template, messages, tokens[bos_id], tokens[eos_id])

    fixture = {
        "model": args.model.name,
        "generator": f"scripts/smollm2_reference.py, llama-cpp-python {llama_cpp.__version__}",
        "tokenizer_model": meta("tokenizer.ggml.model"),
        "tokenizer_pre": pre,
        "add_bos_token": add_bos,
        "bos_token_id": bos_id,
        "bos_token": tokens[bos_id],
        "eos_token_id": eos_id,
        "eos_token": tokens[eos_id],
        "chat_template": template,
        "cases": cases,
        "chat": {"messages": messages, "add_generation_prompt": True, "prompt": prompt, "ids": tok(prompt)},
    }
    text = dump(fixture)
    if args.check:
        old = args.out.read_text(encoding="utf-8") if args.out.exists() else None
        if old != text:
            print(f"{args.out} differs from what llama.cpp produces now", file=sys.stderr)
            sys.exit(1)
        print(f"{args.out} is up to date", file=sys.stderr)
        return
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(cases)} cases, chat prompt {len(fixture['chat']['ids'])} tokens)", file=sys.stderr)


if __name__ == "__main__":
    main()
