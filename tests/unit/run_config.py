"""What the launcher tests and the plan tests share."""

from __future__ import annotations


def run_config(**options):
    """A run's configuration as char_rnn_train writes it (the launcher's input), with `options` replaced."""
    base = {
        "data_dir": "data/tiny",
        "rnn_size": 16,
        "num_layers": 1,
        "model": "lstm",
        "learning_rate": 0.002,
        "learning_rate_decay": 0.5,
        "learning_rate_decay_after": 2.0,
        "decay_rate": 0.95,
        "dropout": 0.0,
        "seq_length": 20,
        "batch_size": 10,
        "max_epochs": 5.0,
        "grad_clip": 5.0,
        "train_frac": 0.95,
        "val_frac": 0.05,
        "seed": 123,
        "print_every": 1,
        "eval_val_every": 50,
        "checkpoint_dir": "cv/run",
        "savefile": "run",
        "gpuid": -1,
    }
    base.update(options)
    return {"run": "run", "options": base}
