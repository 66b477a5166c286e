"""The HTML report: self-contained, first table the cohort summary, synthetic-data statement, opens in Chromium."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cohort_dosimetry.model import SHIPPED_CARD, ModelCard
from cohort_dosimetry.stats import compute_cohort_tables, write_report
from tests.stats._cohort_factory import PATIENTS, make_cohort

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
requires_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    cohort, _ = make_cohort(tmp_path_factory.mktemp("report") / "cohort")
    compute_cohort_tables(cohort, progress=False)
    return cohort, write_report(cohort, model_card=dataclasses.asdict(ModelCard.from_json(SHIPPED_CARD)))


def test_report_is_one_self_contained_file(report):
    cohort, path = report
    assert path.parent == cohort.reports_dir and path.suffix == ".html"
    text = path.read_text(encoding="utf-8")
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", text)
    assert references and all(ref.startswith("data:") for ref in references)
    assert "<script" not in text and "url(" not in text
    n_patients = len(PATIENTS)
    # joint histogram + one time-activity figure and one DRVH figure per patient
    assert text.count('src="data:image/png;base64,') == 1 + 2 * n_patients


def test_first_table_is_the_cohort_summary_in_mean_min_max_form(report):
    cohort, path = report
    text = path.read_text(encoding="utf-8")
    assert text.index("synthetic virtual patients") < text.index("<table")
    first = text[text.index("<table") : text.index("</table>")]
    header = re.findall(r"<th>([^<]*)</th>", first)
    assert header == ["VOI class", "method", "n", "mean", "DR10", "DR30", "DR70", "DR90"]
    voi_stats = cohort.voi_stats()
    kidney_mc = voi_stats[(voi_stats.voi_type == "kidney") & (voi_stats.method == "mc")]
    values = kidney_mc["dr10"] * 3.6e6  # Gy/s -> mGy/h
    expected = f"{values.mean():.3g} ({values.min():.3g}\u2013{values.max():.3g})"
    row = re.search(r"<tr>\s*<td>kidney</td>\s*<td>MC</td>(.*?)</tr>", first, re.S).group(1)
    cells = re.findall(r"<td>([^<]*)</td>", row)
    assert cells[0] == str(len(kidney_mc)) and cells[2] == expected
    rows = re.findall(r"<tr>\s*<td>(\w+)</td>\s*<td>(\w+)</td>", first)
    assert rows[0] == ("lesion", "DVK") and len(rows) == 4 * 3  # 4 VOI classes x 3 methods


def test_report_states_the_chosen_model_and_why_and_provenance(report):
    cohort, path = report
    text = path.read_text(encoding="utf-8")
    chosen = cohort.absorbed_dose().query("selected")
    for reason in chosen["reason"].unique()[:3]:
        assert reason.split(" (")[0] in text
    assert "hanscheid" in text and "bi_exp" in text and "Hanscheid" in text
    assert "Provenance" in text and "synthetic test cohort" in text  # the dose-rate maps' provenance
    assert (
        "DVK dose-rates in bone" in text
    )  # DVK's missing photon dose in bone, measured against the MC (docs/physics.md)
    assert "``" not in text  # the report's prose is written for the report, not docstrings cut out of the code
    assert re.search(r"<td>numpy</td>\s*<td>" + re.escape(np.__version__) + "</td>", text)


def test_report_shows_absorbed_doses_per_cycle_and_over_the_cycles(tmp_path):
    cohort, _ = make_cohort(tmp_path / "cohort", second_cycle=("PA",))
    compute_cohort_tables(cohort, progress=False)
    text = write_report(cohort).read_text(encoding="utf-8")
    assert "3 patients, 4 therapy cycles, 12 scans" in text
    per_cycle = text[text.index("<h2>Absorbed dose per therapy cycle") : text.index("<h2>Absorbed dose over all")]
    totals = text[text.index("<h2>Absorbed dose over all therapy cycles") : text.index("<h2>Time-activity")]
    chosen = cohort.absorbed_dose().query("selected").set_index(["patient", "cycle", "voi", "method"])
    for cycle in (1, 2):
        dose = chosen.loc[("PA", cycle, "lesion_1", "mc"), "absorbed_dose_gy"]
        assert re.search(
            rf"<td>PA</td>\s*<td>{cycle}</td>\s*<td>lesion_1</td>\s*<td>mc</td>\s*<td>bi_exp</td>"
            rf"\s*<td>{round(dose, 3)}</td>",
            per_cycle,
        )
    total = cohort.absorbed_dose_total().set_index(["patient", "voi", "method"]).loc[("PA", "lesion_1", "mc")]
    assert re.search(
        rf"<td>PA</td>\s*<td>lesion_1</td>\s*<td>mc</td>\s*<td>1,2</td>\s*"
        rf"<td>{round(total['absorbed_dose_gy'], 3)}</td>",
        totals,
    )
    assert "total absorbed dose (Gy)" in totals
    # the uncertainty's components, each stated, and what was not estimated (no sensitivity, no calibration given)
    assert all(f"<th>uncertainty_{c}_gy</th>" in per_cycle for c in ("fit", "counts", "calibration"))
    assert "Count noise</b>" in per_cycle and "no camera sensitivity given" in per_cycle
    assert "Calibration</b> (<code>uncertainty_calibration_gy</code>): not given to the run" in per_cycle
    # one time-activity figure per patient and cycle (4), one DRVH per patient (3), the joint histogram
    assert text.count('src="data:image/png;base64,') == 1 + 4 + 3
    assert 'alt="time-activity curves patient PA cycle 2"' in text


def test_report_gives_the_cnn_weights_held_out_evaluation_from_their_model_card(report):
    _, path = report
    text = path.read_text(encoding="utf-8")
    section = text[text.index("CNN dose-rates: accuracy") : text.index("<h2>Provenance")]
    card = ModelCard.from_json(SHIPPED_CARD)
    assert card.weights_sha256[:12] in section and "no held-out evaluation" not in section
    models = card.held_out_evaluation["spect_models"]
    # the kidney row: CNN and DVK bias per SPECT model, the card's [mean, sd] as percentages, in header order
    header = re.findall(r"<th>([^<]*)</th>", section[: section.index("</table>")])
    kidney = re.findall(r"<td>([^<]*)</td>", re.search(r"<tr>\s*<td>kidney</td>(.*?)</tr>", section, re.S).group(1))
    expected = {
        f"{model}: {method.upper()} (%)": "{:+.0f} \u00b1 {:.0f}".format(
            *(100 * np.asarray(m["voi_mean_bias"]["kidney"][method]))
        )
        for model, m in models.items()
        for method in ("cnn", "dvk")
    }
    assert dict(zip(header[1:], kidney)) == expected
    for model, m in models.items():
        smallest = m["lesion_mean_bias_by_volume_ml"][0]
        assert f"<td>{100 * smallest['cnn']:+.0f}</td>" in section
        assert len(re.findall(rf"<td>{model}</td>", section)) == len(m["goal_checks"])


def test_report_says_when_cnn_weights_have_no_known_evaluation():
    from cohort_dosimetry.stats._report import _cnn_evaluation_html

    card = dataclasses.asdict(ModelCard.from_json(SHIPPED_CARD))
    assert _cnn_evaluation_html(set(), card) == []
    for known in (card, None):  # weights other than the card's, or no card given at all
        parts = _cnn_evaluation_html({"0123abcd"}, known)
        assert "weights 0123abcd: no held-out evaluation" in "".join(parts) and "<table" not in "".join(parts)


def test_report_needs_the_tables_first(tmp_path):
    from cohort_dosimetry.store import open_cohort

    with pytest.raises(ValueError, match="run `cohort-dosimetry stats"):
        write_report(open_cohort(tmp_path / "empty", create=True))


def console_messages(html_file: Path, profile: Path) -> tuple[str, list[str]]:
    """Open the file in headless Chromium; return the rendered DOM and every console message it logged."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            html_file.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout, [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


@requires_chromium
def test_report_opens_in_headless_chromium_without_console_errors(report, tmp_path):
    _, path = report
    # The detector must see a real console error, or an empty list below would prove nothing.
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
        "<body><script>missingFunction();</script></body></html>"
    )
    _, messages = console_messages(broken, tmp_path / "profile_broken")
    assert any("missingFunction" in message for message in messages)
    dom, messages = console_messages(path, tmp_path / "profile_report")
    assert messages == []
    assert "Table 1. Cohort summary" in dom and dom.count("<img") == 1 + 2 * len(PATIENTS)


def test_stats_and_report_commands(report, tmp_path, capsys):
    from cohort_dosimetry.cli import main

    cohort, path = report
    assert main(["stats", str(cohort.path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{cohort.tables_dir / 'voi_stats'}.parquet: {len(cohort.voi_stats())} rows" in out
    assert "kidney" in out and "mean (min-max)" in out
    assert main(["report", str(cohort.path)]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert main(["stats", str(tmp_path / "no_such_cohort")]) == 2
    assert "no_such_cohort" in capsys.readouterr().err
