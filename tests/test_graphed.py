"""The training step (rodimus_lab.graphed: eager and as a CUDA graph) and the Trainer's host reads.

CPU: the refusals and their messages; which step the Trainer chooses (``cuda_graphs`` "auto", the default:
graphed on one CUDA device in one process, else eager, and why) and its fall-back to the eager step when a
capture fails under "auto"; the Trainer's logged losses are the mean of each step's micro-batch
losses at the weights before the step, and ``log_every`` reads them in batches without changing a number.
GPU (``-m gpu``): graphed steps give the losses of the same eager steps (Rodimus, Rodimus+, Transformer++),
a changing lr included; a graphed Trainer run (and its resume) gives the eager run's losses; a Trainer with
the default config runs graphed on a GPU, and one whose step cannot be captured falls back to the eager step.
"""

import contextlib
import re
import warnings

import pytest
import torch

from rodimus_lab import ModelConfig, RodimusLM, seed_everything
from rodimus_lab.config import ConfigError
from rodimus_lab.data.mqar import make_mqar_splits, mqar_preset
from rodimus_lab import train
from rodimus_lab.graphed import GraphedStep, NotCapturable, lm_loss, training_step
from rodimus_lab.train import Callback, StepChoice, TrainConfig, Trainer, choose_step

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run on the H200 with `pytest -m gpu`)")
TINY = dict(vocab_size=64, d_model=32, n_layers=1, mem_size=8, backend="reference")


@pytest.fixture(scope="module")
def task():
    return make_mqar_splits(mqar_preset("L64_p4", seq_len=16, num_kv_pairs=2, vocab_size=64,
                                        num_train=256, num_test=64))


def _trainer(task, callbacks=(), model=TINY, **overrides):
    """A Trainer of a freshly seeded model (the ModelConfig fields ``model``)."""
    seed_everything(0)
    settings = dict(max_steps=8, batch_size=8, lr=3e-3, warmup_steps=3, eval_every=0, progress=False)
    settings.update(overrides)
    return Trainer(RodimusLM(ModelConfig(**model)), task[0], task[1], TrainConfig(**settings), callbacks)


def _train_rows(history):
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in history if r["kind"] == "train"]


def _logged_losses(trainer) -> torch.Tensor:
    """The logged training loss of every step of ``trainer``'s run."""
    return torch.tensor([loss for _, loss, _, _ in _train_rows(trainer.history)])


# ------------------------------------------------------------------------------ CPU

def test_training_step_averages_clips_steps_and_drops_the_gradients():
    """Against the step written out: the micro-batches' mean gradient, scaled to the clipping norm, one SGD
    step of lr 1 (so the parameters move by exactly the clipped gradient); no gradients left. In float64 (the losses
    and the norm come back as float32)."""
    torch.manual_seed(0)
    model = RodimusLM(ModelConfig(**TINY)).double()
    params = list(model.parameters())
    micros = [(x, x) for x in torch.randint(0, 64, (2, 3, 16))]
    mean_grads = [torch.zeros_like(p) for p in params]
    losses = []
    for x, y in micros:
        loss = lm_loss(model, x, y)
        losses.append(loss.item())
        for total, g in zip(mean_grads, torch.autograd.grad(loss, params)):
            total += g / len(micros)
    norm = torch.cat([g.flatten() for g in mean_grads]).norm().item()
    before = [p.detach().clone() for p in params]
    got_losses, got_norm = training_step(model, torch.optim.SGD(params, lr=1.0), micros, grad_clip=norm / 2)
    assert got_losses.tolist() == pytest.approx(losses, rel=1e-7) and got_norm.item() == pytest.approx(norm, rel=1e-7)
    for p, p0, g in zip(params, before, mean_grads):
        torch.testing.assert_close(p0 - p.detach(), g / 2, rtol=1e-6, atol=1e-12)
        assert p.grad is None


