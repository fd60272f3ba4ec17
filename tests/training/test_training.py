"""Training: BPTT modes against a full-BPTT reference, exact resume, and multi-process accelerate."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pytest
import torch
from support import SAMPLE_BOOK, SHARED_DATA

from lcirc_plugins.errors import ConfigError, LCIRCError
from lcirc_plugins.training import TrainConfig, Trainer, TrainingDivergedError, compress_for_training, steps_with_gradient


def _segments(count: int = 4, length: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randint(5, 1000, (1, length), generator=g) for _ in range(count)]


def _gradients(model, memory_fn) -> dict[str, torch.Tensor]:
    model.adapter.zero_grad(set_to_none=True)
    window = torch.randint(5, 1000, (1, 12), generator=torch.Generator().manual_seed(4))
    model(window, memory=memory_fn(), labels=window).loss.backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.adapter.named_parameters()}


def _reference_memory(model, segments, keep: set[int]) -> torch.Tensor:
    """An independent reference: every step records a graph; steps outside ``keep`` are detached after."""
    compressor = model.adapter.compressor
    state = compressor.initial_state(1)
    outputs = []
    for i, ids in enumerate(segments):
        state = compressor.step(state, compressor.segment_features(model.embed_tokens(ids)))
        if i not in keep:
            state = state.detach()
        outputs.append(state)
    return torch.cat(outputs, dim=1)


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)


def test_truncated_bptt_over_all_steps_equals_full_bptt(make_lcirc):
    model = make_lcirc("llama", gate_init=0.5)
    segments = _segments()
    full = _gradients(model, lambda: compress_for_training(model, segments, steps_with_gradient(4, "full", 1, random.Random(0))))
    truncated = _gradients(
        model, lambda: compress_for_training(model, segments, steps_with_gradient(4, "truncated", 4, random.Random(0)))
    )
    assert full["compressor.initial_latents"].abs().sum() > 0
    assert _close(full, truncated)


def test_truncated_bptt_of_one_step_gives_no_gradient_to_earlier_steps(make_lcirc):
    model = make_lcirc("llama", gate_init=0.5)
    segments = _segments()
    assert steps_with_gradient(4, "truncated", 1, random.Random(0)) == {3}
    grads = _gradients(model, lambda: compress_for_training(model, segments, {3}))
    full = _gradients(model, lambda: compress_for_training(model, segments, {0, 1, 2, 3}))
    assert grads["compressor.initial_latents"].abs().sum() == 0, "h(0) only reaches the loss through step 1"
    assert grads["compressor.perceiver.norm.weight"].abs().sum() > 0
    assert not _close(grads, full)


def test_selective_bptt_equals_full_bptt_on_the_selected_paths(make_lcirc):
    model = make_lcirc("llama", gate_init=0.5)
    segments = _segments(count=5)
    selected = steps_with_gradient(5, "selective", 2, random.Random(7))
    assert len(selected) == 2 and selected != {3, 4}, "pick a seed whose subset is not the truncated one"
    selective = _gradients(model, lambda: compress_for_training(model, segments, selected))
    reference = _gradients(model, lambda: _reference_memory(model, segments, selected))
    full = _gradients(model, lambda: compress_for_training(model, segments, set(range(5))))
    assert _close(selective, reference)
    assert not _close(selective, full)


def test_gradient_checkpointing_of_the_recurrence_gives_the_same_gradients(make_lcirc):
    model = make_lcirc("llama", gate_init=0.5)
    segments = _segments()
    plain = _gradients(model, lambda: compress_for_training(model, segments, {1, 2, 3}))
    checkpointed = _gradients(model, lambda: compress_for_training(model, segments, {1, 2, 3}, gradient_checkpointing=True))
    assert _close(plain, checkpointed)


def _config(tmp_path, **overrides) -> TrainConfig:
    base = {
        "data": str(SAMPLE_BOOK),
        "output_dir": str(tmp_path),
        "steps": 10,
        "lr": 1e-3,
        "bptt": "selective",
        "bptt_window": 2,
        "min_train_segment_len": 16,
        "max_train_segment_len": 32,
        "min_segments": 1,
        "max_segments": 3,
        "loss_window": 16,
        "eval_every": 0,
        "save_every": 5,
        "seed": 1,
    }
    return TrainConfig(**{**base, **overrides})


def test_training_ten_steps_equals_five_then_resume_five(tiny_backbones, smollm2_tokenizer, tmp_path):
    from lcirc_plugins import LCIRCConfig, LCIRCModel

    def fresh_model() -> LCIRCModel:
        torch.manual_seed(0)
        return LCIRCModel(
            tiny_backbones["llama"],
            smollm2_tokenizer,
            LCIRCConfig(segment_len=32, num_latents=4, head_dim=16, gca_every=2, max_segment_len=64),
        )

    straight = fresh_model()
    Trainer(_config(tmp_path / "a"), model=straight).train()
    straight.injector.detach()
    first = fresh_model()
    Trainer(_config(tmp_path / "b", steps=5), model=first).train()
    first.injector.detach()
    resumed = fresh_model()
    trainer = Trainer(_config(tmp_path / "b"), model=resumed)
    assert trainer.step == 5 and trainer.data.position == 5
    trainer.train()
    resumed.injector.detach()
    a, b = straight.adapter.state_dict(), resumed.adapter.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    untrained = fresh_model().adapter.state_dict()
    assert any(not torch.equal(a[k], untrained[k]) for k in a), "training must change the adapter"
    lines = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 11)) and all("gates" in r and "tokens_per_s" in r for r in lines)
    assert sorted(p.name for p in (tmp_path / "a").glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]


def test_stage_two_trains_on_answer_tokens_with_the_question_conditioning(tiny_backbones, smollm2_tokenizer, tmp_path):
    from lcirc_plugins import LCIRCConfig, LCIRCModel

    records = [
        {
            "context": SAMPLE_BOOK.read_text(encoding="utf-8-sig")[i * 800 : (i + 1) * 800],
            "question": "Who?",
            "answer": f"Jim {i}",
        }
        for i in range(40)
    ]
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records))
    torch.manual_seed(0)
    model = LCIRCModel(
        tiny_backbones["llama"],
        smollm2_tokenizer,
        LCIRCConfig(segment_len=32, num_latents=4, head_dim=16, gca_every=2, query_dependent=True, max_segment_len=64),
    )
    try:
        trainer = Trainer(
            _config(tmp_path / "run", stage="qa", data=str(data), steps=3, eval_every=3, eval_examples=2), model=model
        )
        example = next(trainer.data)
        answer_positions = (example.labels != -100).nonzero().flatten().tolist()
        assert smollm2_tokenizer.decode(example.labels[answer_positions]).startswith("Jim ")
        assert example.query_ids is not None
        trainer.train()
        mixer_gate = model.adapter.compressor.query_mixer.attn_gate
        assert mixer_gate.item() != 0.0, "the QD mixer must be trained in stage 2"
        last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
        assert "eval_loss" in last and "eval_loss_no_memory" in last
    finally:
        model.injector.detach()


def test_unknown_and_malformed_overrides_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown training config keys \\['lerning_rate'\\]"):
        TrainConfig.from_file_and_overrides(None, ["--lerning_rate=1"])
    with pytest.raises(ConfigError, match="expected a int"):
        TrainConfig.from_file_and_overrides(None, ["--steps=ten"])
    config = TrainConfig.from_file_and_overrides(
        None, ["--steps=7", '--adapter={"num_latents": 8}', "--gradient_checkpointing=true"]
    )
    assert (config.steps, config.adapter, config.gradient_checkpointing) == (7, {"num_latents": 8}, True)


def test_accelerate_launch_with_two_cpu_processes_keeps_replicas_identical(tiny_backbones, smollm2_tokenizer, tmp_path):
    backbone_dir = tmp_path / "tiny-llama"
    tiny_backbones["llama"].save_pretrained(backbone_dir)
    smollm2_tokenizer.save_pretrained(backbone_dir)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "lcirc_plugins.training",
        f"--backbone={backbone_dir}",
        f"--data={SAMPLE_BOOK}",
        f"--output_dir={out}",
        "--steps=3",
        "--save_every=3",
        "--eval_every=0",
        "--min_train_segment_len=16",
        "--max_train_segment_len=32",
        "--max_segments=2",
        "--loss_window=16",
        "--lr=1e-3",
        '--adapter={"num_latents": 4, "head_dim": 16, "gca_every": 2, "segment_len": 32, "max_segment_len": 64, "gate_init": 0.1}',
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    fingerprints = [(out / f"fingerprint-rank{r}.txt").read_text() for r in (0, 1)]
    assert fingerprints[0] == fingerprints[1]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_a_nan_loss_stops_training_with_a_clear_message(make_lcirc, tmp_path):
    model = make_lcirc("llama", gate_init=0.5)
    with torch.no_grad():
        model.adapter.gca["0"].attn_gate.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="loss is nan at step 0: lower lr"):
        Trainer(_config(tmp_path, steps=2), model=model).train()


def test_documents_come_from_a_datasets_folder_filtered_by_length(tmp_path, smollm2_tokenizer):
    from datasets import Dataset

    from lcirc_plugins.training.data import ExampleStream

    book = SAMPLE_BOOK.read_text(encoding="utf-8-sig")
    Dataset.from_dict({"text": ["too short to use", book[:20_000], book[20_000:]]}).save_to_disk(str(tmp_path / "ds"))
    config = _config(tmp_path / "run", data=str(tmp_path / "ds"), min_doc_tokens=1000)
    stream = ExampleStream(smollm2_tokenizer, config)
    examples = [next(stream) for _ in range(40)]
    decoded = {smollm2_tokenizer.decode(e.input_ids) for e in examples}
    assert all(text in book for text in decoded), "every window is real text from the kept documents"
    assert all(1 <= len(e.segments) <= 3 and all(16 <= s.shape[1] <= 32 for s in e.segments) for e in examples)


def test_the_curriculum_grows_the_number_of_segments(smollm2_tokenizer, tmp_path):
    from lcirc_plugins.training.data import ExampleStream

    config = _config(tmp_path, min_segments=1, max_segments=6, curriculum_steps=30)
    stream = ExampleStream(smollm2_tokenizer, config, shuffle_buffer=1)
    counts = [len(next(stream).segments) for _ in range(60)]
    assert max(counts[:5]) <= 2 and max(counts[40:]) > 3


def test_held_out_texts_are_cut_into_full_segments_like_the_product_cuts_them(smollm2_tokenizer, tmp_path):
    from lcirc_plugins.training.data import ExampleStream

    config = _config(tmp_path, stage="qa", data="synthetic:passkey", min_segments=2, max_segments=4)
    for split, full in (("eval", True), ("train", False)):
        stream = ExampleStream(smollm2_tokenizer, config, split, shuffle_buffer=1)
        lengths = [[s.shape[1] for s in next(stream).segments] for _ in range(8)]
        cut_like_the_product = all(all(n == 32 for n in example[:-1]) for example in lengths)
        assert cut_like_the_product == full, (split, lengths)


def test_train_command_reports_config_errors_without_a_traceback(capsys):
    from lcirc_plugins.training.__main__ import main

    assert main(["--stage=pretrain"]) == 2
    assert "error: stage must be 'lm' or 'qa'" in capsys.readouterr().err


def test_old_training_key_names_still_work_with_a_deprecation_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match="TrainConfig.window is now loss_window"):
        config = TrainConfig(window=32, min_segment_len=8, max_segment_len=16)
    assert (config.loss_window, config.min_train_segment_len, config.max_train_segment_len) == (32, 8, 16)
    preset = tmp_path / "old.json"
    preset.write_text(json.dumps({"window": 64, "max_segment_len": 128, "adapter": {"max_segment_len": 512, "window": 1024}}))
    with pytest.warns(DeprecationWarning, match="'max_segment_len' is now 'max_train_segment_len'"):
        config = TrainConfig.from_file_and_overrides(str(preset), ["--min_segment_len=32"])
    assert (config.loss_window, config.min_train_segment_len, config.max_train_segment_len) == (64, 32, 128)
    assert config.adapter == {"max_segment_len": 512, "window": 1024}, "the adapter's own keys keep their names"


@pytest.mark.slow
def test_stage_one_on_smollm2_beats_the_no_memory_baseline(tmp_path):
    """Smoke-scale: a short stage-1 run on the books lowers held-out NLL below the same model without memory."""
    from lcirc_plugins.training.config import TrainConfig as Config

    books = SHARED_DATA / "books"
    config = Config(
        data=str(books),
        eval_data=str(books / "stevenson-treasure-island.txt"),
        output_dir=str(tmp_path),
        steps=150,
        lr=1e-3,
        warmup_steps=10,
        adapter={"num_latents": 16, "perceiver_layers": 1, "gca_layers": [0, 15, 29], "ffn_mult": 1.0, "max_segment_len": 512},
        min_train_segment_len=256,
        max_train_segment_len=512,
        max_segments=2,
        loss_window=128,
        eval_every=150,
        eval_examples=24,
        save_every=150,
    )
    trainer = Trainer(config)
    trainer.train()
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    print({k: v for k, v in last.items() if k.startswith("eval")})  # recorded in the issue notes (-s shows it)
    assert last["eval_loss"] < last["eval_loss_no_memory"], last


def test_stage_two_reads_synthetic_tasks_by_name(smollm2_tokenizer, tmp_path):
    from lcirc_plugins.training.data import ExampleStream

    config = _config(tmp_path, stage="qa", data=f"synthetic:book_facts:{SAMPLE_BOOK}", max_segments=4)
    example = next(ExampleStream(smollm2_tokenizer, config))
    answer = smollm2_tokenizer.decode(example.labels[example.labels != -100]).strip()
    context = smollm2_tokenizer.decode(torch.cat([s[0] for s in example.segments]))
    assert answer.removesuffix("<|im_end|>").strip() in context


def test_bf16_mixed_precision_trains_on_cpu(make_lcirc, tmp_path):
    from accelerate.state import AcceleratorState

    model = make_lcirc("llama", gate_init=0.5)
    before = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    AcceleratorState._reset_state(reset_partial_state=True)  # one precision per process, as in a real run
    try:
        Trainer(_config(tmp_path, steps=2, mixed_precision="bf16"), model=model).train()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    after = model.adapter.state_dict()
    assert all(v.dtype == torch.float32 for v in after.values()), "master weights stay in float32"
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())


def test_gates_get_their_own_learning_rate(make_lcirc, tmp_path):
    trainer = Trainer(_config(tmp_path, lr=1e-3, gate_lr_scale=20.0), model=make_lcirc("llama"))
    others, gates = trainer.optimizer.param_groups
    gate_ids = {id(p) for n, p in trainer.model.adapter.named_parameters() if n.endswith("_gate")}
    assert {id(p) for p in gates["params"]} == gate_ids and gate_ids.isdisjoint(id(p) for p in others["params"])
    assert gates["lr"] == pytest.approx(20 * others["lr"])


def test_reconstruction_windows_repeat_the_compressed_text(smollm2_tokenizer, tmp_path):
    from lcirc_plugins.training.data import ExampleStream

    def windows_inside_prefix(reconstruct: float) -> list[bool]:
        stream = ExampleStream(smollm2_tokenizer, _config(tmp_path, reconstruct=reconstruct), shuffle_buffer=1)
        found = []
        for _ in range(20):
            example = next(stream)
            prefix, window = torch.cat([s[0] for s in example.segments]).tolist(), example.input_ids.tolist()
            found.append(any(prefix[i : i + len(window)] == window for i in range(len(prefix) - len(window) + 1)))
        return found

    assert all(windows_inside_prefix(1.0))
    assert not any(windows_inside_prefix(0.0)), "continuation windows come after the prefix, not from it"
    with pytest.raises(ConfigError, match="reconstruct is a probability"):
        _config(tmp_path, reconstruct=1.5)


def test_continuations_can_read_a_window_without_loss_before_the_scored_tokens(smollm2_tokenizer, tmp_path):
    from lcirc_plugins.training.data import IGNORE, ExampleStream

    stream = ExampleStream(smollm2_tokenizer, _config(tmp_path, lm_context=24, loss_window=16), shuffle_buffer=1)
    book_ids = smollm2_tokenizer(SAMPLE_BOOK.read_text(encoding="utf-8-sig"), add_special_tokens=False)["input_ids"]
    for _ in range(10):
        example = next(stream)
        assert example.input_ids.shape[0] == 40 and example.labels[:24].eq(IGNORE).all()
        assert example.labels[24:].tolist() == example.input_ids[24:].tolist()
        text = torch.cat([s[0] for s in example.segments] + [example.input_ids]).tolist()
        start = book_ids.index(text[0])
        while book_ids[start : start + len(text)] != text:  # the memory, the unscored window and the scored tokens follow on
            start = book_ids.index(text[0], start + 1)
    with pytest.raises(ConfigError, match="lm_context counts tokens"):
        _config(tmp_path, lm_context=-1)


def test_decoy_continuations_hide_an_unasked_pass_key_in_the_memory_and_keep_the_rest(smollm2_tokenizer, tmp_path):
    from lcirc_plugins.training.data import ExampleStream

    sizes = {"lm_context": 24, "loss_window": 16, "min_train_segment_len": 32, "max_train_segment_len": 48}  # room for the decoy
    plain = ExampleStream(smollm2_tokenizer, _config(tmp_path, **sizes), shuffle_buffer=1)
    decoyed = ExampleStream(smollm2_tokenizer, _config(tmp_path, **sizes, lm_decoy=1.0), shuffle_buffer=1)
    for _ in range(10):
        example, with_decoy = next(plain), next(decoyed)
        memory = smollm2_tokenizer.decode(torch.cat([s[0] for s in with_decoy.segments]))
        assert re.search(r"The pass key is (\d{5})\. Remember it\. \1 is the pass key\.", memory), memory
        assert [s.shape[1] for s in with_decoy.segments] == [s.shape[1] for s in example.segments]
        assert with_decoy.input_ids.tolist() == example.input_ids.tolist() and with_decoy.labels.tolist() == example.labels.tolist()
        assert "pass key" not in smollm2_tokenizer.decode(torch.cat([s[0] for s in example.segments]))
    with pytest.raises(ConfigError, match="lm_decoy is a share"):
        _config(tmp_path, lm_decoy=1.5)


def test_synthetic_mixtures_draw_every_task_and_grow_with_the_curriculum(smollm2_tokenizer, tmp_path):
    from lcirc_plugins.training.data import ExampleStream

    config = _config(
        tmp_path,
        stage="qa",
        data=f"synthetic:passkey,book_facts:{SAMPLE_BOOK}",
        min_segments=1,
        max_segments=8,
        curriculum_steps=40,
    )
    stream = ExampleStream(smollm2_tokenizer, config, shuffle_buffer=1)
    examples = [next(stream) for _ in range(60)]
    questions = {smollm2_tokenizer.decode(e.query_ids[0]) for e in examples}
    assert "What is the pass key?" in questions and len(questions) > 1, "both tasks appear"
    tokens = [sum(s.shape[1] for s in e.segments) for e in examples]
    assert max(tokens[:10]) < max(tokens[-20:]), "contexts grow as the curriculum advances"
    with pytest.raises(LCIRCError, match="unknown synthetic task 'pasky'"):
        next(ExampleStream(smollm2_tokenizer, _config(tmp_path, stage="qa", data="synthetic:pasky")))


def test_decoy_sources_hide_an_unasked_pass_key_in_every_context(smollm2_tokenizer, tmp_path):
    from lcirc_plugins.training.data import ExampleStream

    stream = ExampleStream(smollm2_tokenizer, _config(tmp_path, stage="qa", data=f"synthetic:book_facts+decoy:{SAMPLE_BOOK}"), shuffle_buffer=1)
    for example in (next(stream) for _ in range(4)):
        context = smollm2_tokenizer.decode(torch.cat([s[0] for s in example.segments]))
        answer = smollm2_tokenizer.decode(example.labels[example.labels != -100])
        key = re.search(r"The pass key is (\d+)\. Remember it\. \1 is the pass key\.", context)
        assert key and "pass key" not in smollm2_tokenizer.decode(example.query_ids[0]) and key.group(1) not in answer
    for spec in (f"passkey+decoy:{SAMPLE_BOOK}", f"book_facts+decoys:{SAMPLE_BOOK}"):
        with pytest.raises(LCIRCError, match="'\\+decoy' goes with a task other than passkey"):
            next(ExampleStream(smollm2_tokenizer, _config(tmp_path, stage="qa", data=f"synthetic:{spec}")))


def _text_folder(tmp_path, count: int = 20):
    """``count`` documents cut from the sample book (every 20th is held out for evaluation)."""
    folder = tmp_path / "texts"
    folder.mkdir()
    text = SAMPLE_BOOK.read_text(encoding="utf-8")
    size = len(text) // count
    for i in range(count):
        (folder / f"{i:02d}.txt").write_text(text[i * size : (i + 1) * size], encoding="utf-8")
    return folder


def test_a_share_of_qa_examples_continue_plain_text_and_are_evaluated_with_and_without_memory(make_lcirc, smollm2_tokenizer, tmp_path):
    from lcirc_plugins.training.data import ExampleStream

    folder = _text_folder(tmp_path)
    config = _config(tmp_path, stage="qa", data="synthetic:passkey", lm_data=str(folder), lm_share=0.5, max_segments=2)
    stream = ExampleStream(smollm2_tokenizer, config, shuffle_buffer=1)
    examples = [next(stream) for _ in range(40)]
    continuations = [e for e in examples if e.query_ids is None]
    assert 8 <= len(continuations) <= 32, "about half continue plain text"
    assert all(bool((e.labels == e.input_ids).all()) and len(e.input_ids) == 16 for e in continuations), "loss on every window token"
    questions = [e for e in examples if e.query_ids is not None]
    assert len(questions) + len(continuations) == 40 and all(bool((e.labels == -100).any()) for e in questions)
    eval_examples = [next(ExampleStream(smollm2_tokenizer, config, "eval", shuffle_buffer=1)) for _ in range(3)]
    assert all(e.query_ids is not None for e in eval_examples), "held-out QA stays QA"

    model = make_lcirc("llama", reader="layer", lora_rank=4, tokens_per_slot=8, slot_selection=True)
    trainer = Trainer(_config(tmp_path / "run", stage="qa", data="synthetic:passkey", lm_data=str(folder), lm_share=0.5, steps=2, eval_every=2, eval_examples=2), model=model)
    trainer.train()
    record = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["eval_lm_loss"] > 0 and record["eval_lm_loss_no_memory"] > 0
    with pytest.raises(ConfigError, match="lm_share"):
        TrainConfig(stage="qa", lm_share=0.5)
    with pytest.raises(ConfigError, match="lm_share"):
        TrainConfig(stage="lm", lm_data=str(folder), lm_share=0.5)


def test_held_out_continuations_are_evaluated_beside_answers_in_own_words(make_lcirc, tmp_path):
    """The held-out continuation reads plain text (an lm-stage stream): qa-only options must not follow it there
    (R18 stopped at its last evaluation with "answers_in_own_words is a share ... of qa-stage examples")."""
    folder = _text_folder(tmp_path)
    model = make_lcirc("llama", reader="layer", lora_rank=4, tokens_per_slot=8, slot_selection=True)
    config = _config(
        tmp_path / "run", stage="qa", data="synthetic:passkey", lm_data=str(folder), lm_share=0.5, answers_in_own_words=0.5, eval_examples=1
    )
    record = Trainer(config, model=model).evaluate()
    assert record["eval_lm_loss"] > 0 and record["eval_lm_loss_no_memory"] > 0
