"""LangChain's default embeddings call against the gateway.

`OpenAIEmbeddings` tokenizes with tiktoken and sends token-id arrays (not text) unless told
otherwise; the gateway decodes them with its configured encoding. Run by
tests/it/python_sdk.rs, which passes QM_BASE_URL, QM_API_KEY and QM_TIKTOKEN_CL100K (the
cl100k_base ranks file, written from the tiktoken-rs crate: tiktoken would download it).
"""
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

# tiktoken looks for sha1(url) in TIKTOKEN_CACHE_DIR before downloading, and checks the
# file's sha256 against the one it expects, so the copy must be byte-identical.
cache = tempfile.mkdtemp(prefix="qm-tiktoken-")
url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
shutil.copy(os.environ["QM_TIKTOKEN_CL100K"], os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()))
os.environ["TIKTOKEN_CACHE_DIR"] = cache

import httpx  # noqa: E402
from langchain_openai import OpenAIEmbeddings  # noqa: E402
from openai import OpenAI  # noqa: E402

base, key = os.environ["QM_BASE_URL"] + "/v1", os.environ["QM_API_KEY"]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# Record what LangChain actually sends, to be sure the ids path is the one under test.
sent = []


def record(request):
    if request.url.path.endswith("/embeddings"):
        sent.append(json.loads(request.content))


http_client = httpx.Client(event_hooks={"request": [record]})
texts = ["How do I rotate an API key?", "Refunds are issued within five business days."]
# The model name is not an OpenAI one: tiktoken falls back to cl100k_base, as it does for
# every gateway-served embedding model.
lc = OpenAIEmbeddings(model="all-MiniLM-L6-v2", base_url=base, api_key=key, http_client=http_client, max_retries=0)
docs = lc.embed_documents(texts)
query = lc.embed_query(texts[0])
check(len(sent) >= 2, f"requests sent: {len(sent)}")
check(all(isinstance(i, list) and all(isinstance(t, int) for t in i) for i in sent[0]["input"]),
      f"LangChain sent token ids: {sent[0]['input']!r}")
check(len(docs) == 2 and all(len(d) == 384 for d in docs), "two 384-dimension vectors")

# The same texts sent as text through the official client: the vectors agree.
client = OpenAI(base_url=base, api_key=key, max_retries=0)
direct = [d.embedding for d in client.embeddings.create(model="all-MiniLM-L6-v2", input=texts).data]
for i in range(2):
    check(cosine(docs[i], direct[i]) > 0.9999, f"text {i}: cosine {cosine(docs[i], direct[i])}")
check(cosine(query, direct[0]) > 0.9999, "embed_query agrees")
check(cosine(docs[0], docs[1]) < 0.9, "different texts, different vectors")

print(f"langchain embeddings: {checks} passed, 0 failed")