def test_training_step_exchanges_gradients_on_the_last_micro_batch_only():
    """A DistributedDataParallel (anything with ``no_sync`` and ``.module``) skips the exchange on all but the
    last micro-batch's backward."""
    seen = []

    class Wrapped(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module, self.syncing = module, True

        @contextlib.contextmanager
        def no_sync(self):
            self.syncing = False
            yield
            self.syncing = True

        def forward(self, *args, **kwargs):
            seen.append((self.syncing, kwargs.get("check_inputs")))
            return self.module(*args, **kwargs)

    model = Wrapped(RodimusLM(ModelConfig(**TINY)))
    micros = [(x, x) for x in torch.randint(0, 64, (3, 2, 16))]
    training_step(model, torch.optim.SGD(model.parameters(), lr=1e-3), micros)
    assert seen == [(False, False), (False, False), (True, False)]   # and the wrapped model's id check skipped


def test_graphed_step_refuses_a_plain_optimizer():
    model = RodimusLM(ModelConfig(**TINY))
    with pytest.raises(ValueError, match="capturable=True"):
        GraphedStep(model, torch.optim.AdamW(model.parameters()))


@pytest.mark.skipif(CUDA, reason="the CPU refusal")
def test_graphed_step_refuses_the_cpu():
    model = RodimusLM(ModelConfig(**TINY))
    with pytest.raises(ValueError, match=r"one CUDA device, found \['cpu'\].*Train eagerly"):
        GraphedStep(model, torch.optim.AdamW(model.parameters(), capturable=True))


@pytest.mark.parametrize("value", [True, 1, "yes"])
def test_cuda_graphs_values_the_config_refuses_name_the_field(value):
    """True on a CPU device; anything but "auto", true and false (1 is not true)."""
    with pytest.raises(ConfigError, match="TrainConfig.cuda_graphs.*'auto'") as caught:
        TrainConfig(cuda_graphs=value, device="cpu")
    assert caught.value.field == "cuda_graphs"


def test_the_default_is_the_graphed_step_where_it_applies():
    """The default must stay "auto": a user who trains on a GPU gets the graphed step without knowing the flag."""
    assert TrainConfig().cuda_graphs == "auto"
    assert choose_step(TrainConfig().cuda_graphs, torch.device("cuda"), 1).graphed


@pytest.mark.parametrize("setting, device, world, graphed, why", [
    ("auto", "cuda", 1, True, "auto.*one CUDA device, one process"),
    ("auto", "cuda:1", 1, True, "one CUDA device"),
    (True, "cuda", 1, True, "= true"),
    ("auto", "cpu", 1, False, "auto, but the device is cpu, and CUDA graphs need a CUDA device"),
    ("auto", "cuda", 2, False, "auto, but 2 processes: .*DistributedDataParallel"),
    (False, "cuda", 1, False, "= false"),
    (False, "cpu", 4, False, "= false"),
])
def test_choose_step(setting, device, world, graphed, why):
    choice = choose_step(setting, torch.device(device), world)
    assert choice.graphed is graphed
    assert str(choice).startswith("training step: " + ("one CUDA graph" if graphed else "eager"))
    assert re.search(why, choice.reason), choice.reason


@pytest.mark.parametrize("device, world, why", [("cpu", 1, "need a CUDA device"), ("cuda", 2, "2 processes")])
def test_cuda_graphs_true_where_it_cannot_apply_names_the_field_and_the_fix(device, world, why):
    with pytest.raises(ConfigError, match=rf"cuda_graphs = True, but .*{why}.*set cuda_graphs = 'auto'.* or False"):
        choose_step(True, torch.device(device), world)


@pytest.mark.skipif(CUDA, reason="'auto' resolves to the CPU only without CUDA")
def test_cuda_graphs_true_on_a_cpu_machine_names_the_field(task):
    with pytest.raises(ConfigError, match="cuda_graphs = True, but the device is cpu") as caught:
        _trainer(task, cuda_graphs=True)
    assert caught.value.field == "cuda_graphs"


def test_the_default_trains_eagerly_on_the_cpu_and_says_so(task, capsys):
    trainer = _trainer(task, device="cpu", max_steps=2, progress=True)
    assert trainer.step_choice == StepChoice(False, "train.cuda_graphs = auto, but the device is cpu, and CUDA "
                                                    "graphs need a CUDA device")
    assert trainer.graphed_step is None
    trainer.fit()
    log = capsys.readouterr().err
    assert "training step: eager (train.cuda_graphs = auto, but the device is cpu" in log
    quiet = _trainer(task, device="cpu", max_steps=2)   # progress off: nothing printed
    quiet.fit()
    assert "training step" not in capsys.readouterr().err


class CaptureFails:
    """What the Trainer sees of a GraphedStep whose capture fails (as a step that reads a device value does):
    NotCapturable on its first call, before anything of the step ran."""

    def __init__(self, model, optimizer, **settings):
        self.optimizer = optimizer

    def set_lr(self, lr):
        pass

    def __call__(self, micro_batches):
        raise NotCapturable("the training step could not be captured as a CUDA graph: (...) Capture said: "
                            "operation not permitted when stream is capturing")


def _capture_fails(monkeypatch):
    """From here on the Trainer on this CPU chooses the graphed step, whose capture then fails."""
    monkeypatch.setattr(train, "choose_step", lambda *args: StepChoice(True, "as on a GPU"))
    monkeypatch.setattr(train, "GraphedStep", CaptureFails)


def test_a_failed_capture_under_auto_falls_back_to_the_eager_step(task, monkeypatch):
    eager = _trainer(task, max_steps=6)
    eager.fit()
    _capture_fails(monkeypatch)
    trainer = _trainer(task, max_steps=6)
    with pytest.warns(RuntimeWarning, match=r"cuda_graphs = auto: the training step runs eagerly from step 1 on, "
                      r"because .*operation not permitted when stream is capturing\. .*train\.cuda_graphs = false"):
        trainer.fit()
    assert trainer.graphed_step is None and not trainer.step_choice.graphed
    assert "step 1 could not run as a CUDA graph" in trainer.step_choice.reason
    # the same steps as the eager run's (its AdamW is not the fused one: equal up to rounding)
    fell_back, plain = map(_logged_losses, (trainer, eager))
    assert len(fell_back) == 6 and torch.allclose(fell_back, plain, rtol=1e-5, atol=0)


def test_a_failed_capture_under_true_raises(task, monkeypatch):
    _capture_fails(monkeypatch)
    trainer = _trainer(task, max_steps=6, cuda_graphs=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no fall-back warning either
        with pytest.raises(NotCapturable, match="operation not permitted"):
            trainer.fit()
    assert trainer.step == 0


def test_logged_loss_is_the_mean_of_the_micro_batches_before_the_step(task):
    """Each step's logged loss, recomputed from the batch and the weights the step started from."""
    trainer = _trainer(task, grad_accum=2, max_steps=5)
    steps, expected = trainer.iter_steps(), []
    while True:
        total = 0.0
        for micro in trainer.batch_indices(trainer.step).chunk(2):
            x, y = task[0][micro]
            with torch.no_grad():
                total += trainer.model(x, labels=y).loss.item() / 2
        expected.append(total)
        try:
            next(steps)
        except StopIteration:
            break
    logged = [loss for _, loss, _, _ in _train_rows(trainer.history)]
    assert logged == pytest.approx(expected[:5], rel=1e-6)


def test_log_every_reads_in_batches_and_logs_the_same_numbers(task, monkeypatch):
    every_step = _trainer(task, max_steps=10)
    every_step.fit()
    reads, seen = [], []
    read = Trainer._read

    def counting(self, steps):
        reads.append([m["step"] for m in steps])
        return read(self, steps)

    class Seen(Callback):
        def on_step(self, metrics, trainer):
            seen.append((metrics["step"], trainer.step, type(metrics["loss"])))

    monkeypatch.setattr(Trainer, "_read", counting)
    batched = _trainer(task, [Seen()], max_steps=10, log_every=4)
    batched.fit()
    assert reads == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]   # one wait for the device per read
    assert _train_rows(batched.history) == _train_rows(every_step.history)
    assert [s for s, _, _ in seen] == list(range(1, 11)) and all(t is float for _, _, t in seen)
    assert seen[0][1] == 4   # step 1 was logged when step 4 had been issued


# ------------------------------------------------------------------------------ GPU

def _small(block):
    return ModelConfig(vocab_size=509, d_model=256, n_layers=2, mem_size=64, block=block, n_heads=4,
                       window=96 if block == "rodimus_plus" else None)


def _losses(cfg, steps, graphed, lr=lambda i: 1e-3 if i < 6 else 5e-4):
    """``steps`` bf16 AdamW steps (clipped at 1.0) on one fixed batch, eager or graphed; the lr changes after
    the capture (the third call), so the graph must read it. At these lrs the losses fall smoothly (on the CPU,
    float32 reference: 6.29 → 1.25 for the Transformer++ over 12 steps), so rounding differences stay small."""
    torch.manual_seed(0)
    model = RodimusLM(cfg).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr(0), fused=True, capturable=graphed)
    ids = torch.randint(0, cfg.vocab_size, (2, 333), generator=torch.Generator().manual_seed(1))
    step = GraphedStep(model, optimizer, grad_clip=1.0) if graphed else None
    losses = []
    for i in range(steps):
        if graphed:
            step.set_lr(lr(i))
            losses.append(step([(ids, ids)])[0])
            continue
        for group in optimizer.param_groups:
            group["lr"] = lr(i)
        losses.append(training_step(model, optimizer, [(ids.cuda(), ids.cuda())], grad_clip=1.0,
                                    autocast_dtype=torch.bfloat16)[0])
    return torch.cat(losses).double().cpu()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("block", ["rodimus", "rodimus_plus", "transformer"])
