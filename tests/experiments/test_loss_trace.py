"""The llm.c habit: ten training steps of one small model in vlmlab and in PyTorch, on the same
weights and the same batch, give the same loss trace. vlmlab exports a model and a batch
(`bench-model --export DIR --trace-steps 10`) and records the losses of its own steps (Vlm::loss,
backward, clip at 1.0, AdamW); bench/torch_reference.py's plain-torch model of the family loads the
same weights and takes the same steps with torch.optim.AdamW and clip_grad_norm_.

Run by meson with Debian's /usr/bin/python3: test_loss_trace.py VLMLAB_BINARY. Exits 77 (skipped)
where torch is not installed. Prints a Catch2-style summary line that scripts/count_tests.py counts.
"""
import os
import subprocess
import sys
import tempfile

VLMLAB = os.path.abspath(sys.argv[1])
HERE = os.path.dirname(os.path.abspath(__file__))
sys.argv = sys.argv[:1]  # torch_reference reads its own flags from argv at import
try:
    import torch  # noqa: F401
except ImportError:
    print("torch is not installed: the loss-trace test is skipped")
    sys.exit(77)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import torch_reference as ref  # noqa: E402

sys.path.insert(0, HERE)
from common import run_tests  # noqa: E402

STEPS = 10
TMP = tempfile.mkdtemp(prefix="vlmlab_trace_")


def torch_trace(family, folder):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    b = ref.TorchBench(family, folder)
    params = list(b.model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for _ in range(STEPS):
        logits, _ = b.model(b.train_in)
        loss = ref.loss_of(logits, b.labels)
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return losses


def check(family):
    folder = os.path.join(TMP, family)
    r = subprocess.run([VLMLAB, "bench-model", "--family", family, "--size", "small", "--batch", "4",
                        "--export", folder, "--trace-steps", str(STEPS)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    ours = ref.read_safetensors(os.path.join(folder, "trace.safetensors"))["loss"].tolist()
    theirs = torch_trace(family, folder)
    print(family, "vlmlab", ["%.6f" % x for x in ours])
    print(family, "torch ", ["%.6f" % x for x in theirs])
    assert len(ours) == STEPS
    # Both sides compute in float32 in different orders; over ten steps the traces measured here
    # stay within 1e-6 relative (Zen 5 kind), so 1e-5 catches any real difference in the forward,
    # the loss, the backward, the clipping or AdamW (a wrong bias correction moves step 2 by 1e-2).
    for k in range(STEPS):
        assert abs(ours[k] - theirs[k]) <= 1e-5 * abs(theirs[k]), (k, ours[k], theirs[k])
    assert ours[-1] < ours[0]  # the steps train


def test_llava():
    check("llava")


def test_qwen2vl():
    check("qwen2vl")


TESTS = [test_llava, test_qwen2vl]

if __name__ == "__main__":
    run_tests(TESTS, TMP)
