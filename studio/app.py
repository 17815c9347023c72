"""synthstudio's timbre-morphing app (Streamlit): `synthstudio app`, or
`streamlit run studio/app.py`. A thin shell over `studio.app_logic` (docs/APP.md).

Every generator in the catalog appears with no per-model code: the sliders come from the model's
ControlSpecs (latent percentile ranges), the knobs from its directions sidecar when it has one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before torch loads: one passive OpenMP thread per server (renders are small; spinning threads
# starve other processes on a shared CPU).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # `streamlit run studio/app.py` puts studio/ on the path, not the root
    sys.path.insert(0, _ROOT)

import tempfile  # noqa: E402

import streamlit as st  # noqa: E402
import torch  # noqa: E402

from latent.interpolate import supports_melfit  # noqa: E402
from studio import app_logic as L  # noqa: E402

torch.set_num_threads(1)

KEYBOARD = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B", "C"]
N_RANDOM = 8
#: Default corners when the model has an atlas: the first instrument of each of these families.
CORNER_FAMILIES = ("guitar", "brass", "organ", "synth lead")


@st.cache_resource(max_entries=4, show_spinner="loading model...")
def get_model(name: str):
    return L.load_generator(name)


@st.cache_resource(max_entries=4, show_spinner="loading vocoder...")
def get_model_with_vocoder(name: str, vocoder: str | None):
    return L.with_vocoder(get_model(name), vocoder)


@st.cache_resource(max_entries=4)
def get_atlas(name: str):
    return L.load_atlas_or_none(name)


@st.cache_resource(max_entries=4)
def get_directions(name: str):
    return L.load_directions_or_none(name)


ss = st.session_state


# -- state <-> widgets (callbacks run before the script, so they may set widget values) --------
def current_point(model, directions) -> L.Point:
    latent, other = L.split_controls(model)
    return L.Point(coords=[float(ss[f"lat_{s.name}"]) for s in latent],
                   amounts={n: float(ss[f"dir_{n}"]) for n in directions},
                   controls={s.name: float(ss[f"ctl_{s.name}"]) for s in other},
                   pitch=float(ss["pitch"]), velocity=float(ss["velocity"]),
                   duration=float(ss["duration"]), seed=int(ss["seed"]))


def set_point(model, directions, point: L.Point) -> None:
    latent, other = L.split_controls(model)
    clamped = L.clamp_coords(model, torch.tensor(point.coords))
    for s, v in zip(latent, clamped.tolist()):
        ss[f"lat_{s.name}"] = round(float(v), 3)
    for s in other:
        ss[f"ctl_{s.name}"] = float(point.controls.get(s.name, s.default))
    for n in directions:
        ss[f"dir_{n}"] = float(point.amounts.get(n, 0.0))
    ss["pitch"], ss["velocity"] = int(point.pitch), int(point.velocity)
    ss["duration"], ss["seed"] = float(point.duration), int(point.seed)


def init_model_state(name: str, model, directions, atlas=None) -> None:
    """Fresh per-model state: corner anchors (corpus instruments of four families when the model
    has an atlas, else seeded prior draws), the pad at the centre."""
    for key in [k for k in ss if str(k).startswith(("lat_", "ctl_", "dir_", "corner_"))]:
        del ss[key]
    coords = L.random_anchors(model, N_RANDOM, seed=0)
    ss.anchors = {f"random {i + 1}": [float(v) for v in c] for i, c in enumerate(coords)}
    ss.anchors.update(L.atlas_anchors(model, atlas))
    picks = [f"random {i + 1}" for i in range(4)]
    if atlas is not None:
        chosen = [f"corpus: {atlas.names[atlas.families.index(f)]}" for f in CORNER_FAMILIES
                  if f in atlas.families]
        picks = (chosen + [p for p in picks if p not in chosen])[:4]
    for i in range(4):
        ss[f"corner_{i}"] = picks[i]
    ss.history, ss.trail, ss.variations = L.History(), [], []
    ss.path, ss.path_result, ss.path_error = [], None, None
    ss.result, ss.result_key, ss.render_error = None, None, None
    ss.pad_x, ss.pad_y = 0.5, 0.5
    ss.setdefault("pitch", 60)
    ss.setdefault("velocity", 100)
    ss.setdefault("duration", 2.0)
    ss.setdefault("seed", 0)
    ss.setdefault("pad_fit", True)  # fitted mixes where the model can (the VAE): docs/VAE.md
    set_point(model, directions, L.Point(coords=corner_point(model).tolist(),
                                         pitch=ss.pitch, velocity=ss.velocity,
                                         duration=ss.duration, seed=ss.seed))
    ss.loaded_model = name


def corners(model) -> torch.Tensor:
    return torch.tensor([ss.anchors[ss[f"corner_{i}"]] for i in range(4)], dtype=torch.float32)


def pad_fit(model) -> bool:
    """The pad's "fit the mix to the corners' sound" switch is on (and the model can fit)."""
    return bool(ss.get("pad_fit")) and supports_melfit(model)