def test_gpu_graphed_steps_give_the_eager_losses(block):
    graphed = _losses(_small(block), 12, graphed=True)
    eager = _losses(_small(block), 12, graphed=False)
    print(block, "graphed", graphed.tolist(), "eager", eager.tolist())
    assert ((graphed - eager).abs() / eager.abs()).max() <= 5e-3   # a stale lr (1e-3 kept): 0.30 on the CPU
    assert graphed[-1] < 0.5 * graphed[0]   # it trains (steps after the capture included)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("block", ["rodimus", "rodimus_plus"])
def test_gpu_graphed_trainer_matches_eager_and_resumes(block, task, tmp_path):
    """The Trainer with cuda_graphs (micro-batches, clipping, warmup/cosine lr, evals between replays) gives
    the eager Trainer's losses; a graphed run cut (at the read that logs step 6: step 8) and resumed from its
    checkpoint gives the uninterrupted run's."""
    cfg = dict(vocab_size=64, d_model=128, n_layers=2, mem_size=16, block=block,
               window=8 if block == "rodimus_plus" else None)
    common = dict(device="cuda", max_steps=12, grad_accum=2, eval_every=5, log_every=4)

    def run(callbacks=(), **overrides):
        return _trainer(task, callbacks, cfg, **{**common, **overrides})

    eager = run(cuda_graphs=False)
    eager.fit()
    graphed = run(cuda_graphs=True, out_dir=str(tmp_path / "full"))
    graphed.fit()
    e, g = map(_logged_losses, (eager, graphed))
    print(block, "graphed", g.tolist(), "eager", e.tolist())
    assert len(g) == 12 and ((g - e).abs() / e).max() <= 5e-3

    class StopAt6(Callback):
        def on_step(self, metrics, trainer):
            trainer.should_stop = trainer.should_stop or metrics["step"] == 6

    cut = run([StopAt6()], cuda_graphs=True, out_dir=str(tmp_path / "cut"))
    cut.fit()
    assert cut.step == 8
    resumed = run(cuda_graphs=True, out_dir=str(tmp_path / "cut"))
    resumed.resume()
    resumed.fit()
    r = _logged_losses(resumed)
    assert len(r) == 12 and ((r - g).abs() / g).max() <= 5e-3


