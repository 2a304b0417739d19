"""The look-and-listen page (evalkit/report/html.py, issue 27): every run writes report.html; it holds every number of
summary.json and every per-clip value, links that resolve (also once the run folder has moved), the clips at the top
of each metric, a comparison of several runs, and user text only as text. The browser half is
tests/test_report_browser.py."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from evalkit.report import card_table, collect_runs, load_run
from evalkit.report.__main__ import main as report_main
from evalkit.report.html import PAGE_NAME, ROWS_PER_PAGE, spectrogram_png, write_page, write_run_page
from evalkit.report.table import cell_decimals, cell_text, format_number
from tests.conftest import MUSIC_DIR
from tests.fake_runs import fake_per_clip, make_run

HOSTILE_ID = '"><img src=x>'
HOSTILE_CAPTION = "<script>alert(1)</script>"
SR = 16000
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# -- reading the page -------------------------------------------------------------------------------------------------
class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: "Node | None") -> None:
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def find_all(self, tag: str | None = None, **attrs) -> list["Node"]:
        want = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k) == v if v is not True else k in n.attrs for k, v in want.items())]

    def find(self, tag: str | None = None, **attrs) -> "Node":
        hits = self.find_all(tag, **attrs)
        assert len(hits) == 1, f"{len(hits)} <{tag} {attrs}>"
        return hits[0]


class Page(HTMLParser):
    """The page as a tree (html.parser; the template closes every element it opens, which this checks)."""

    def __init__(self, path: Path) -> None:
        super().__init__(convert_charrefs=True)
        self.path = path
        self.root = self.node = Node("#document", {}, None)
        self.feed(path.read_text(encoding="utf-8"))
        self.close()
        assert self.node is self.root, f"<{self.node.tag}> never closed"

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.node)
        self.node.children.append(node)
        if tag not in VOID:
            self.node = node

    def handle_startendtag(self, tag, attrs):
        self.node.children.append(Node(tag, dict(attrs), self.node))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.node.tag == tag, f"</{tag}> closes <{self.node.tag}>"
        self.node = self.node.parent

    def handle_data(self, data):
        self.node.children.append(data)

    def by_summary(self) -> dict[tuple, str]:
        """``{(run index, *keys): text}`` of the elements that show a number of summary.json (data-summary)."""
        out = {}
        for n in self.root.find_all(data_summary=True):
            key = tuple(json.loads(n.attrs["data-summary"]))
            assert key not in out, f"{key} shown twice"
            out[key] = n.attrs.get("value") or n.text()
        return out

    def links(self) -> list[str]:
        """Every link of the page to a file: a[href] (not in-page anchors), audio[src], img[src]."""
        out = [n.attrs["href"] for n in self.root.find_all("a") if not n.attrs["href"].startswith("#")]
        return out + [n.attrs["src"] for n in self.root.find_all("audio") + self.root.find_all("img")]

    def target(self, link: str) -> Path:
        """The file a link of the page points to, from where the page is now."""
        if link.startswith("file:"):
            return Path(urllib.request.url2pathname(urllib.parse.urlparse(link).path))
        assert "://" not in link and not link.startswith("/"), link
        return self.path.parent / urllib.parse.unquote(link)


def clip_rows(page: Page, run: int = 0) -> list[Node]:
    """The rows of a run's table of every clip, in order: the first page in the table, the rest in its template."""
    table = page.root.find("table", id=f"clips{run}")
    return table.find("tbody").find_all("tr") + page.root.find("template", id=f"clips{run}-rows").find_all("tr")


def clip_table(page: Page, run: int = 0) -> tuple[list[str], dict[str, list[Node]]]:
    """``(per-clip columns, {clip id: value cells})`` of a run's table of every clip."""
    table = page.root.find("table", id=f"clips{run}")
    columns = [th.attrs["data-col"] for th in table.find("thead").find_all("th") if "data-col" in th.attrs]
    return columns, {tr.attrs["data-id"]: tr.find_all("td", data_v=True) for tr in clip_rows(page, run)}


# -- runs with audio --------------------------------------------------------------------------------------------------
def _tone(path: Path, freq: float, seconds: float = 1.0) -> None:
    t = np.arange(int(SR * seconds)) / SR
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)