def pad_point(model, x: float, y: float) -> torch.Tensor:
    """(D,) coordinates of the pad point (x, y): the straight or, with the fit switch on, the
    fitted mix of the corners at the pad's pitch and velocity (fits are remembered, so the latent
    map's path costs nothing after the first time)."""
    if not pad_fit(model):
        return L.pad_coords(corners(model), x, y)
    c = corners(model)
    key = (id(model), tuple(c.flatten().tolist()), float(x), float(y), ss.pitch, ss.velocity)
    cache = ss.setdefault("fit_cache", {})
    if key not in cache:
        if len(cache) > 256:
            cache.clear()
        note = L.Point(coords=[], pitch=ss.pitch, velocity=ss.velocity)
        cache[key] = L.pad_coords(c, x, y, (model, note))
    return cache[key]


def corner_point(model) -> torch.Tensor:
    return pad_point(model, ss.pad_x, ss.pad_y)


def on_pad_change(model, directions) -> None:
    """The pad point moved (committed on slider release): remember the old point, move the
    latent sliders to the bilinear mix of the corners."""
    ss.history.push(current_point(model, directions))
    ss.trail.append((float(ss.pad_x), float(ss.pad_y)))
    point = current_point(model, directions)
    point.coords = corner_point(model).tolist()
    set_point(model, directions, point)


def on_undo(model, directions) -> None:
    previous = ss.history.undo()
    if previous is not None:
        set_point(model, directions, previous)


def on_load_snapshot(model, directions) -> None:
    name = ss.get("snapshot_pick")
    if name in ss.history.snapshots:
        ss.history.push(current_point(model, directions))
        set_point(model, directions, ss.history.snapshots[name])


def on_use_point(model, directions, point: L.Point) -> None:
    ss.history.push(current_point(model, directions))
    set_point(model, directions, point)


def on_add_waypoint() -> None:
    ss.path.append((float(ss.pad_x), float(ss.pad_y)))
    ss.path_result = None


def on_trail_as_path() -> None:
    ss.path = list(ss.trail[-12:])
    ss.path_result = None


def on_clear_path() -> None:
    ss.path, ss.path_result, ss.path_error = [], None, None


def on_key(midi: int) -> None:
    ss["pitch"] = min(max(int(midi), 0), 127)


# -- render -------------------------------------------------------------------------------------
def do_render(model, directions, point: L.Point) -> None:
    try:
        ss.result = L.render_point(model, point, directions)
        ss.render_error = None
    except Exception as err:  # shown inline; the session keeps going
        ss.result, ss.render_error = None, f"render failed: {type(err).__name__}: {err}"
    ss.result_key = point.key()


def vocoder_picker(model) -> str | None:
    choices = L.vocoder_choices(model)
    if not choices:
        return None
    if ss.get("vocoder") not in choices:
        ss["vocoder"] = choices[0]
    st.sidebar.selectbox("vocoder (mel to audio)", choices, key="vocoder",
                         help="the mel-domain generator's mel goes through this vocoder")
    return ss["vocoder"]


def sidebar(entries):
    st.sidebar.title("synthstudio")
    names = [e.name for e in entries]
    if not names:
        st.sidebar.error("no generator checkpoints found (bundled or in $SYNTHSTUDIO_MODELS)")
        st.stop()
    if ss.get("model") not in names:
        ss["model"] = names[0]
    st.sidebar.selectbox("generator", names, key="model",
                         format_func=lambda n: f"{n} ({next(e.kind for e in entries if e.name == n)})")
    return next(e for e in entries if e.name == ss["model"])


def model_manager(entry, model, directions, sidecar_error) -> None:
    with st.sidebar.expander("model", expanded=False):
        info = L.model_info(model, entry.meta)
        st.table({"property": list(info), "value": [str(v) for v in info.values()]})
        st.caption(f"{entry.source}: {entry.path}")
        if directions:
            st.caption("semantic knobs: " + ", ".join(directions))
    if sidecar_error:
        st.sidebar.warning(f"directions sidecar not used: {sidecar_error}")


