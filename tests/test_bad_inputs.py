"""Bad input, as a newcomer types it: every row must end in one clear line that names the flag, field or
file and the fix — exit code 2 and no traceback on the command line, a ValueError (or CheckpointError)
in Python — and must leave every file as it was (the run folder, the README, the config files)."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from rodimus_lab import ModelConfig, RodimusLM
from rodimus_lab.checkpoint import CheckpointError, load_checkpoint
from rodimus_lab.cli import main
from rodimus_lab.data.recipe import DataConfig
from rodimus_lab.data.text import DataUnavailableError
from rodimus_lab.train import RunFolderError, TrainConfig, Trainer

FIXTURE = Path(__file__).parent / "fixtures" / "wikitext-tiny"
TINY = ["--task", "mqar", "--seq-len", "16", "--num-kv-pairs", "2", "--vocab-size", "64", "--num-train", "64",
        "--num-test", "16", "--d-model", "32", "--n-layers", "1", "--mem-size", "8", "--max-steps", "2",
        "--batch-size", "8", "--progress", "false"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder as a user has it: a finished run, a README, config files good and bad, a damaged run."""
    root = tmp_path_factory.mktemp("work")
    assert main(["train", *TINY, "--out", str(root / "run")]) == 0
    (root / "README.md").write_text("# my project\n")
    (root / "bad.yaml").write_text("model:\n  d_model: 32\n   n_layers: 2\ntrain: [1, 2\n")
    (root / "list.yaml").write_text("- model\n- train\n")
    (root / "sections.json").write_text('{"optimizer": {"lr": 1}}')
    (root / "empty").mkdir()
    (root / "no-train-split").mkdir()
    shutil.copy(FIXTURE / "wiki.valid.tokens", root / "no-train-split" / "wiki.valid.tokens")
    shutil.copytree(root / "run", root / "damaged")
    (tensors,) = (root / "damaged" / "checkpoints").glob("*.safetensors")
    tensors.write_bytes(tensors.read_bytes()[:-10])
    shutil.copytree(root / "run" / "checkpoints", root / "two-places" / "checkpoints")
    shutil.copytree(root / "run" / "checkpoints", root / "two-places", dirs_exist_ok=True)
    return root


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# (id, argv, regex the one error line must match). argv runs in the `work` folder.
CLI = [
    ("yaml-malformed", ["train", "--config", "bad.yaml", "--out", "new"],
     r"config file bad\.yaml is not valid YAML at line 3, column 12: mapping values are not allowed here"),
    ("yaml-not-a-mapping", ["train", "--config", "list.yaml", "--out", "new"],
     r"config file list\.yaml must hold a mapping with sections \['data', 'model', 'train'\]"),
    ("config-unknown-section", ["train", "--config", "sections.json", "--out", "new"],
     r"unknown section\(s\) \['optimizer'\]"),
    ("config-missing", ["train", "--config", "nope.yaml", "--out", "new"], r"config file nope\.yaml does not exist"),
    ("out-is-a-file", ["train", *TINY, "--out", "README.md"],
     r"README\.md is a file, not a folder: give the run a folder of its own"),
    ("out-holds-a-run", ["train", *TINY, "--out", "run"],
     r"--out run already holds a run .*continue it with --resume, replace it with --overwrite"),
    ("demo-out-holds-a-run", ["demo", "--fast", "--out", "run"],
     r"--out run already holds a run .*replace it with --overwrite, or choose another --out"),
    ("train-without-out", ["train", *TINY], r"train needs an output folder: --out runs/NAME"),
    ("resume-without-out", ["train", "--resume"], r"--resume continues the run in --out: give --out runs/NAME"),
    ("resume-empty-folder", ["train", "--resume", "--out", "empty"],
     r"--resume: no checkpoint .* in empty.*without --resume a new run starts"),
    ("resume-conflicting-model-flag", ["train", "--resume", "--out", "run", "--mem-size", "16"],
     r"--mem-size 16 conflicts with the run in run, saved with mem_size = 8: .*drop --mem-size"),
    ("resume-conflicting-data-flag", ["train", "--resume", "--out", "run", "--seq-len", "32"],
     r"--seq-len 32 conflicts .*drop --seq-len"),
    ("d-model-0", ["train", *TINY, "--d-model", "0", "--out", "new"],
     r"ModelConfig\.d_model = 0 is invalid: expected an int ≥ 1 \(flag --d-model, or model\.d_model in a --config"),
    ("block-unknown", ["train", *TINY, "--block", "mamba", "--out", "new"],
     r"ModelConfig\.block = 'mamba' is invalid: expected one of 'rodimus', 'rodimus_plus', 'transformer' \(flag --block"),
    ("gate-typo", ["train", *TINY, "--gate", "ddtss", "--out", "new"], r"ModelConfig\.gate = 'ddtss' .*'no_tau'.*--gate"),
    ("window-on-rodimus", ["train", *TINY, "--window", "8", "--out", "new"],
     r"ModelConfig\.window = 8 is invalid: expected None for block 'rodimus'.*--window"),
    ("heads-not-dividing", ["train", *TINY, "--block", "transformer", "--n-heads", "3", "--out", "new"],
     r"ModelConfig\.n_heads = 3 is invalid: expected a divisor of d_model = 32"),
    ("lr-negative", ["train", *TINY, "--lr", "-1", "--out", "new"], r"TrainConfig\.lr = -1\.0 is invalid.*--lr"),
    ("max-steps-text", ["train", *TINY, "--max-steps", "many", "--out", "new"],
     r"TrainConfig\.max_steps = 'many' is invalid: expected an int ≥ 1 \(flag --max-steps"),
    ("grad-accum-not-dividing", ["train", *TINY, "--grad-accum", "3", "--out", "new"],
     r"TrainConfig\.batch_size = 8 is invalid: expected a multiple of grad_accum = 3"),
    ("precision-unknown", ["train", *TINY, "--precision", "fp16", "--out", "new"],
     r"TrainConfig\.precision = 'fp16' is invalid: expected one of 'auto', 'fp32', 'bf16'"),
    ("preset-typo", ["train", *TINY, "--preset", "L65_p4", "--out", "new"],
     r"DataConfig\.preset = 'L65_p4' is invalid: expected one of 'L64_p4'.*--preset"),
    ("task-unknown", ["train", "--task", "vision", "--out", "new"], r"DataConfig\.task = 'vision' .*--task"),
    ("hub-offline", ["train", "--task", "text", "--source", "wikitext-103", "--out", "new"],
     r"could not load Salesforce/wikitext .*Offline, use local files: rodimus-lab train --task text --source /path"),
    ("local-folder-without-train-split", ["train", "--task", "text", "--source", "no-train-split", "--out", "new"],
     r"no 'train' split in no-train-split: .*--train-split"),
    ("source-missing", ["train", "--task", "text", "--source", "wikitext-1O3", "--out", "new"],
     r"text source 'wikitext-1O3' is neither a hub dataset .* nor an existing path"),
    ("threads-0", ["train", *TINY, "--threads", "0", "--out", "new"], r"argument --threads: expected an int ≥ 1, got '0'"),
    ("info-vocab-size-0", ["info", "--vocab-size", "0"],
     r"ModelConfig\.vocab_size = 0 is invalid: expected an int ≥ 1 \(flag --vocab-size"),
    ("info-context-negative", ["info", "--context", "-5"], r"argument --context: expected an int ≥ 0, got '-5'"),
    ("eval-readme", ["eval", "--checkpoint", "README.md"],
     r"README\.md is not a rodimus-lab checkpoint: give a run folder or its checkpoints/ckpt-NNNNNN\.json file"),
    ("generate-readme", ["generate", "--checkpoint", "README.md", "--prompt-ids", "1"],
     r"README\.md is not a rodimus-lab checkpoint"),
    ("eval-missing", ["eval", "--checkpoint", "runs/none"], r"checkpoint runs/none does not exist"),
    ("eval-empty-folder", ["eval", "--checkpoint", "empty"], r"no checkpoint \(ckpt-\*\.json\) in empty"),
    ("eval-damaged", ["eval", "--checkpoint", "damaged"],
     r"checkpoint damaged/checkpoints/ckpt-000002\.safetensors is damaged \(truncated or modified.*use an earlier"),
    ("eval-two-places", ["eval", "--checkpoint", "two-places"],
     r"two-places holds checkpoints both in itself and in checkpoints/: give the checkpoint file you mean"),
    ("eval-batch-size-0", ["eval", "--checkpoint", "run", "--batch-size", "0"], r"argument --batch-size: expected an int ≥ 1"),
    ("prompt-ids-words", ["generate", "--checkpoint", "run", "--prompt-ids", "a b"],
     r"argument --prompt-ids: expected token ids \(integers\) separated by spaces or commas, e\.g\. '12 7 99'; got 'a b'"),
    ("prompt-ids-outside-vocab", ["generate", "--checkpoint", "run", "--prompt-ids", "1 64"],
     r"--prompt-ids: token id 64 is outside this model's vocabulary \(0 … 63\)"),
    ("prompt-ids-empty", ["generate", "--checkpoint", "run", "--prompt-ids", " "], r"the prompt is empty"),
    ("prompt-text-on-mqar", ["generate", "--checkpoint", "run", "--prompt", "hello"],
     r"this checkpoint has no tokenizer \(an MQAR run\): give --prompt-ids"),
    ("no-prompt", ["generate", "--checkpoint", "run"], r"give --prompt TEXT or --prompt-ids"),
    ("max-new-tokens-negative", ["generate", "--checkpoint", "run", "--prompt-ids", "1", "--max-new-tokens", "-1"],
     r"argument --max-new-tokens: expected an int ≥ 0"),
    ("top-p-2", ["generate", "--checkpoint", "run", "--prompt-ids", "1", "--top-p", "2"],
     r"top_p must be None or a number in \(0, 1\], got 2\.0"),
]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_cli_bad_input(work, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(work)
    before = snapshot(work)
    try:
        code = main(argv)
    except SystemExit as e:   # argparse: usage, then one error line
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and "Retrying" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"rodimus-lab {argv[0]}: error: "), err
    assert re.search(message, line), line
    assert snapshot(work) == before, "a refused command changed or wrote files"