@pytest.mark.gpu
@gpu
def test_gpu_a_default_trainer_runs_graphed_and_gives_the_eager_losses(task, capsys):
    """What a user gets on a GPU without knowing the flag: the graphed step (captured, no fall-back), the
    eager step's losses."""
    cfg = dict(vocab_size=64, d_model=128, n_layers=2, mem_size=16, block="rodimus_plus", window=8)
    default = _trainer(task, model=cfg, max_steps=10, grad_accum=2, progress=True)   # device and cuda_graphs: auto
    assert default.step_choice.graphed and default.graphed_step is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a fall-back to the eager step warns
        default.fit()
    assert default.graphed_step is not None and default.graphed_step.graph is not None   # captured, replayed
    assert "training step: one CUDA graph, replayed (train.cuda_graphs = auto" in capsys.readouterr().err
    eager = _trainer(task, model=cfg, max_steps=10, grad_accum=2, cuda_graphs=False)
    eager.fit()
    g, e = map(_logged_losses, (default, eager))
    print("default", g.tolist(), "eager", e.tolist())
    assert len(g) == 10 and ((g - e).abs() / e).max() <= 5e-3


class SyncsOnTheHost(RodimusLM):
    """A model whose forward reads a device value on the host, as many user models do: it cannot be captured."""

    def forward(self, input_ids, **kwargs):
        self.largest_id = int(input_ids.max())   # waits for the device
        return super().forward(input_ids, **kwargs)


@pytest.mark.gpu
@gpu
def test_gpu_a_step_that_cannot_be_captured_falls_back_to_eager_under_auto(task):
    """A real failed capture (not the CPU tests' stand-in): under "auto" the Trainer warns and trains on eagerly,
    from the step whose capture failed (the third: two eager warm-up steps first), with the eager run's losses;
    under true it raises."""
    def run(**overrides):
        seed_everything(0)
        trainer = Trainer(SyncsOnTheHost(ModelConfig(vocab_size=64, d_model=128, n_layers=2, mem_size=16)), task[0],
                          task[1], TrainConfig(max_steps=8, batch_size=8, lr=3e-3, warmup_steps=3, eval_every=4,
                                               progress=False, **overrides))
        trainer.fit()
        return trainer

    with pytest.warns(RuntimeWarning, match=r"runs eagerly from step 3 on, because the training step could not be "
                                            r"captured as a CUDA graph.*train\.cuda_graphs = false"):
        fell_back = run()
    assert fell_back.graphed_step is None and fell_back.step == 8
    eager = run(cuda_graphs=False)
    f, e = map(_logged_losses, (fell_back, eager))
    print("fell back", f.tolist(), "eager", e.tolist())
    assert len(f) == 8 and ((f - e).abs() / e).max() <= 5e-3
    with pytest.raises(NotCapturable, match="could not be captured"):
        run(cuda_graphs=True)
