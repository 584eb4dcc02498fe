"""Tests of agree.py (standard library only): `python3 -m unittest discover -s scripts/verifier`."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import agree

HERE = Path(__file__).resolve().parent


def write(dir: Path, name: str, text: str) -> Path:
    path = dir / name
    path.write_text(text)
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HERE / "agree.py"), *args], capture_output=True, text=True
    )


class InTempDir(unittest.TestCase):
    """A test with its own temporary directory, `self.dir`, removed afterwards."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)


class Kappa(unittest.TestCase):
    def test_textbook_two_by_two(self):
        # 20 both yes, 5 yes/no, 10 no/yes, 15 both no: observed 0.7, chance 0.5, kappa 0.4.
        pairs = [(1, 1)] * 20 + [(1, 0)] * 5 + [(0, 1)] * 10 + [(0, 0)] * 15
        self.assertAlmostEqual(agree.kappa(pairs, (0, 1)), 0.4)

    def test_perfect_and_chance(self):
        self.assertEqual(agree.kappa([("same", "same"), ("unclear", "unclear")], agree.VERDICTS), 1.0)
        # Both readers always say the same one thing: chance agreement is total.
        self.assertEqual(agree.kappa([("same", "same")] * 3, agree.VERDICTS), 1.0)
        # Opposite on every item, each reader half and half: kappa -1.
        self.assertAlmostEqual(agree.kappa([(1, 0), (0, 1)], (0, 1)), -1.0)

    def test_both(self):
        self.assertEqual(agree.both("same", "same"), "same")
        self.assertEqual(agree.both("different", "different"), "different")
        for a, b in (("same", "different"), ("same", "unclear"), ("unclear", "unclear"), ("different", "unclear")):
            self.assertEqual(agree.both(a, b), "unclear")
            self.assertEqual(agree.both(b, a), "unclear")


class Read(InTempDir):
    def test_reads_both_kinds(self):
        hits = write(self.dir, "h.tsv", "# comment\n\n0123456789ab\tsame\nabcdefabcdef\tunclear\n")
        self.assertEqual(agree.read(hits), {("0123456789ab",): "same", ("abcdefabcdef",): "unclear"})
        pairs = write(self.dir, "p.tsv", "22\t82ae4d8840ff\tdifferent\n")
        self.assertEqual(agree.read(pairs), {("22", "82ae4d8840ff"): "different"})

    def test_refuses_bad_lines(self):
        for bad in (
            "0123456789ab\tmaybe\n",  # not a verdict
            "0123456789AB\tsame\n",  # upper-case hex
            "0123456789a\tsame\n",  # 11 digits
            "x\t82ae4d8840ff\tsame\n",  # index not a number
            "0123456789ab\t\tsame\n",  # an empty column: neither a key nor an index and hash
            "22\t82ae4d8840ff\n",  # no verdict column: the hash is read as the verdict
            "0123456789ab\tsame\n22\t82ae4d8840ff\tsame\n",  # two kinds in one file
            "0123456789ab\tsame\n0123456789ab\tdifferent\n",  # one item judged two ways
        ):
            with self.subTest(bad=bad), self.assertRaises(SystemExit):
                agree.read(write(self.dir, "bad.tsv", bad))

    def test_same_verdict_twice_is_fine(self):
        path = write(self.dir, "twice.tsv", "0123456789ab\tsame\n0123456789ab\tsame\n")
        self.assertEqual(agree.read(path), {("0123456789ab",): "same"})


class Main(InTempDir):
    def test_table_and_both_file(self):
        keys = [f"{i:012x}" for i in range(6)]
        first = write(self.dir, "a.tsv", "".join(
            f"{k}\t{v}\n" for k, v in zip(keys, ["same", "same", "different", "unclear", "same", "same"])))
        # keys[5] is judged by the first reader only; two other keys by the second only.
        second = write(self.dir, "b.tsv", "".join(
            f"{k}\t{v}\n" for k, v in zip(keys[:5] + ["0000000000fe", "0000000000ff"],
                                          ["same", "different", "different", "same", "unclear", "same", "different"])))
        out = self.dir / "both.tsv"
        done = run(str(first), str(second), "--both", str(out))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("both judged 5", done.stdout)
        self.assertIn("judged only in a.tsv: 1", done.stdout)
        self.assertIn("judged only in b.tsv: 2", done.stdout)
        self.assertIn("| same | 1 | 1 | 1 | 3 |", done.stdout)
        self.assertIn("| different | 0 | 1 | 0 | 1 |", done.stdout)
        self.assertIn("| unclear | 1 | 0 | 0 | 1 |", done.stdout)
        self.assertIn("judged alike: 40.0%", done.stdout)
        self.assertIn("one says same, the other different: 1 (20.0%)", done.stdout)
        written = agree.read(out)
        self.assertEqual(written, {
            (keys[0],): "same", (keys[1],): "unclear", (keys[2],): "different",
            (keys[3],): "unclear", (keys[4],): "unclear",
        })
        self.assertIn(agree.KINDS[1], out.read_text().splitlines())

    def test_refuses_two_kinds(self):
        a = write(self.dir, "a.tsv", "0123456789ab\tsame\n")
        b = write(self.dir, "b.tsv", "22\t82ae4d8840ff\tsame\n")
        done = run(str(a), str(b))
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("not the same kind", done.stderr)

    def test_committed_files_give_the_readme_figures(self):
        for first, second, alike, kappa3, kappa2, opposed in (
            ("cache-hit-verdicts.tsv", "cache-hit-verdicts-2.tsv", "90.9%", "0.73", "0.76", 2),
            ("qqp-calibration-verdicts.tsv", "qqp-calibration-verdicts-2.tsv", "89.3%", "0.55", "0.62", 3),
        ):
            with self.subTest(first=first):
                done = run(str(HERE / first), str(HERE / second))
                self.assertEqual(done.returncode, 0, done.stderr)
                self.assertIn(f"judged alike: {alike}", done.stdout)
                got = re.search(r"three verdicts\): ([0-9.]+); kappa \(same or not\): ([0-9.]+)", done.stdout)
                self.assertIsNotNone(got, done.stdout)
                # The README gives kappa to two decimals.
                self.assertEqual((f"{float(got[1]):.2f}", f"{float(got[2]):.2f}"), (kappa3, kappa2))
                self.assertIn(f"the other different: {opposed} ", done.stdout)


if __name__ == "__main__":
    unittest.main()
