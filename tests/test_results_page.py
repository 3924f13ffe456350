"""benchmarks/RESULTS.md is rendered from the benchmarks' JSON files, as they are."""

from __future__ import annotations

import json
import os
import shutil

from benchmarks import report, results_page
from benchmarks.results_page import DETAILS_PAGE, PAGES, RESULTS, SECTIONS, render


def test_the_pages_are_what_the_renderer_makes_of_the_saved_results():
    for page in PAGES:
        assert page.read_text(encoding="utf-8") == render(RESULTS, page)


def test_every_saved_benchmark_has_its_table_under_its_command_machine_and_date():
    for page_path, page_sections in PAGES.items():
        sections = render(RESULTS, page_path).split("\n## ")[1:]
        assert [section.splitlines()[0] for section in sections] == [title for title, *_ in page_sections]
        for section in sections:
            assert "Not run yet" not in section and "\n| " in section, section[:200]
            assert "Command: " in section or "| date | machine | command |" in section
    page = render(RESULTS)
    latency = json.loads((RESULTS / "latency.json").read_text())
    cascade = latency["pipelines"]["cascade"]
    row = f"| cascade | {cascade['turns']} | {cascade['failed']} | {cascade['voice_to_voice_ms']['median']:.0f} |"
    assert row in page
    assert f"`{latency['command']}` · machine: {latency['machine']['cpu']}, {latency['machine']['cores']} cores · " \
           f"date: {latency['date']}" in page
    evaluation = json.loads((RESULTS / "native_eval.json").read_text())
    assert f"| transcription WER | {evaluation['native_transcription_wer']:.1%} |" in render(RESULTS, DETAILS_PAGE)


def test_what_a_run_did_not_record_is_said_so(tmp_path):
    threads = json.loads((RESULTS / "llama_threads.json").read_text())
    for key in ("command", "machine"):
        threads.pop(key, None)
    (tmp_path / "llama_threads.json").write_text(json.dumps(threads))
    page = render(tmp_path, DETAILS_PAGE)
    section = page.split("## llama.cpp threads\n")[1].split("\n## ")[0]
    assert f"Command: not recorded · machine: not recorded · date: {threads['date']}" in section
    assert "| pool, routed |" in section
    assert page.count("Not run yet") == len(PAGES[DETAILS_PAGE]) - 1
    assert render(tmp_path).count("Not run yet") == len(SECTIONS)


def test_a_benchmark_records_its_command_and_machine():
    stamp = report.provenance("benchmarks.soak", ["--minutes", "0.5", "--out", "a dir"])
    assert stamp["command"] == "python -m benchmarks.soak --minutes 0.5 --out 'a dir'"
    assert stamp["machine"]["cores"] == os.cpu_count() and stamp["machine"]["cpu"]


def test_a_run_saved_elsewhere_leaves_the_page_alone(tmp_path):
    before = [page.stat().st_mtime_ns for page in PAGES]
    shutil.copy(RESULTS / "llama_threads.json", tmp_path)
    results_page.refresh(tmp_path)
    assert [page.stat().st_mtime_ns for page in PAGES] == before


def test_the_fairness_section_compares_the_flood_with_the_quiet_run(tmp_path):
    run = {"date": "2026-12-07 21:00 UTC", "command": "python -m benchmarks.fairness", "sessions": 3,
           "seconds": 60, "rounds": 2, "speed": 50.0, "median_ratio": 1.1,
           "quiet": {"turns": 12, "failed": 0, "median_ms": 900.0, "p90_ms": 1200.0},
           "flood": {"turns": 12, "failed": 1, "median_ms": 990.0, "p90_ms": 1500.0},
           "rss_rest_start_mb": 1200.0, "rss_rest_end_mb": 1230.0, "rss_growth_mb": 30.0,
           "rss_peak_flood_minus_quiet_mb": 20.0, "jobs_waiting_peak": {"quiet": 0, "flood": 3},
           "flood_session": {"audio_sent_s": 6000.0, "audio_refused_s": 5870.0},
           "targets": {"median_within_20_percent": True, "no_failed_turn": False, "rss_growth_under_100_mib": True}}
    (tmp_path / "fairness.json").write_text(json.dumps(run))
    section = render(tmp_path).split("## Fairness\n")[1].split("\n## ")[0]
    assert "| quiet | 12 | 0 | 900 | 1200 |" in section
    assert "| one session flooding at 50x | 12 | 1 | 990 | 1500 |" in section
    assert "Median flood / quiet: 1.10" in section and "5870 s refused" in section
    assert "no failed turn: NO" in section
