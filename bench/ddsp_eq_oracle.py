"""Which part of the spectral envelope do DDSP resyntheses get wrong? An oracle check.

    python -m bench.ddsp_eq_oracle --model ddsp-gm --n 96

For held-out notes (the `bench.ddsp_eval` picks), each resynthesis is corrected towards its
original by a gain on its STFT (1,024 points, hop 256, Hann), spread from mel bands to bins
through the project's mel filterbank (`features.mel_filterbank`, `--mels` bands): the gain is
the original's mel power over the resynthesis's, per band, and each row keeps only part of that
correction: one static gain per note (the ratio of the note-mean powers, or the note-mean of
the log ratios), the log ratio smoothed over time, the per-frame ratio, the per-frame ratio
within the first 0.25 s only or after it only, the per-frame level alone (one gain for every
band) or the per-frame shape alone (the level taken out), and the 1 s smoothed correction
within one frequency range only, or everywhere but there (bands centred below 1 kHz, 1-3 kHz,
3-8 kHz). The bundled note classifier's
GM-family accuracy on each row says which correction makes the note recognisable: what a model
would have to get right. It sees the original, so it is an oracle, not a model. Writes
bench/results/<name>.json (default ddsp_eq_oracle).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import write_result  # noqa: E402
from bench.ddsp_eval import (accuracy_table, count_family_hits, heldout_setup,  # noqa: E402
                             note_batches, resynth)
from synth.features import FeatureSpec, mel_filterbank  # noqa: E402

N_FFT, HOP = 1024, 256


RANGES_HZ = ((0.0, 1000.0), (1000.0, 3000.0), (3000.0, float("inf")))


def corrections(ratio: torch.Tensor, powers: tuple[torch.Tensor, torch.Tensor], frame_rate: float,
                centres_hz: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """ratio: (B, M, T) per-frame mel power ratio (original / resynthesis); powers: the two
    (B, M, T) mel powers; centres_hz: (M,) the bands' centre frequencies, for the rows that
    correct one frequency range only. -> {row: (B, M, T) gain}: the partial corrections."""
    log_r = torch.log(ratio)
    b, m, t = log_r.shape
    out = {"static, note-mean powers": ((powers[0].mean(-1) + 1e-10)
                                        / (powers[1].mean(-1) + 1e-10))[..., None].expand(b, m, t),
           "static, note-mean log ratio": log_r.mean(-1, keepdim=True).exp().expand(b, m, t)}
    half = t // 2
    out["two halves, note-mean log ratio each"] = torch.cat(
        [log_r[..., :half].mean(-1, keepdim=True).expand(b, m, half),
         log_r[..., half:].mean(-1, keepdim=True).expand(b, m, t - half)], -1).exp()
    for seconds in (1.0, 0.25):
        k = max(1, int(seconds * frame_rate)) | 1
        smooth = F.avg_pool1d(log_r.reshape(-1, 1, t), k, 1, k // 2, count_include_pad=False)
        out[f"log ratio smoothed over {seconds} s"] = smooth.reshape(b, m, t).exp()
    out["per frame"] = ratio
    first = int(0.25 * frame_rate)
    early, late = ratio.clone(), ratio.clone()
    early[..., first:], late[..., :first] = 1.0, 1.0
    out["per frame, first 0.25 s only"], out["per frame, after 0.25 s only"] = early, late
    level = log_r.mean(1, keepdim=True)
    out["per frame, level only"] = level.expand(b, m, t).exp()
    out["per frame, shape only (level taken out)"] = (log_r - level).exp()
    if centres_hz is not None:
        smooth = out["log ratio smoothed over 1.0 s"]
        for lo, hi in RANGES_HZ:
            inside = ((centres_hz >= lo) & (centres_hz < hi))[None, :, None]
            label = (f"{lo / 1000:g}-{hi / 1000:g} kHz" if hi < float("inf")
                     else f"above {lo / 1000:g} kHz")
            ones = torch.ones_like(smooth)
            out[f"smoothed over 1 s, bands {label} only"] = torch.where(inside, smooth, ones)
            out[f"smoothed over 1 s, all bands but {label}"] = torch.where(inside, ones, smooth)
    return out


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ddsp-gm", help="bundled name or checkpoint path")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--mels", type=int, default=64, help="mel bands of the correction")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="ddsp_eq_oracle")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, clf, corpus, idx = heldout_setup(args.model, args.corpus, args.n)
    sr = model.sample_rate
    fb = mel_filterbank(FeatureSpec(sample_rate=sr, n_fft=N_FFT, hop_length=HOP,
                                    n_mels=args.mels, f_max=sr / 2))  # (M, K)
    spread = fb / fb.sum(0, keepdim=True).clamp_min(1e-8)  # each bin: its bands' weighted mean
    centres_hz = fb.argmax(1).float() * sr / N_FFT  # (M,) each band's peak bin
    window = torch.hann_window(N_FFT)
    hits: dict[str, int] = {}
    for done, audio, pitch, truth in note_batches(corpus, idx, args.batch):
        res = resynth(model, audio, pitch)
        n = min(res.shape[-1], audio.shape[-1])
        audio, res = audio[:, :n], res[:, :n]
        spec_o = torch.stft(audio, N_FFT, HOP, window=window, return_complex=True)
        spec_r = torch.stft(res, N_FFT, HOP, window=window, return_complex=True)  # (B, K, T)
        mel_o = torch.einsum("mk,bkt->bmt", fb, spec_o.abs().pow(2))
        mel_r = torch.einsum("mk,bkt->bmt", fb, spec_r.abs().pow(2))
        ratio = (mel_o + 1e-7) / (mel_r + 1e-7)
        rows = {"original": audio, "resynthesis": res}
        for name, gain in corrections(ratio, (mel_o, mel_r), sr / HOP, centres_hz).items():
            bins = torch.einsum("mk,bmt->bkt", spread, gain)
            rows[f"resynthesis x mel gain: {name}"] = torch.istft(
                spec_r * bins.sqrt(), N_FFT, HOP, window=window, length=n)
        count_family_hits(clf, rows, truth, sr, hits)
        print(f"{done}/{len(idx)} notes", flush=True)
    acc = accuracy_table(hits, len(idx))
    meta = getattr(model, "checkpoint_meta", {})
    path = write_result(args.name, {"model": args.model, "steps": meta.get("steps"),
                                    "n": len(idx), "mels": args.mels, "family_accuracy": acc,
                                    "hits": hits, "wall_s": time.perf_counter() - start})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
