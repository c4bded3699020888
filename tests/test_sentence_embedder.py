"""SentenceEmbedder with the bundled all-MiniLM-L6-v2 package, with the network blocked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, socket
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")
    socket.socket.connect = refuse
    socket.create_connection = refuse
    import numpy as np
    from zsar.text import SentenceEmbedder
    emb = SentenceEmbedder(device="cpu")
    labels = ["PlayingGuitar", "playing violin", "swimming", "PlayingGuitar"]
    x = emb.embed(labels)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    print(json.dumps({"shape": list(x.shape), "dim": emb.dim, "text": emb.text("PlayingGuitar"),
                      "guitar_violin": float(x[0] @ x[1]), "guitar_swim": float(x[0] @ x[2]),
                      "repeat_equal": bool(np.array_equal(x[0], x[3]))}))
""")


@pytest.mark.slow  # the demos and their tests load the same model offline by default
def test_sentence_embedder_works_offline():
    env_free = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600,
                              env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    assert env_free.returncode == 0, env_free.stderr[-2000:]
    out = json.loads(env_free.stdout.strip().splitlines()[-1])
    assert out["shape"] == [4, 384] and out["dim"] == 384
    assert out["text"] == "playing guitar"
    assert out["guitar_violin"] > out["guitar_swim"]
    assert out["repeat_equal"]


@pytest.mark.slow  # a second load of the sentence model (~9 s); offline loading is tested by default
def test_loading_prints_no_progress_bar_and_keeps_the_setting():
    """Loading the embedder (every `zsar predict`/`eval`) prints no "Loading weights" bar, and the
    caller's transformers progress-bar setting is left as it was."""
    script = textwrap.dedent("""
        from transformers.utils import logging as hf_logging
        from zsar.text import SentenceEmbedder
        SentenceEmbedder(device="cpu")
        print("enabled-after:", hf_logging.is_progress_bar_enabled())
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Loading weights" not in run.stderr + run.stdout
    assert "enabled-after: True" in run.stdout
