"""`search report` on a real (tiny) study: tables agree with the export, and the HTML renders in headless
Chromium with no console errors, drawn SVG in every figure, and a screenshot that is not blank."""

import html
import io
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from results.present import PACKAGES
from results.report import build_report
from search.planning.options import RunFlags, resolve
from search.planning.status import load_study, load_trials
from search.run.driver import run_study
from tests.search.helpers import spec
from tests.tiny import TINY_FIXED

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    s = spec(
        repeats=2,  # two seeds: every paired comparison has a spread; each more seed is 7 more trials
        # 40 images a class: with fewer, every tiny model sits at chance and a comparison has no variance.
        datasets={"digits": {"kind": "digits", "limit_per_class": 40}},
        grid={"cam_method": ["gradcam"], "threshold": [0.3, 0.6]},
        baselines=[{"proxy_steps": "2"}, {"cam_method": ["randomcam", "duplicate"]}],
    )
    # The local executor: what the report reads does not depend on the dispatch, and one warm worker costs a
    # fraction of a Ray's start and its workers' imports.
    options = resolve(s, RunFlags(f"sqlite:///{root}/study.db", root / "out", executor="local"))
    assert run_study(s, options, Console(file=io.StringIO())) == 0
    return root


def test_report_tables_agree_with_the_export(study_dir):
    storage = f"sqlite:///{study_dir}/study.db"
    made = build_report(
        load_study("tiny", storage), load_trials("tiny", storage), study_dir / "report", say=lambda _: None
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "search",
            "export",
            "--study",
            "tiny",
            "--storage",
            storage,
            "--out",
            str(study_dir / "trials.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    export = pd.read_csv(study_dir / "trials.csv")
    assert set(export["setting_proxy_steps"]) == {"1,p,1", "2"}  # text that survives read_csv, for every trial
    # Every row's effective settings (issue 24: `fixed_*` columns showed the study's, not the row's).
    assert export["setting_image_size"].eq(TINY_FIXED["image_size"]).all() and export["study"].eq("tiny").all()
    assert export.loc[export["kind"] == "baseline", "setting_threshold"].isna().all()  # no mask: no threshold
    assert "proxy_steps_done" in export and "stage" in export
    export = export[(export["state"] == "COMPLETE") & (export["kind"] != "control")]
    verdicts = pd.read_csv(study_dir / "report" / "tables" / "verdicts.csv")
    legend = pd.read_csv(study_dir / "report" / "tables" / "legend.csv").set_index("label")
    assert len(verdicts) == 6  # each threshold: the baseline, its random-mask control, the duplicate control
    assert sorted(verdicts["reference_kind"].unique()) == ["baseline", "control (duplicate)", "control (randomcam)"]
    for _, row in verdicts[verdicts["reference_kind"] == "baseline"].iterrows():
        threshold = float(re.search(r"threshold=([\d.]+)", legend.loc[row["configuration"], "configuration"]).group(1))
        mine = export[(export["setting_threshold"] == threshold)].sort_values("seed")["test_accuracy"].to_numpy()
        base = export[export["kind"] == "baseline"].sort_values("seed")["test_accuracy"].to_numpy()
        assert row["mean_config"] == pytest.approx(mine.mean())
        assert row["mean_reference"] == pytest.approx(base.mean())
        assert row["mean_diff"] == pytest.approx((mine - base).mean()) and row["family_size"] == 2
    titles = [title for title, _ in made.figures]
    assert "CAMs of two trained models" in titles and "learning curves" in titles
    for name in ("verdicts", "best_configurations", "by_threshold", "by_dataset_architecture"):
        assert (study_dir / "report" / "tables" / f"{name}.tex").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_offline_in_headless_chromium(study_dir, tmp_path):
    html = study_dir / "report" / "report.html"
    if not html.exists():
        storage = f"sqlite:///{study_dir}/study.db"
        build_report(
            load_study("tiny", storage), load_trials("tiny", storage), study_dir / "report", say=lambda _: None
        )
    text = html.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", text) and not re.search(r"<link[^>]*\bhref=", text)  # all inline
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000"]
    # A copy of the report that writes, once drawn, the page's scroll width beside the window's (test-only script).
    probe = tmp_path / "probe.html"
    probe.write_text(
        text.replace(
            "</body>",
            "<script>window.addEventListener('load', () => setTimeout(() => "
            "document.body.setAttribute('data-overflow', document.documentElement.scrollWidth "
            "+ ' ' + window.innerWidth), 500));</script></body>",
        )
    )
    dom = subprocess.run(
        [*common, "--window-size=1280,2400", "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Uncaught" not in dom.stderr and ":ERROR:CONSOLE" not in dom.stderr, dom.stderr[-2000:]
    figures = dom.stdout.split('class="figure"')[1:]
    assert len(figures) >= 6
    for figure in figures:
        assert "main-svg" in figure and re.search(r"<(path|image|rect)\b", figure), figure[:300]
    widths = re.search(r"data-overflow=\"(\d+) (\d+)\"", dom.stdout)
    assert widths and int(widths.group(1)) <= int(widths.group(2)), widths  # nothing wider than the page
    # Issue 24: no word broken inside a token (`mydigit s`, `architectur e`, p-values split) at two widths: each
    # word of every table cell must lie on one line (one client rect for its range).
    words = tmp_path / "words.html"
    words.write_text(
        text.replace(
            "</body>",
            "<script>window.addEventListener('load', () => setTimeout(() => { let broken = [];"
            "for (const cell of document.querySelectorAll('td, th')) { const node = cell.firstChild;"
            "if (!node || node.nodeType !== 3) continue; const re = /\\S+/g; let m;"
            "while ((m = re.exec(node.data))) { const r = document.createRange(); r.setStart(node, m.index);"
            "r.setEnd(node, m.index + m[0].length); const lines = new Set([...r.getClientRects()].map(x => "
            "Math.round(x.top))); if (lines.size > 1) broken.push(m[0]); } }"
            "document.body.setAttribute('data-broken', broken.length + ':' + broken.slice(0, 5).join('|')); }, 500));"
            "</script></body>",
        )
    )
    for width in (900, 1400):
        seen = subprocess.run(
            [*common, f"--window-size={width},2400", "--dump-dom", words.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
        broken = re.search(r'data-broken="(\d+):([^"]*)"', seen.stdout)
        assert broken and broken.group(1) == "0", (width, broken and broken.group(2))
    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, "--window-size=1280,2400", f"--screenshot={shot}", html.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text and plots, not a blank page


def test_figures_go_to_optuna_dashboard_when_asked(study_dir):
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    storage = f"sqlite:///{study_dir}/study.db"
    study = load_study("tiny", storage, writable=True)
    made = build_report(
        study, load_trials("tiny", storage), study_dir / "report_dashboard", to_dashboard=True, say=lambda _: None
    )
    reread = load_study("tiny", storage)
    stored = get_plotly_graph_objects(reread._storage.get_study_system_attrs(reread._study_id))
    assert len(stored) == len(made.figures) >= 6
    assert "learning-curves" in stored and '"data"' in stored["learning-curves"]


def latex_tables(study_dir) -> list:
    """The report's .tex tables, the report built first when no test has built it yet."""
    tables = sorted((study_dir / "report" / "tables").glob("*.tex"))
    if not tables:
        storage = f"sqlite:///{study_dir}/study.db"
        build_report(
            load_study("tiny", storage), load_trials("tiny", storage), study_dir / "report", say=lambda _: None
        )
        tables = sorted((study_dir / "report" / "tables").glob("*.tex"))
    return tables


def compile_tables(tables: list, folder, name: str) -> subprocess.CompletedProcess:
    """`name`.pdf in `folder`: an article holding `tables`, each on its own page, through pdflatex."""
    document = folder / f"{name}.tex"
    document.write_text(
        "\\documentclass{article}\n"
        + PACKAGES
        + "\n\\begin{document}\n"
        + "".join(f"\\input{{{t}}}\n\\clearpage\n" for t in tables)
        + "\\end{document}\n"
    )
    return subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex (.ci/run installs texlive-latex-recommended)")
def test_every_latex_table_compiles_and_fits_the_page(study_dir, tmp_path):
    tables = latex_tables(study_dir)
    assert len(tables) >= 8
    done = compile_tables(tables, tmp_path, "thesis")
    log = (tmp_path / "thesis.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log, [line for line in log.splitlines() if "Overfull" in line]
    assert (tmp_path / "thesis.pdf").stat().st_size > 1000
    for table in tables:  # issue 24: nothing scaled below the footnote size; labels that two studies cannot share
        text = table.read_text()
        assert "\\resizebox" not in text and "\\footnotesize" in text and "\\label{tab:tiny-" in text
        if table.name == "families.tex":  # counts print as counts, not 36.000
            assert not re.search(r"(?<![\d.])\d+\.000(?![\d])", text.split("\\midrule")[-1]), text
    if shutil.which("pdffonts"):  # the smallest text on the pages: Computer Modern fonts are cut per size (CMR8…)
        fonts = subprocess.run(["pdffonts", "thesis.pdf"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        sizes = [int(size) for size in re.findall(r"\+CM[A-Z]+(\d+)\s", fonts.stdout)]
        assert sizes and min(sizes) >= 7, fonts.stdout


@pytest.mark.skipif(
    shutil.which("pdflatex") is None or shutil.which("pdftotext") is None,
    reason="no pdflatex/pdftotext (.ci/run installs texlive-latex-recommended and poppler-utils)",
)
def test_every_part_of_a_split_latex_table_prints_every_key_column(study_dir, tmp_path):
    """Rendered, not read as a string: each split table alone through pdflatex, then every page of it must show the
    header of every key column of its first part (the leading text columns), so no part reads as rows of numbers
    without the setting they belong to."""
    split = [t for t in latex_tables(study_dir) if "(part 2 of" in t.read_text()]
    assert split, "no table is split: the check would check nothing"
    for table in split:
        text = table.read_text()
        align = re.search(r"\\begin\{tabular\}\{([lr]+)\}", text).group(1)
        headers = re.findall(r"\\shortstack\[[lr]\]\{(.*?)\}(?: &| \\\\)", text.split("\\midrule")[0])
        keys = [h.split("\\\\")[0] for h, a in zip(headers, align, strict=False) if a == "l"][: len(align)]
        keys = keys[: next((i for i, a in enumerate(align) if a == "r"), len(keys))]
        done = compile_tables([table], tmp_path, table.stem)
        assert done.returncode == 0, done.stdout[-2000:]
        pages = subprocess.run(
            ["pdftotext", f"{table.stem}.pdf", "-"], cwd=tmp_path, capture_output=True, text=True, timeout=120
        ).stdout.split("\f")
        pages = [p for p in pages if p.strip()]
        assert len(pages) >= 2 or text.count("(part ") >= 2
        for number, page in enumerate(pages, start=1):  # a header is a line of its own (a caption's word is not)
            lines = {line.strip() for line in page.splitlines()}
            missing = [k for k in keys if k.replace("\\_", "_") not in lines]
            assert not missing, f"{table.name}, page {number}: no {missing} in\n{page[:500]}"


def test_a_confirmation_made_with_test_overlap_says_so(tmp_path):
    """Issue 42 item 9: `--allow-test-overlap` was not recorded, so the report never said that the exploration had
    selected on some of the confirmation's test images."""
    from results.report import TEST_OVERLAP
    from tests.search.helpers import finished_study

    confirmation = spec(
        confirms="explored", test_overlap=True, repeats=3, seeds_from=2, baselines=[{"proxy_steps": "2"}]
    )
    storage = f"sqlite:///{tmp_path}/c.db"
    finished_study(confirmation, storage, tmp_path / "out", lambda p: 0.5 + p.get("threshold", 0) / 10)
    said: list[str] = []
    made = build_report(load_study("tiny", storage), load_trials("tiny", storage), tmp_path / "report", say=said.append)
    page = (tmp_path / "report" / "report.html").read_text()
    assert TEST_OVERLAP in said and page.count(html.escape(TEST_OVERLAP)) == 2  # under the stage, and in the notes
    assert made.html.exists()


@pytest.mark.skipif(
    shutil.which("pdflatex") is None or shutil.which("pdftotext") is None,
    reason="no pdflatex/pdftotext (.ci/run installs texlive-latex-recommended and poppler-utils)",
)
@pytest.mark.parametrize("columns", [4, 14])  # a portrait table, a landscape one
def test_a_long_table_is_split_by_rows_and_every_part_fits_its_page(tmp_path, columns):
    """Issue 43 item 3: `legend.tex` (149 rows) and `verdicts.tex` (289) were single floats taller than the page,
    and `<0.001` printed as "¡0.001" without fontenc."""
    from results.present import Shown, to_latex

    rows = [
        {"configuration": f"C{i}", "p": "<0.001", **{f"metric {j}": f"{i * j / 7:.3f}" for j in range(columns - 2)}}
        for i in range(149)
    ]
    shown = Shown("long", pd.DataFrame(rows), "A long table", ["A note under the last part. " * 6], ["configuration"])
    tex = to_latex(shown, "s")
    parts = tex.count("\\begin{tabular}")
    assert parts >= 4 and tex.count("\\toprule") == parts and "\\textless{}0.001" in tex
    (tmp_path / "long.tex").write_text(tex)
    done = compile_tables([tmp_path / "long.tex"], tmp_path, "thesis")
    log = (tmp_path / "thesis.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert "Float too large" not in log and "Overfull \\hbox" not in log, log[-3000:]
    text = subprocess.run(["pdftotext", "-layout", "thesis.pdf", "-"], cwd=tmp_path, capture_output=True, text=True)
    pages = text.stdout.split("\f")
    assert all(f"C{i} " in text.stdout or f"C{i}\n" in text.stdout for i in range(149))  # every row printed
    assert "¡" not in text.stdout and "<0.001" in text.stdout
    printed = [page for page in pages if page.strip()]
    assert all("configuration" in page for page in printed)  # every page repeats the header
