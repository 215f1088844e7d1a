"""RunSummary's ground-truth rates on a labelled replay: what they count and what they leave out."""

from __future__ import annotations

from edge.decision import Verdict
from edge.result import InspectionResult
from edge.summary import RunSummary, format_summary

LABELS = ("crack", "free")


def result(seq: int, truth: str | None, label: str, *, failsafe: str | None = None,
           labels: tuple[str, ...] = LABELS) -> InspectionResult:
    passed = label == "free" and failsafe is None
    v = Verdict(passed, label, 0.9, "" if passed else (failsafe or label))
    return InspectionResult(seq=seq, part_id=f"P{seq}", station_id="s1", trigger_ts=0.0, verdict=v,
                            labels=labels, truth=truth, failsafe=failsafe)


def test_rates_count_labelled_parts_and_say_what_they_leave_out() -> None:
    s = RunSummary(["free"])
    s.add(result(1, "free", "free"))                      # good, passed
    s.add(result(2, "free", "crack"))                     # false reject
    s.add(result(3, "crack", "free"))                     # defect escape
    s.add(result(4, "crack", "crack"))                    # defective, rejected
    s.add(result(5, "free", "TIMEOUT", failsafe="TIMEOUT"))  # fail-safe with its image: a false reject
    s.add(result(6, None, "TIMEOUT", failsafe="TIMEOUT"))  # fail-safe before a frame: no truth
    s.add(result(7, None, "NO_FRAME", failsafe="NO_FRAME"))
    s.add(result(8, "good", "free"))                      # folder "good" is not a model label
    s.add(result(9, "good", "crack"))
    gt = s.to_dict()["ground_truth"]
    assert (gt["images"], gt["good_parts"], gt["defective_parts"]) == (5, 3, 2)
    assert (gt["false_rejects"], gt["defect_escapes"]) == (2, 1)
    assert gt["failsafe_without_image"] == 2
    assert gt["folders_not_labels"] == {"good": 2}
    text = format_summary({**s.to_dict(), "capture": None})
    assert "false reject rate 66.67 % (2/3)" in text and "defect escape rate 50.00 % (1/2)" in text
    assert "not in these rates: 2 fail-safe answers given before a frame was taken" in text
    assert "not in these rates: images under folders that are not model labels: good (2)" in text


def test_a_replay_of_folders_that_are_no_labels_gives_no_rates() -> None:
    s = RunSummary(["free"])
    s.add(result(1, "good", "free"))
    d = s.to_dict()
    assert d["ground_truth"] == {"images": 0, "failsafe_without_image": 0, "folders_not_labels": {"good": 1}}
    text = format_summary({**d, "capture": None})
    assert "top-1" not in text and "escape" not in text
    assert "ground truth: no image under a folder named like a model label, no rates" in text
    assert "images under folders that are not model labels: good (1)" in text


def test_a_defect_rejected_under_another_label_is_named_beside_top1() -> None:
    s = RunSummary(["free"])
    labels = ("crack", "blowhole", "free")
    s.add(result(1, "crack", "crack", labels=labels))
    s.add(result(2, "crack", "blowhole", labels=labels))  # wrong class, still rejected
    s.add(result(3, "free", "free", labels=labels))
    gt = s.to_dict()["ground_truth"]
    assert (gt["top1_correct"], gt["false_rejects"], gt["defect_escapes"], gt["rejected_as_another_defect"]) == (2, 0, 0, 1)
    text = format_summary({**s.to_dict(), "capture": None})
    assert ("top-1 66.67 % (2/3); 1 defective part rejected under another label (a wrong class, still rejected)"
            in text)
