"""Markdown tables for docs/LATENT.md from a `bench.fit_latent_tools` result, so the docs are
pasted from the measurement rather than retyped.

    python -m bench.latent_tables bench/results/fit_latent_tools.json
"""

from __future__ import annotations

import argparse
import json

#: Render units as docs/LATENT.md writes them after the per-step means.
SUFFIX = {"brightness": " oct", "loudness": " dB"}
SLOPE_UNIT = {"brightness": " oct", "decay": " dB/s", "sustain": " dB", "loudness": " dB"}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def direction_table(result: dict) -> str:
    """One row per direction: fit slope, partial r2, render means over the steps, slopes and
    monotonicity (of the mean, share of notes, of the centre latent)."""
    lines = ["| direction | fit slope / step | partial r2 (fit / held-out 20%) | render: mean per step "
             "-2..+2 | render slope | monotonic (mean / notes / centre) |", "|---|---|---|---|---|---|"]
    for name, d in result["directions"].items():
        digits = 2 if name in ("brightness", "noisiness", "attack") else 1
        values = ", ".join(f"{v:.{digits}f}" for v in d["values"]) + SUFFIX.get(name, "")
        unit = SLOPE_UNIT.get(name, "")
        lines.append(f"| {name} | {d['fit_slope']:.2f}{unit} | {d['r2']:.2f} / {d['r2_holdout']:.2f} | "
                     f"{values} | {d['slope']:.2f}{unit} | {_yes(d['monotonic'])} / "
                     f"{d['monotonic_notes']:.0%} / {_yes(d['centre_c4_0.5s']['monotonic'])} |")
    return "\n".join(lines)


def text_tables(result: dict) -> str:
    """The latent-space table (mapped captions' nearest family) and the audio table (text
    adherence: the classifier's family accuracy on renders)."""
    held = result["text"]["heldout"]
    rows = (("test notes, training instruments", held["note_split_test"]),
            ("unseen instruments (instrument split)", held["unseen_instruments"]))
    lines = ["| held-out captions | n | captions seen in training | mapped, t=0 (centroid / kNN) | "
             "t=0.5 kNN | t=1 kNN | encoded real notes (centroid / kNN) | majority family |",
             "|---|---|---|---|---|---|---|---|"]
    for label, h in rows:
        lines.append(f"| {label} | {h['n']} | {h['captions_seen_in_training']:.0%} | "
                     f"{h['mapped_t0']['centroid']:.2f} / {h['mapped_t0']['knn']:.2f} | "
                     f"{h['mapped_t0.5']['knn']:.2f} | {h['mapped_t1']['knn']:.2f} | "
                     f"{h['encoded_latents']['centroid']:.2f} / {h['encoded_latents']['knn']:.2f} | "
                     f"{h['majority_rate']:.2f} |")
        unseen = h.get("mapped_t0_unseen_captions_only")
        if label.startswith("test") and unseen:
            lines.append(f"| ... only captions unseen in training | {unseen['n']} | 0% | "
                         f"{unseen['centroid']:.2f} / {unseen['knn']:.2f} | | | | |")
    free = held["free_prompts"]
    lines.append(f"| {free['n']} free-form prompts (bench FREE_PROMPTS) | {free['n']} | 0% | "
                 f"{free['mapped_t0']['centroid']:.2f} / {free['mapped_t0']['knn']:.2f} | | | | |")
    lines += ["", "| held-out captions | rendered from text | encoded latent rendered as a note | real notes |",
              "|---|---|---|---|"]
    for label, h in rows:
        a = h["audio"]
        lines.append(f"| {label.split(' (')[0]} | {a['rendered_from_text']:.2f} | "
                     f"{a['encoded_latent_as_note']:.2f} | {a['real_notes']:.2f} |")
    lines.append(f"| {free['n']} free-form prompts | {free['audio']['rendered_from_text']:.2f} | - | - |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", help="a bench/results/fit_latent_tools*.json")
    args = ap.parse_args()
    with open(args.result) as f:
        result = json.load(f)
    print(f"{result['model']} (hash {result.get('model_hash', '?')}, {result['date']})\n")
    print(direction_table(result))
    if "text" in result:
        print()
        print(text_tables(result))


if __name__ == "__main__":
    main()