def fake_run_with_audio(folder: Path, refs: Path, clips: pd.DataFrame, **kw) -> Path:
    """A fabricated run (tests/fake_runs.py) whose clips have audio: ``<folder>/audio/<id>.flac`` as a run writes
    them (absolute paths), references in ``refs`` (outside the run folder)."""
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    refs.mkdir(parents=True, exist_ok=True)
    clips = clips.copy()
    clips["audio_path"] = [str(folder / "audio" / f"{cid}.flac") for cid in clips["id"]]
    clips["reference_path"] = [str(refs / f"{cid}.flac") for cid in clips["id"]]
    for k, cid in enumerate(clips["id"]):
        _tone(folder / "audio" / f"{cid}.flac", 220.0 * (1 + k % 7))
        if not (refs / f"{cid}.flac").exists():
            _tone(refs / f"{cid}.flac", 330.0 * (1 + k % 5))
    return make_run(folder, clips=clips, embeddings=False, extra_summary={"run_dir": str(folder)}, **kw)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A real folder-mode run (tiny random-weight backbones, every metric incl. stereo) on the shared music clips, plus
    a silent clip, a damaged reference, an unused file, and a clip named ``"><img src=x>.wav`` whose caption is a
    script: the run itself writes report.html."""
    if not MUSIC_DIR.is_dir():
        pytest.skip(f"{MUSIC_DIR} not present")
    from evalkit import evaluate

    root = tmp_path_factory.mktemp("html")
    gen, ref = root / "gen", root / "ref"
    gen.mkdir(), ref.mkdir()
    music = sorted(f for f in MUSIC_DIR.glob("*.flac") if not f.name.endswith(".melody.flac"))  # 12 pieces
    captions = pd.read_csv(MUSIC_DIR / "metadata.csv").set_index("id")["caption"]
    prompts = []
    for k, f in enumerate(music):
        shutil.copy(f, gen / f.name)
        shutil.copy(music[(k + 3) % len(music)], ref / f.name)
        prompts.append((f.stem, captions[f.stem]))
    audio, sr = sf.read(str(music[0]), always_2d=True)
    sf.write(str(gen / f"{HOSTILE_ID}.wav"), audio, sr)
    shutil.copy(music[5], ref / f"{HOSTILE_ID}.flac")
    prompts.append((HOSTILE_ID, HOSTILE_CAPTION))
    sf.write(str(gen / "silent.flac"), np.zeros((10 * sr, 2), np.float32), sr)
    shutil.copy(music[1], ref / "silent.flac")
    prompts.append(("silent", "a silent clip"))
    shutil.copy(music[2], gen / "badref.flac")
    (ref / "badref.wav").write_bytes(b"RIFF\x00\x00garbage")
    prompts.append(("badref", "a clip whose reference is damaged"))
    shutil.copy(music[3], gen / "orphan.flac")
    pd.DataFrame(prompts, columns=["id", "caption"]).to_csv(root / "prompts.csv", index=False)
    out = root / "run"
    evaluate(["model=folder", f"model.dir={gen}", "dataset=prompts", f"dataset.path={root / 'prompts.csv'}",
              f"reference.dir={ref}", "metrics=[fad,kld,clap,chroma,stereo]", "backbone_weights=random",
              "backbone_size=tiny", "progress=false"], out_dir=out)
    return out


# -- every number -----------------------------------------------------------------------------------------------------
def _leaves(value, path=()):
    """``[(path, leaf)]`` of summary.json's numbers (lists holding numbers are one leaf; booleans are not numbers)."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _leaves(v, path + (k,))]
    if isinstance(value, list):
        return [(path, value)] if any(_number(v) for v in value) else []
    return [(path, value)] if _number(value) else []


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _values_text(v, decimals: int) -> str:
    """A number the metric's ``compute`` returned, as the page writes it: counts as integers, the rest with the
    metric's decimals (2 significant digits at least)."""
    if float(v).is_integer():
        return str(int(v))
    return format_number(v, cell_decimals(decimals, v))