def _model():
    return RodimusLM(ModelConfig(vocab_size=64, d_model=32, n_layers=1, mem_size=8))


def _trainer_into(folder):
    from rodimus_lab.data.mqar import make_mqar_splits, mqar_preset

    train, test = make_mqar_splits(mqar_preset("L64_p4", seq_len=16, num_kv_pairs=2, vocab_size=64, num_train=16,
                                               num_test=8))
    trainer = Trainer(_model(), train, test, TrainConfig(max_steps=1, batch_size=8, progress=False, out_dir=str(folder)))
    return trainer.fit()


# (id, call, exception type, regex) for the Python API; `call` gets the work folder.
PYTHON = [
    ("forward-empty-ids", lambda w: _model()(torch.zeros(1, 0, dtype=torch.long)), ValueError,
     r"input_ids must be \[B, T\] with every dim ≥ 1 \(a batch of token ids\), got shape \(1, 0\)"),
    ("forward-1d-ids", lambda w: _model()(torch.zeros(5, dtype=torch.long)), ValueError,
     r"input_ids must be \[B, T\] .*got shape \(5,\)"),
    ("model-config-bool-as-int", lambda w: ModelConfig(d_model=True), ValueError,
     r"ModelConfig\.d_model = True is invalid: expected an int ≥ 1"),
    ("train-config-device", lambda w: TrainConfig(device="tpu"), ValueError,
     r"TrainConfig\.device = 'tpu' is invalid: expected 'auto', 'cpu' or 'cuda\[:i\]'"),
    ("data-config-tokenizer", lambda w: DataConfig(tokenizer="gpt3"), ValueError,
     r"DataConfig\.tokenizer = 'gpt3' is invalid: expected one of 'bpe', 'gpt2'"),
    ("data-config-unknown-field", lambda w: DataConfig.from_dict({"seqlen": 3}), ValueError,
     r"unknown DataConfig field\(s\) \['seqlen'\]"),
    ("trainer-into-a-run", lambda w: _trainer_into(w / "run"), RunFolderError,
     r"run already holds a run \(config\.json, metrics\.jsonl, checkpoints\): continue it with trainer\.resume\(\)"),
    ("trainer-into-a-file", lambda w: _trainer_into(w / "README.md"), RunFolderError, r"README\.md is a file, not a folder"),
    ("load-readme", lambda w: load_checkpoint(w / "README.md"), CheckpointError, r"README\.md is not a rodimus-lab checkpoint"),
    ("load-config-json", lambda w: load_checkpoint(w / "run" / "config.json"), CheckpointError,
     r"config\.json is not a rodimus-lab checkpoint"),
    ("load-into-another-model", lambda w: load_checkpoint(w / "run", RodimusLM(ModelConfig(vocab_size=64, d_model=16))),
     CheckpointError, r"was written for another model config \(d_model: checkpoint 32 vs model 16"),
    ("hub-unreachable", lambda w: _read_unreachable_hub(), DataUnavailableError, r"Offline, use local files"),
]