def anchors_panel(model, directions) -> None:
    sb = st.sidebar
    sb.subheader("corner anchors")
    options = list(ss.anchors)
    for i, label in enumerate(L.CORNER_NAMES):
        sb.selectbox(label, options, key=f"corner_{i}",
                     on_change=on_pad_change, args=(model, directions))
    seed = sb.number_input("random anchor seed", 0, 10_000, 0, key="anchor_seed")
    if sb.button("draw random anchors", key="draw_anchors"):
        coords = L.random_anchors(model, N_RANDOM, seed=int(seed))
        for i, c in enumerate(coords):
            ss.anchors[f"random {i + 1}"] = [float(v) for v in c]
        on_pad_change(model, directions)
        st.rerun()
    refine = 0
    if L.refines_uploads(model):
        refine = sb.number_input("refine an uploaded sound's latent (steps; 0: the encoder's)",
                                 0, 200, 30, key="upload_refine",
                                 help="Analysis by synthesis: about 2 s per second of sound")
    upload = sb.file_uploader("anchor from a sound (one note)", type=None, key="upload")
    if upload is not None and ss.get("upload_done") != upload.file_id:
        ss.upload_done = upload.file_id
        try:
            with st.spinner(f"encoding {upload.name}"):
                coords = L.encode_upload(model, upload.getvalue(), upload.name, int(refine))
            ss.anchors[f"upload: {upload.name}"] = coords.tolist()
            sb.success(f"added anchor 'upload: {upload.name}'")
            st.rerun()
        except Exception as err:  # bad uploads are reported inline
            ss.upload_error = f"{upload.name}: {err}"
    if ss.get("upload_error"):
        sb.error(ss.upload_error)
        if upload is None:
            ss.upload_error = None


def snapshots_panel(model, directions) -> None:
    sb = st.sidebar
    sb.subheader("snapshots")
    name = sb.text_input("name", key="snap_name")
    c1, c2 = sb.columns(2)
    if c1.button("save snapshot", key="save_snap"):
        saved = ss.history.save(name, current_point(model, directions))
        ss.anchors[f"snapshot: {saved}"] = list(current_point(model, directions).coords)
        st.rerun()
    c2.button("undo", key="undo", on_click=on_undo, args=(model, directions),
              disabled=not ss.history.undo_stack)
    if ss.history.snapshots:
        sb.selectbox("snapshot", list(ss.history.snapshots), key="snapshot_pick")
        sb.button("load snapshot", key="load_snap", on_click=on_load_snapshot,
                  args=(model, directions))


