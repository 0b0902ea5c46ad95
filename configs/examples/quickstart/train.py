#!/usr/bin/env python3
"""A tiny stand-in for a training script (standard library only).

Takes Hydra-style overrides (`key=value`, with `output.dir=<dir>`), "trains" for a moment,
prints metrics as `HSM_METRIC name=value` lines, and writes its results into the output dir.
"""
import json
import math
import os
import random
import sys
import time


def parse_value(text):
    """Reads a value in Hydra's override grammar (the subset hsm emits)."""
    value, rest = _parse(text.strip())
    if rest.strip():
        raise ValueError(f"trailing text in {text!r}")
    return value


def _parse(s):
    s = s.lstrip()
    if s.startswith("["):
        items, s = [], s[1:].lstrip()
        while not s.startswith("]"):
            item, s = _parse(s)
            items.append(item)
            s = s.lstrip()
            if s.startswith(","):
                s = s[1:]
        return items, s[1:]
    if s[:1] in ("'", '"'):
        quote, out, i = s[0], [], 1
        while s[i] != quote:
            if s[i] == "\\" and i + 1 < len(s) and s[i + 1] in (quote, "\\"):
                i += 1
            out.append(s[i])
            i += 1
        return "".join(out), s[i + 1:]
    end = len(s)
    for stop in ",]":
        pos = s.find(stop)
        if pos != -1:
            end = min(end, pos)
    token, rest = s[:end].strip(), s[end:]
    lowered = token.lower()
    if lowered == "true":
        return True, rest
    if lowered == "false":
        return False, rest
    if lowered == "null":
        return None, rest
    for kind in (int, float):
        try:
            return kind(token), rest
        except ValueError:
            pass
    return token, rest


def main(argv):
    config = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            sys.exit(f"train.py: expected key=value, got {arg!r}")
        config[key] = parse_value(value)

    out_dir = config.get("output.dir") or os.environ.get("HSM_OUTPUT_DIR", ".")
    os.makedirs(out_dir, exist_ok=True)
    lr = float(config.get("optimizer.lr", 0.01))
    hidden = int(config.get("model.hidden", 64))
    seed = int(config.get("seed", 0))

    print(f"training {os.environ.get('HSM_TASK_ID', '?')}: lr={lr} hidden={hidden} seed={seed}")
    rng = random.Random(seed)
    # The stand-in's "learning": fastest at lr=0.01, slower either side; bigger models end lower.
    rate = 0.5 * math.exp(-((math.log10(lr) + 1.7) ** 2))
    loss = 2.0
    for epoch in range(5):
        time.sleep(0.05)
        loss *= 1.0 - rate
        loss += rng.uniform(0.0, 0.02) + 0.5 / hidden
        print(f"epoch {epoch} loss {loss:.4f}", flush=True)
        # One point per epoch: hsm keeps the series; `sweep results` shows the last value.
        print(f"HSM_METRIC loss={loss:.6f} step={epoch}", flush=True)

    eval_loss = loss * 1.05 + rng.uniform(0.0, 0.02)
    # results/metrics.json is read too; nested keys become dotted names (eval.loss).
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump({"eval": {"loss": eval_loss, "accuracy": max(0.0, 1.0 - eval_loss / 2.0)}}, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out_dir, "model.txt"), "w") as f:
        f.write(f"weights for lr={lr} hidden={hidden} seed={seed}: {math.pi * lr:.6f}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
