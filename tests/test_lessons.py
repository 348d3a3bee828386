"Every lesson runs once, in a real kernel through papermill, with the smoke preset; its records must match the baseline."
import pytest

from dfworkbench.core import data_dir
from dfworkbench.lessons import compare_records, find_lessons, format_checks, load_baseline, run_lesson

LESSONS = find_lessons()
BASELINE = data_dir() / "regression" / "baseline.json"


@pytest.mark.lesson
@pytest.mark.parametrize("nb", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson(nb, tmp_path):
    res = run_lesson(nb, tmp_path / nb.name, preset="smoke", device="cpu")
    assert res.ok, res.error
    if "lesson.skip" in res.records:   # the lesson ran, but what it needs (e.g. the MediaPipe models) could not be had
        pytest.skip(f"{nb.stem}: {res.records['lesson.skip']}")
    base = load_baseline(BASELINE)
    assert base["preset"] == "smoke"
    expected = base["records"].get(nb.stem)
    assert expected is not None, (f"{nb.stem} has no entry in {BASELINE}: run `dfw lessons --only {nb.stem}` "
                                  f"then `dfw baseline runs/<that run>`")
    bad = [c for c in compare_records({nb.stem: res.records}, {"records": {nb.stem: expected}}) if not c.ok]
    assert not bad, "records outside their baseline tolerance:\n" + format_checks(bad)