def pad_panel(model, directions) -> None:
    st.subheader("morph pad")
    left, right = st.columns([1, 1.4])
    with left:
        names = [ss[f"corner_{i}"] for i in range(4)]
        st.image(L.pad_picture(corners(model), names, ss.pad_x, ss.pad_y, ss.trail, ss.path),
                 caption="corners, the point, its trail (grey) and the path (green)")
    with right:
        st.slider("x (left -> right)", 0.0, 1.0, step=0.01, key="pad_x",
                  on_change=on_pad_change, args=(model, directions))
        st.slider("y (top -> bottom)", 0.0, 1.0, step=0.01, key="pad_y",
                  on_change=on_pad_change, args=(model, directions))
        if supports_melfit(model):
            st.toggle("fit the mix to the corners' sound", key="pad_fit",
                      on_change=on_pad_change, args=(model, directions),
                      help="Instead of the straight mix of the corners' latents, the latent whose "
                           "note (at this pitch and velocity) is closest to the same mix of the "
                           "corners' spectrograms: brightness then moves steadily between "
                           "corners (on by default). About half a second per move.")
        ranges = L.trained_ranges(model)
        lo, hi = ranges.get("pitch", (0, 127))
        st.slider(f"pitch (MIDI; trained {lo:g}-{hi:g})", 0, 127, key="pitch")
        st.slider("velocity", 1, 127, key="velocity")
        st.slider("duration (s)", 0.1, float(model.max_duration or 8.0), step=0.1,
                  key="duration")
        st.number_input("seed", 0, 1_000_000, key="seed")
    base = 12 * (int(ss["pitch"]) // 12)
    keys = st.columns(len(KEYBOARD))
    for i, (col, label) in enumerate(zip(keys, KEYBOARD)):
        octave = (base + i) // 12 - 1
        col.button(f"{label}{octave}", key=f"key_{i}", on_click=on_key, args=(base + i,),
                   help=f"audition MIDI {base + i}", disabled=base + i > 127)


def path_panel(model, directions, point: L.Point) -> None:
    with st.expander(f"morph path ({len(ss.path)} points)", expanded=bool(ss.path)):
        st.caption("Move the pad and add its point to the path (or take the trail of your last "
                   "moves); the path renders as one evolving sound through every point.")
        c1, c2, c3, c4 = st.columns(4)
        c1.button("add pad point to path", key="path_add", on_click=on_add_waypoint)
        c2.button("use my trail as the path", key="path_trail", on_click=on_trail_as_path,
                  disabled=len(ss.trail) < 2)
        c3.button("clear path", key="path_clear", on_click=on_clear_path, disabled=not ss.path)
        seconds = c4.number_input("path length (s)", 0.5, 16.0, 4.0, step=0.5, key="path_seconds")
        if st.button("render path", key="path_render", disabled=len(ss.path) < 2):
            try:
                with st.spinner("rendering the path..."):
                    ss.path_result = L.render_pad_path(model, corners(model), ss.path, point,
                                                       directions, seconds=float(seconds),
                                                       fit=pad_fit(model))
                ss.path_error = None
            except Exception as err:  # shown inline; the session keeps going
                ss.path_result, ss.path_error = None, f"path failed: {type(err).__name__}: {err}"
        if ss.path_error:
            st.error(ss.path_error)
        res = ss.path_result
        if res is not None:
            st.caption(f"path: {len(ss.path)} points, {len(res.audio) / res.sample_rate:.2f} s, "
                       f"rendered in {res.latency_ms:.0f} ms")
            st.audio(res.wav, format="audio/wav")
            for w in res.warnings:
                st.warning(w)
            st.image(res.picture, caption="the path: waveform and log-mel spectrogram")
            st.download_button("download path (.wav)", res.wav, file_name="path.wav",
                               mime="audio/wav", key="path_download")


def latent_map_panel(model, atlas, point: L.Point) -> None:
    with st.expander("latent map", expanded=False):
        names = [ss[f"corner_{i}"] for i in range(4)]
        path = [pad_point(model, x, y).tolist() for x, y in ss.path]
        st.image(L.latent_map_picture(model, atlas, ss.anchors, names, point.coords, path),
                 caption=("corpus instruments (mean latent of their training notes), the four "
                          "corners, the current point (red) and the path (green), in the first "
                          "two PCA coordinates") if atlas is not None else
                 "this model has no instrument atlas: corners, point and path only")


def controls_panel(model, directions) -> None:
    latent, other = L.split_controls(model)
    with st.expander(f"latent components ({len(latent)}, PCA; trained 1st-99th percentile "
                     "ranges)", expanded=False):
        cols = st.columns(4)
        for i, s in enumerate(latent):
            lo, hi = L.slider_range(s)
            cols[i % 4].slider(f"{s.name} [{s.low:.2f}, {s.high:.2f}]", lo, hi, step=0.01,
                               key=f"lat_{s.name}", help=s.description)
    if directions or other:
        with st.expander("sound controls", expanded=True):
            cols = st.columns(max(1, len(directions) + len(other)))
            for col, (n, d) in zip(cols, directions.items()):
                c = d.control()
                col.slider(f"{n} (steps)", float(c.low), float(c.high), step=0.05,
                           key=f"dir_{n}", help=c.description)
            for col, s in zip(cols[len(directions):], other):
                col.slider(f"{s.name} ({s.unit})" if s.unit else s.name, float(s.low),
                           float(s.high), step=(s.high - s.low) / 100, key=f"ctl_{s.name}",
                           help=s.description)


def output_panel(model, directions, point: L.Point) -> None:
    st.subheader("sound")
    clicked = st.button("render", key="render", type="primary")
    if clicked or ss.result_key != point.key():
        with st.spinner("rendering..."):
            do_render(model, directions, point)
    if ss.render_error:
        st.error(ss.render_error)
    res = ss.result
    if res is None:
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("render latency", f"{res.latency_ms:.0f} ms")
    c2.metric("length", f"{len(res.audio) / res.sample_rate:.2f} s")
    c3.metric("peak", f"{res.peak:.3f}")
    st.audio(res.wav, format="audio/wav")  # our WAV bytes: never peak-normalised by the player
    for w in res.warnings:
        st.warning(w)
    st.image(res.picture, caption="waveform and log-mel spectrogram")


def variations_panel(model, directions, point: L.Point) -> None:
    with st.expander("variations around this point", expanded=False):
        c1, c2, c3 = st.columns(3)
        amount = c1.slider("mutation amount (sd)", 0.0, 2.0, 0.5, step=0.05, key="var_amount")
        n = c2.number_input("how many", 1, 8, 4, key="var_n")
        if c3.button("make variations", key="make_vars"):
            try:
                ss.variations = [(p, L.render_point(model, p, directions, picture=False))
                                 for p in L.variations(model, point, int(n), amount,
                                                       seed=len(ss.trail) + int(point.seed))]
            except Exception as err:
                st.error(f"variations failed: {type(err).__name__}: {err}")
        for i, (p, res) in enumerate(ss.variations):
            cols = st.columns([3, 1, 1])
            cols[0].audio(res.wav, format="audio/wav")
            cols[1].button("use", key=f"var_use_{i}", on_click=on_use_point,
                           args=(model, directions, p))
            if cols[2].button("add to pack", key=f"var_pack_{i}"):
                add_to_pack(model, directions, p, f"{ss['model']}-var{i + 1}")


def add_to_pack(model, directions, point: L.Point, name: str) -> None:
    items = ss.setdefault("pack", [])
    used = {i.name for i in items}
    base, k = name, 2
    while name in used:
        name, k = f"{base}-{k}", k + 1
    items.append(L.pack_item(ss["model"], model, point, directions, name))


def pack_panel(model, directions, point: L.Point) -> None:
    st.subheader("sample pack")
    items = ss.setdefault("pack", [])
    c1, c2 = st.columns([2, 1])
    item_name = c1.text_input("instrument name", value=f"{ss['model']}-{len(items) + 1}",
                              key="pack_item_name")
    if c2.button("add current point to pack", key="add_pack"):
        add_to_pack(model, directions, point, item_name)
    if items:
        st.dataframe({"instrument": [i.name for i in items], "model": [i.model for i in items]},
                     hide_index=True)
        if st.button("clear pack list", key="clear_pack"):
            ss.pack = []
            st.rerun()
    with st.expander("pack settings"):
        p1, p2, p3 = st.columns(3)
        pack_name = p1.text_input("pack name", value="synthstudio-pack", key="pack_name")
        low = p2.number_input("lowest root", 0, 127, 48, key="pack_low")
        high = p2.number_input("highest root", 0, 127, 72, key="pack_high")
        step = p3.number_input("root step (semitones)", 1, 24, 3, key="pack_step")
        length = p3.number_input("note length (s)", 0.1, 10.0, 2.0, key="pack_duration")
    if st.button("build pack", key="build_pack", disabled=not items):
        try:
            with st.spinner("rendering the pack..."):
                out = tempfile.mkdtemp(prefix="synthstudio-pack-")
                ss.pack_zip, result = L.build_pack_zip(items, pack_name, out, low=int(low),
                                                       high=int(high), step=int(step),
                                                       duration=float(length))
                ss.pack_summary = (f"{len(result.samples)} samples, "
                                   f"{len(result.instruments)} instrument(s)")
                ss.pack_error = None
        except Exception as err:
            ss.pack_zip, ss.pack_error = None, f"pack failed: {type(err).__name__}: {err}"
    if ss.get("pack_error"):
        st.error(ss.pack_error)
    if ss.get("pack_zip"):
        st.success(f"pack built: {ss.pack_summary}")
        st.download_button("download pack (.zip)", ss.pack_zip,
                           file_name=f"{pack_name}.zip", mime="application/zip",
                           key="download_pack")


def main() -> None:
    st.set_page_config(page_title="synthstudio", layout="wide")
    entry = sidebar(L.generator_entries())
    try:
        model = get_model(entry.name)
        directions, sidecar_error = get_directions(entry.name)
        atlas, atlas_error = get_atlas(entry.name)
    except Exception as err:
        st.error(f"cannot load {entry.name}: {type(err).__name__}: {err}")
        st.stop()
    vocoder = vocoder_picker(model)
    if vocoder is not None:
        try:
            model = get_model_with_vocoder(entry.name, vocoder)
        except Exception as err:
            st.sidebar.error(f"vocoder {vocoder} not usable: {type(err).__name__}: {err}")
    if ss.get("loaded_model") != entry.name:
        init_model_state(entry.name, model, directions, atlas)
    model_manager(entry, model, directions, sidecar_error)
    if atlas_error:
        st.sidebar.warning(f"instrument atlas not used: {atlas_error}")
    anchors_panel(model, directions)
    snapshots_panel(model, directions)
    st.title("timbre morphing")
    pad_panel(model, directions)
    controls_panel(model, directions)
    point = current_point(model, directions)
    output_panel(model, directions, point)
    path_panel(model, directions, point)
    latent_map_panel(model, atlas, point)
    variations_panel(model, directions, point)
    pack_panel(model, directions, point)


main()
