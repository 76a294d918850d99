"""Verify a host provisioned from the REAL torch/distro and char-rnn (opt-in scenario)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

TH = "/opt/torch/install/bin/th"
CHAR_RNN = "/opt/rnn-karpathy"
TORCH7_DEFAULTS = yaml.safe_load((Path(__file__).parents[3] / "roles/torch7/defaults/main.yml").read_text())


def test_th_requires_what_char_rnn_needs(host):
    out = host.check_output(
        f"{TH} -e \"require 'torch'; require 'nn'; require 'nngraph'; require 'optim'; require 'lfs'; print('ok')\""
    )
    assert out.strip().endswith("ok"), out


def test_cmake_4_hosts_build_with_the_pinned_cmake_3(host):
    """torch/distro's CMakeLists want CMake < 4: on CMake 4 hosts the pinned CMake 3 built it."""
    system = host.check_output("cmake --version").split()[2]
    record = json.loads(host.file("/opt/torch/install/.rnn_bootstrap-build.json").content_string)
    expected = TORCH7_DEFAULTS["torch7_cmake3_version"] if int(system.split(".")[0]) >= 4 else system
    assert record["cmake_version"] == expected, record


def test_libth_links_openblas(host):
    linked = host.check_output("ldd /opt/torch/install/lib/libTH.so")
    found = re.search(r"libopenblas\.so\.0 => (\S+)", linked)
    assert found, linked
    # Debian resolves libopenblas.so.0 through alternatives: the OpenMP build must be the one.
    assert "openblas-openmp" in host.check_output(f"readlink -f {found.group(1)}")


def test_train_writes_a_checkpoint_and_sample_prints_text(host):
    # tinyshakespeare at batch 10 x seq 20 has 5,297 training batches: 0.02 epochs is 105
    # iterations, with checkpoints at 50, 100 and 105.
    train = host.run(
        f"cd {CHAR_RNN} && runuser -u charrnn -- {TH} train.lua -gpuid -1 -rnn_size 32 -num_layers 1 "
        "-seq_length 20 -batch_size 10 -max_epochs 0.02 -eval_val_every 50 -savefile molecule "
        "-checkpoint_dir cv/molecule -data_dir data/tinyshakespeare"
    )
    assert train.rc == 0, train.stdout[-2000:] + train.stderr[-2000:]
    assert "saving checkpoint to cv/molecule/lm_molecule_epoch" in train.stdout, train.stdout[-2000:]
    newest = host.check_output(f"ls -1t {CHAR_RNN}/cv/molecule/lm_molecule_epoch*.t7 | head -n 1")
    sample = host.run(f"cd {CHAR_RNN} && runuser -u charrnn -- {TH} sample.lua {newest} -gpuid -1 -length 200 -seed 7")
    assert sample.rc == 0, sample.stderr
    text = sample.stdout.split("--------------------------")[-1]
    assert len(text.strip()) >= 100, sample.stdout