def _read_unreachable_hub():
    """Offline switches off and the hub unreachable: datasets must run in offline mode (no retries)."""
    import datasets
    import huggingface_hub.constants as hub

    from rodimus_lab.data import text

    seen = []

    def load_dataset(*args, **kwargs):
        seen.append((datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE))
        raise ConnectionError("Couldn't reach the hub")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        m.setattr(hub, "HF_HUB_OFFLINE", False)
        m.setattr(text, "_hub_reachable", lambda: False)
        m.setattr(datasets, "load_dataset", load_dataset)
        try:
            text.read_split("wikitext-2", "train")
        finally:
            assert seen == [(True, True)], "the hub was not put in offline mode"
            assert datasets.config.HF_HUB_OFFLINE is False   # and restored afterwards


@pytest.mark.parametrize("call, error, message", [c[1:] for c in PYTHON], ids=[c[0] for c in PYTHON])
def test_python_bad_input(work, call, error, message):
    before = snapshot(work)
    with pytest.raises(error, match=message) as caught:
        call(work)
    assert "\n" not in str(caught.value)                    # one line
    assert snapshot(work) == before


def test_the_table_is_long_enough():
    assert len(CLI) + len(PYTHON) >= 30
    assert json.dumps([c[0] for c in CLI + PYTHON])          # ids are plain strings