def test_every_run_writes_its_page(real_run):
    page = Page(real_run / PAGE_NAME)
    banner = page.root.find("div", class_="banner")
    # a folder run is labelled by its folder (model.label: `gen`)
    assert banner.text().startswith("RANDOM WEIGHTS in gen (random weights): the metric backbones (fad, kld, clap)")
    manifest = json.loads((real_run / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    images = list((real_run / "report_files").iterdir())
    assert images and all(p.suffix == ".png" for p in images)


def test_the_page_shows_every_number_of_the_summary(real_run):
    """Each number of summary.json (the metrics' declared facts, ``spec``, aside) is on the page, found by its place
    in summary.json: headline values as the card table formats them, counts as counts, computed values with the
    metric's decimals, recipe and settings as summary.json writes them."""
    summary = json.loads((real_run / "summary.json").read_text())
    shown = Page(real_run / PAGE_NAME).by_summary()
    table = card_table(collect_runs([real_run]))
    tables = [table, *table.attrs["sections"].values()]
    label = table.index[0]
    checked = 0
    for path, v in _leaves(summary):
        if "spec" in path:
            continue
        key = (0, *path)
        assert key in shown, f"{path} = {v} is not on the page"
        text = shown[key]
        if path[0] == "metrics" and path[2] == "value":
            spec = summary["metrics"][path[1]]["spec"]
            column = spec["card_column"] if spec["section"] == "card" else path[1]
            t = next(t for t in tables if column in t.attrs["columns"])
            want = cell_text(t, label, column)[0]
            assert abs(float(text) - v) <= 0.5 * 10 ** -cell_decimals(spec["decimals"], v)
        elif path[0] == "metrics" and path[2] == "values":
            decimals = summary["metrics"][path[1]]["spec"]["decimals"]
            want = _values_text(v, decimals)
            assert abs(float(text) - v) <= 0.5 * 10 ** -cell_decimals(decimals, v)
        elif path[0] == "metrics" and path[2] == "paired" and path[-1] in ("value", "low", "high"):
            want = f"{v:.3f}"
        elif path[0] in ("settings", "dataset") or (path[0] == "metrics" and path[2] == "recipe") or (
                path[0] == "metrics" and path[2] == "paired" and path[-1] in ("level", "n_boot")):
            want = json.dumps(v)
        elif isinstance(v, list):  # e.g. the stereo metric's bands, [low, high] Hz
            want = json.dumps(v)
        else:  # counts: clips, skipped, flags, reasons, windows
            want = str(v)
        assert text == want, (path, v, text)
        checked += 1
    # the run's counts, the audit and the stereo block are among them
    assert {(0, "n_clips"), (0, "n_skipped"), (0, "audit", "silent"), (0, "reference_audit", "unreadable"),
            (0, "metrics", "fad", "values", "n_gen_windows"), (0, "metrics", "stereo", "paired", "correlation",
                                                                  "difference", "value")} <= set(shown)
    assert shown[(0, "n_clips")] == "15" and shown[(0, "audit", "silent")] == "1"
    print(f"{checked} numbers checked")
    assert checked > 150


def test_every_per_clip_value_is_in_the_clip_table_as_written(real_run):
    """Every metric's ``spec.per_clip`` column, every clip: the cell's ``data-v`` is clips.parquet's value exactly
    (what sorting uses), its text the value with the metric's decimals (counts as integers); '–' where not scored."""
    run = load_run(real_run)
    clips = run.clips.set_index("id")
    columns, rows = clip_table(Page(real_run / PAGE_NAME))
    want_columns = [c for s in run.specs.values() for c in s.per_clip if c in clips.columns]
    assert columns == want_columns and len(columns) >= 17  # fad 2, kld 5, clap, chroma 2, stereo 7
    decimals = {c: s.decimals for s in run.specs.values() for c in s.per_clip}
    assert sorted(rows) == sorted(clips.index)
    n = 0
    for cid, cells in rows.items():
        for column, cell in zip(columns, cells):
            v = clips.loc[cid, column]
            if not np.isfinite(v):
                assert (cell.attrs["data-v"], cell.text()) == ("", "–"), (cid, column)
                continue
            assert float(cell.attrs["data-v"]) == v, (cid, column)
            finite = clips[column].dropna()
            counts = (finite == finite.round()).all()  # windows, rows, frames: written as integers
            want = str(int(v)) if counts else format_number(v, cell_decimals(decimals[column], v))
            assert cell.text() == want, (cid, column, v)
            n += 1
    assert n == 13 * len(columns) + 1  # every clip has every value but the silent one (none) and badref (clap only)
    assert rows["silent"][columns.index("clap")].text() == "–"


def test_user_text_is_shown_as_text(real_run):
    """A caption ``<script>alert(1)</script>`` and a file named ``"><img src=x>.wav`` are text: no element comes from
    them, and the file still plays (its link percent-encoded)."""
    page = Page(real_run / PAGE_NAME)
    assert len(page.root.find_all("script")) == 1  # the page's own
    assert not [n for n in page.root.find_all("img") if n.attrs.get("src") == "x"]
    row = page.root.find("tr", id=f"run0-clip{list(load_run(real_run).clips['id']).index(HOSTILE_ID)}")
    assert row.attrs["data-id"] == HOSTILE_ID
    assert row.find("td", class_="id").text() == HOSTILE_ID
    assert row.find("td", class_="caption").text() == HOSTILE_CAPTION
    src = row.find_all("audio")[0].attrs["src"]
    assert src.startswith("file://") and src.endswith("/%22%3E%3Cimg%20src%3Dx%3E.wav")
    assert page.target(src).is_file()
    # the Content-Security-Policy pins the page's one script by its hash
    csp = page.root.find("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert csp.startswith("script-src 'sha256-") and "unsafe-inline" not in csp


def test_the_audit_on_the_page(real_run):
    """Flags with their counts and clips, every clip not scored with its reason, unused files."""
    summary = json.loads((real_run / "summary.json").read_text())
    page = Page(real_run / PAGE_NAME)
    skipped = [(tr.attrs["data-id"], [td.text() for td in tr.find_all("td")][1:])
               for tr in page.root.find("table", class_="skipped").find("tbody").find_all("tr")]
    clips = load_run(real_run).clips.set_index("id")
    want = [(cid, ["every metric", clips.loc[cid, "skip_reason"]]) for cid in clips.index
            if isinstance(clips.loc[cid, "skip_reason"], str)]
    want += [(cid, [m, clips.loc[cid, f"{m}_skipped"]]) for cid in clips.index for m in summary["metrics"]
             if f"{m}_skipped" in clips and isinstance(clips.loc[cid, f"{m}_skipped"], str)]
    assert sorted(skipped) == sorted(want)
    assert {cid for cid, _ in skipped} == {"silent", "badref"}
    unused = [[td.text() for td in tr.find_all("td")]
              for tr in page.root.find("table", class_="unused").find("tbody").find_all("tr")]
    assert unused == [[u["file"], u["reason"]] for u in summary["unused_files"]]
    assert any(f.endswith("orphan.flac") for f, _ in unused)
    flagged = page.root.find("tr", data_flag="reference:unreadable")
    assert [a.text() for a in flagged.find_all("a")] == ["badref"]
    # a damaged file gets a link and the reason, not a player that cannot play
    row = page.root.find("tr", data_id="badref", id=True)
    assert "unreadable (audit)" in row.text() and len(row.find_all("audio")) == 1


# -- links ------------------------------------------------------------------------------------------------------------
def _assert_links_resolve(page: Page) -> list[str]:
    links = page.links()
    missing = [link for link in links if not page.target(link).is_file()]
    assert not missing, missing
    return links


def test_links_resolve_also_after_the_run_folder_is_moved(tmp_path):
    """The run's own audio is linked relatively (audio/<id>.flac), references outside it by absolute URL: the page
    still plays after the folder is copied elsewhere and the original deleted, and so does a page written there."""
    clips = fake_per_clip(6)
    clips.loc[2, "id"] = HOSTILE_ID
    run = fake_run_with_audio(tmp_path / "a" / "run", tmp_path / "refs", clips)
    write_run_page(run, all_images=True)
    links = _assert_links_resolve(Page(run / PAGE_NAME))
    own = {f"audio/{urllib.parse.quote(c, safe='')}.flac" for c in clips["id"]}
    assert {x for x in links if not x.startswith("file:") and not x.startswith("report_files/")} == own | {
        "summary.json"}
    assert all(x.startswith("file://") for x in links if "refs" in x)
    moved = tmp_path / "b" / "c" / "run"
    shutil.copytree(run, moved)
    shutil.rmtree(tmp_path / "a")
    _assert_links_resolve(Page(moved / PAGE_NAME))  # the copied page, as it was written
    write_run_page(moved, all_images=True)  # clips.parquet still records the old folder's paths
    links = _assert_links_resolve(Page(moved / PAGE_NAME))
    assert {x for x in links if x.startswith("audio/")} == own  # the run's own audio, found in the moved folder


def test_links_of_a_real_run_resolve_from_a_copy(real_run, tmp_path):
    """Folder mode: the clips and references live outside the run folder (absolute URLs, still valid from a copy);
    the run folder's own files (summary.json, spectrograms) are the copy's."""
    _assert_links_resolve(Page(real_run / PAGE_NAME))
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(real_run, copy)
    page = Page(copy / PAGE_NAME)
    links = _assert_links_resolve(page)
    inside = [x for x in links if not x.startswith("file:")]
    assert "summary.json" in inside and any(x.startswith("report_files/") for x in inside)
    assert all(copy in page.target(x).parents for x in inside)


# -- the clips at the top and their spectrograms ----------------------------------------------------------------------
def test_worst_and_best_follow_each_metrics_direction(tmp_path):
    """KLD (lower is better): worst = highest; CLAP (higher is better): worst = lowest; unscored clips never shown."""
    clips = fake_per_clip(10)
    clips["kld"] = [0.5, 2.0, 1.0, 3.0, 0.1, np.nan, 1.5, 0.2, 2.5, 0.7]
    clips["clap"] = [0.30, 0.10, 0.25, 0.05, 0.40, np.nan, 0.20, 0.35, 0.15, 0.45]
    run = fake_run_with_audio(tmp_path / "run", tmp_path / "refs", clips, metrics=("kld", "clap"))
    write_run_page(run, n_top=3)
    page = Page(run / PAGE_NAME)

    def shown(metric, kind):
        table = page.root.find("div", class_="top", data_metric=metric).find("table", data_kind=kind)
        return [(tr.attrs["data-id"], tr.find_all("td")[1].text()) for tr in table.find("tbody").find_all("tr")]

    assert shown("kld", "worst") == [("clip0003", "3.00"), ("clip0008", "2.50"), ("clip0001", "2.00")]
    assert shown("kld", "best") == [("clip0004", "0.10"), ("clip0007", "0.20"), ("clip0000", "0.50")]
    assert shown("clap", "worst") == [("clip0003", "0.050"), ("clip0001", "0.100"), ("clip0008", "0.150")]
    assert shown("clap", "best") == [("clip0009", "0.450"), ("clip0004", "0.400"), ("clip0007", "0.350")]
    # spectrograms for exactly the clips shown at the top, generated and reference, each drawn once
    top = {"clip0003", "clip0008", "clip0001", "clip0004", "clip0007", "clip0000", "clip0009"}
    with_images = {tr.attrs["data-id"] for tr in clip_rows(page) if tr.find_all("img")}
    assert with_images == top
    assert len(list((run / "report_files").glob("*.png"))) == 2 * len(top)


def test_spectrograms_of_every_clip_when_asked_and_drawn_once(tmp_path):
    clips = fake_per_clip(8)
    run = fake_run_with_audio(tmp_path / "run", tmp_path / "refs", clips, metrics=("kld", "clap"))
    write_run_page(run, n_top=1, all_images=True)
    images = sorted((run / "report_files").glob("*.png"))
    assert len(images) == 2 * len(clips)
    from PIL import Image

    with Image.open(images[0]) as im:
        assert (im.format, im.size, im.mode) == ("PNG", (200, 64), "P")
    stamps = {p.name: p.stat().st_mtime_ns for p in images}
    write_run_page(run, n_top=1, all_images=True)  # unchanged audio: nothing drawn again
    assert {p.name: p.stat().st_mtime_ns for p in (run / "report_files").glob("*.png")} == stamps
    write_run_page(run, n_top=1)  # back to the default: the images no longer shown are removed
    left = list((run / "report_files").glob("*.png"))
    shown = [tr for tr in clip_rows(Page(run / PAGE_NAME)) if tr.find_all("img")]
    assert 1 <= len(shown) <= 4 and len(left) == 2 * len(shown)


def test_a_spectrogram_names_the_file_it_cannot_read(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(ValueError, match=r"bad\.wav: not a readable audio file"):
        spectrogram_png(bad)
    nan = tmp_path / "nan.wav"
    sf.write(str(nan), np.full(SR, np.nan, np.float32), SR, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"nan\.wav: the audio holds NaN or infinite samples"):
        spectrogram_png(nan)


# -- several runs -----------------------------------------------------------------------------------------------------
def test_comparison_of_two_runs(tmp_path):
    """Two runs of the same prompts: the paired per-clip differences of each shared metric, and the clips that moved
    most between them with both runs' audio; written by ``python -m evalkit.report A B --html OUT``."""
    a = fake_per_clip(12, seed=1)
    b = a.copy()
    rng = np.random.default_rng(5)
    b["clap"] = a["clap"] + 0.01 + rng.normal(0, 0.001, len(a))
    b.loc[7, "clap"] = a.loc[7, "clap"] - 0.2  # the clip that moved most, for the worse
    b["kld"] = a["kld"] - 0.1
    refs = tmp_path / "refs"
    fake_run_with_audio(tmp_path / "runs" / "a", refs, a, model="small", metrics=("kld", "clap"))
    fake_run_with_audio(tmp_path / "runs" / "b", refs, b, model="medium", metrics=("kld", "clap"))
    out = tmp_path / "report" / "runs.html"
    assert report_main([str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b"), "--no-plots", "--n-boot", "200",
                        "--out", str(tmp_path / "report"), "--html", str(out), "--html-top", "3"]) == 0
    page = Page(out)
    _assert_links_resolve(page)
    section = page.root.find("section", class_="comparison")
    assert section.find("h2").text() == "medium against small: per-clip differences"
    rows = {tr.attrs["data-metric"]: [td.text() for td in tr.find_all("td")]
            for tr in section.find("table", class_="differences").find("tbody").find_all("tr")}
    d = (b["clap"] - a["clap"]).to_numpy()
    assert rows["clap"][0] == "12" and rows["clap"][2:4] == ["11", "1"]  # better, worse
    assert float(rows["clap"][1].split()[0]) == pytest.approx(d.mean(), abs=5e-5)
    assert rows["kld"][2:4] == ["12", "0"] and rows["kld"][1].startswith("-0.10 [-0.10, -0.10]")
    moved = section.find("table", class_="moved", data_metric="clap").find("tbody").find_all("tr")
    assert moved[0].attrs["data-id"] == "clip0007" and len(moved) == 3
    cells = [td.text() for td in moved[0].find_all("td")]
    assert cells[2:5] == [format_number(a.loc[7, "clap"], 3), format_number(b.loc[7, "clap"], 3),
                          format_number(d[7], cell_decimals(3, d[7]))]
    players = [x.attrs["src"] for x in moved[0].find_all("audio")]  # the shared reference once
    assert players == ["../runs/a/audio/clip0007.flac", (refs / "clip0007.flac").as_uri(),
                       "../runs/b/audio/clip0007.flac"]
    # both runs' own sections follow, each with its table of every clip
    assert [s.find("h2").text() for s in page.root.find_all("section", class_="run")] == ["small", "medium"]


# -- the run never fails for its page ---------------------------------------------------------------------------------
def test_a_page_that_cannot_be_written_never_fails_the_run(tmp_path, monkeypatch, caplog):
    import evalkit
    import evalkit.report.html as html

    def broken(*args, **kwargs):
        raise RuntimeError("no space left on device")

    monkeypatch.setattr(html, "write_run_page", broken)
    with caplog.at_level(logging.WARNING, logger="evalkit"):
        summary = evalkit.evaluate(["generation.duration=1.0", "dataset.limit=2", "metrics=[clap]", "progress=false"],
                                   out_dir=tmp_path / "run")
    assert math.isfinite(summary["metrics"]["clap"]["value"])
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "finished"
    assert f"could not write {tmp_path / 'run' / 'report.html'}: RuntimeError: no space left on device" in caplog.text
    assert not (tmp_path / "run" / "report.html").exists()


def test_the_page_needs_no_torch(tmp_path):
    """Writing a page, spectrograms included, imports neither torch nor the run pipeline (CI pages runs anywhere)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    run = fake_run_with_audio(tmp_path / "run", tmp_path / "refs", fake_per_clip(4), metrics=("kld", "clap"))
    code = ("import sys; from evalkit.report.html import write_run_page; write_run_page(sys.argv[1], all_images=True); "
            "print(sorted(m for m in ('torch', 'evalkit.run', 'evalkit.stages', 'evalkit.metrics.base') "
            "if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code, str(run)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
    assert len(list((run / "report_files").glob("*.png"))) == 8


def test_write_page_refuses_no_clips_at_the_top(tmp_path):
    run = make_run(tmp_path / "run", n_clips=4, embeddings=False, metrics=("clap",))
    with pytest.raises(ValueError, match="n_top=0"):
        write_page([run], tmp_path / "p.html", n_top=0)


# -- in a real browser ------------------------------------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
#: Chromium's flags for a headless, offline, throwaway session (a fresh profile each time: --user-data-dir).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1400")
#: Where the browser test also writes its screenshot, quantised (docs/report.png is made so; see the README).
SCREENSHOT_ENV = "EVALKIT_REPORT_SCREENSHOT"


def _no_browser() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    from tests.conftest import have

    if not have("selenium"):
        return "selenium is not installed (it is in the extra evalkit[test]: pip install -e '.[test]')"
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    return (f"no {' and no '.join(missing)}: the browser tests drive Debian's Chromium "
            "(apt-get install -y chromium chromium-driver)") if missing else ""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if _no_browser():
        pytest.skip(_no_browser())
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # never a browser selenium would fetch itself
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(120)
    yield driver
    driver.quit()


#: Loads every <audio> element's source (preload=metadata, load()) and reports [src, readyState, error code, duration].
LOAD_AUDIO = """
const done = arguments[arguments.length - 1];
const players = Array.from(document.querySelectorAll("audio"));
Promise.all(players.map(a => new Promise(resolve => {
  const finish = () => resolve([a.getAttribute("src"), a.readyState, a.error ? a.error.code : null, a.duration]);
  a.addEventListener("loadedmetadata", finish, {once: true});
  a.addEventListener("error", finish, {once: true});
  a.preload = "metadata";
  a.load();
}))).then(done);
"""
VISIBLE_IDS = "return Array.from(document.querySelectorAll('#clips0 tbody tr')).map(r => r.dataset.id);"


def test_in_chromium_the_page_plays_sorts_and_filters(real_run, browser, tmp_path):
    """Headless Chromium opens the page from file://: no console error, no alert, every player's source loads (the
    clip named like markup too), sorting by a column and the flag filter change the rows shown; a screenshot."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((real_run / PAGE_NAME).as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
    caption = browser.find_element(By.CSS_SELECTOR, "#clips0 tr[data-id='\\\"><img src=x>'] td.caption")
    assert caption.text == HOSTILE_CAPTION

    players = browser.execute_async_script(LOAD_AUDIO)
    assert len(players) == len(Page(real_run / PAGE_NAME).root.find_all("audio")) > 30
    failed = [p for p in players if p[1] < 1 or p[2] is not None]
    assert not failed, failed
    assert all(abs(p[3] - 10.0) < 0.01 for p in players)  # every clip and reference is 10 s long
    assert any(p[0].endswith("/%22%3E%3Cimg%20src%3Dx%3E.wav") for p in players)

    clips = load_run(real_run).clips
    scored = clips.dropna(subset=["clap"])
    unscored = list(clips.loc[clips["clap"].isna(), "id"])
    every = browser.execute_script(VISIBLE_IDS)
    assert every == list(clips["id"])
    header = browser.find_element(By.CSS_SELECTOR, "#clips0 th[data-col='clap'] button")
    header.click()
    assert browser.execute_script(VISIBLE_IDS) == list(scored.sort_values("clap", kind="stable")["id"]) + unscored
    header.click()
    assert browser.execute_script(VISIBLE_IDS) == list(
        scored.sort_values("clap", ascending=False, kind="stable")["id"]) + unscored
    flag = Select(browser.find_element(By.CSS_SELECTOR, "select.flag-filter[data-table='clips0']"))
    shown = browser.find_element(By.CSS_SELECTOR, "output[data-table='clips0']")
    flag.select_by_value("silent")
    assert browser.execute_script(VISIBLE_IDS) == ["silent"]
    assert shown.text == "1–1 of 1 clips flagged silent (15 in all)"
    flag.select_by_value("reference:unreadable")
    assert browser.execute_script(VISIBLE_IDS) == ["badref"]
    flag.select_by_value("skipped")
    assert sorted(browser.execute_script(VISIBLE_IDS)) == ["badref", "silent"]
    flag.select_by_value("")
    assert len(browser.execute_script(VISIBLE_IDS)) == 15

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    from PIL import Image

    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size[0] >= 1000
        if os.environ.get(SCREENSHOT_ENV):  # 256 colours: a third of the bytes, the same to the eye
            im.convert("RGB").quantize(256).save(os.environ[SCREENSHOT_ENV], optimize=True)


def test_in_chromium_a_large_table_shows_a_page_of_rows_at_a_time(browser, tmp_path):
    """A run of 2.5 pages of clips: the table holds one page of rows (players included); next/previous, sorting and
    the filter work over all of them, and a link to a clip on another page shows that page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    n = 2 * ROWS_PER_PAGE + ROWS_PER_PAGE // 2
    clips = fake_per_clip(n, seed=3)
    clips["audit_flags"] = [["clipped"] if k % 40 == 0 else [] for k in range(n)]
    run = fake_run_with_audio(tmp_path / "run", tmp_path / "refs", clips, metrics=("kld", "clap"))
    write_run_page(run, n_top=3)
    browser.get((run / PAGE_NAME).as_uri())
    output = browser.find_element(By.CSS_SELECTOR, "output[data-table='clips0']")
    ids = list(clips["id"])
    assert browser.execute_script(VISIBLE_IDS) == ids[:ROWS_PER_PAGE] and output.text == f"1–100 of {n} clips"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#clips0 audio")) == 2 * ROWS_PER_PAGE
    browser.find_element(By.CSS_SELECTOR, "button.next").click()
    browser.find_element(By.CSS_SELECTOR, "button.next").click()
    assert browser.execute_script(VISIBLE_IDS) == ids[2 * ROWS_PER_PAGE:] and output.text == f"201–{n} of {n} clips"
    assert not browser.find_element(By.CSS_SELECTOR, "button.next").is_enabled()
    browser.find_element(By.CSS_SELECTOR, "#clips0 th[data-col='kld'] button").click()
    assert browser.execute_script(VISIBLE_IDS) == list(clips.sort_values("kld")["id"])[:ROWS_PER_PAGE]
    Select(browser.find_element(By.CSS_SELECTOR, "select.flag-filter")).select_by_value("clipped")
    assert browser.execute_script(VISIBLE_IDS) == list(clips.sort_values("kld")["id"][clips["audit_flags"].map(
        bool)])
    # the worst KLD is the last clip of the ascending order: its link shows the page that holds it
    Select(browser.find_element(By.CSS_SELECTOR, "select.flag-filter")).select_by_value("")
    worst = browser.find_element(By.CSS_SELECTOR, "div.top[data-metric='kld'] table[data-kind='worst'] a")
    worst.click()
    assert worst.text == clips.loc[clips["kld"].idxmax(), "id"]
    assert browser.execute_script(VISIBLE_IDS)[-1] == worst.text and output.text == f"201–{n} of {n} clips"
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
