#!/usr/bin/env python3
"""Checks that the end-to-end tests wait on something observable instead of sleeping.

A test that sleeps and then asserts is either flaky on a loaded machine or slower than it needs to be
everywhere else; it waits with `integration_tests::wait` (a condition, a value, a log line) or on a
fixture's own wait (`wait_for_requests`, `wait_for_lines`, `wait_for_wasm_logs`) instead. So every
`sleep(` in tests/integration fails this check unless a comment on the same line, or in the comment block
right above it, says `sleep-ok:` and why (a stand-in that simulates a slow peer, say). Sleeps in comments
and string literals do not count.

Usage: scripts/check-test-waits.py [--self-test]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ROOT / "tests" / "integration"

SLEEP = re.compile(r"\b(?:sleep|sleep_ms|park_timeout)\s*\(")
MARKER = re.compile(r"//.*\bsleep-ok:\s*(\S.*)")
# A reason of a few words, not a bare marker.
MIN_REASON_WORDS = 3
# Char literals first, so a quote character does not open a string.
STRING = re.compile(r"b?'(?:\\.|[^'\\])'" + r'|r(#*)"(?:.|\n)*?"\1|b?"(?:\\.|[^"\\])*"', re.S)


def code_only(source: str) -> list[str]:
    """The source's lines with string literals blanked and `//` comments cut, line numbers kept."""
    blanked = STRING.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), source)
    return [line.split("//", 1)[0] for line in blanked.split("\n")]


def allowed(lines: list[str], index: int) -> bool:
    """Whether line `index` or the comment block right above it carries a `sleep-ok:` reason."""
    candidates = [lines[index]]
    above = index - 1
    while above >= 0 and lines[above].strip().startswith("//"):
        candidates.append(lines[above])
        above -= 1
    for line in candidates:
        match = MARKER.search(line)
        if match and len(match.group(1).split()) >= MIN_REASON_WORDS:
            return True
    return False


def violations(source: str) -> list[int]:
    """1-based numbers of the lines that sleep without a `sleep-ok:` reason."""
    lines = source.split("\n")
    return [
        number + 1
        for number, code in enumerate(code_only(source))
        if SLEEP.search(code) and not allowed(lines, number)
    ]


def run() -> int:
    failures = 0
    for path in sorted(CHECKED.rglob("*.rs")):
        for number in violations(path.read_text()):
            failures += 1
            line = path.read_text().split("\n")[number - 1].strip()
            print(
                f"{path.relative_to(ROOT)}:{number}: a test sleeps instead of waiting on something "
                f"observable (use integration_tests::wait, or mark a stand-in `// sleep-ok: why`): {line}"
            )
    if failures:
        print(f"check-test-waits: {failures} sleep(s) in {CHECKED.relative_to(ROOT)}")
        return 1
    print(f"check-test-waits: no unexplained sleep in {CHECKED.relative_to(ROOT)}")
    return 0


SAMPLES: list[tuple[str, str, list[int]]] = [
    (
        "a sleep before an assertion",
        "fn t() {\n    std::thread::sleep(Duration::from_millis(200));\n    assert!(x);\n}\n",
        [2],
    ),
    (
        "an async sleep",
        "async fn t() {\n    tokio::time::sleep(d).await;\n}\n",
        [2],
    ),
    (
        "a marker with its reason on the same line",
        "    tokio::time::sleep(d).await; // sleep-ok: the stand-in answers slowly on purpose\n",
        [],
    ),
    (
        "a marker in the comment block above",
        "    // The peer under test is slow.\n    // sleep-ok: a stand-in that simulates a slow peer\n    std::thread::sleep(d);\n",
        [],
    ),
    (
        "a marker without a reason",
        "    // sleep-ok:\n    std::thread::sleep(d);\n",
        [2],
    ),
    (
        "a marker separated from the sleep by code",
        "    // sleep-ok: a stand-in that simulates a slow peer\n    let d = 1;\n    std::thread::sleep(d);\n",
        [3],
    ),
    (
        "sleeps named in strings and comments",
        '    let plan = "/sleep(1)";\n    // no std::thread::sleep(d) here\n    let raw = r#"sleep(2)"#;\n',
        [],
    ),
    (
        "a quote character before a sleep",
        "    let (a, b) = s.split_once('\"').unwrap();\n    std::thread::sleep(d);\n    let c = \"x\";\n",
        [2],
    ),
    (
        "a path that ends in sleep",
        '    let requests = ["/sleep", "/clock"];\n',
        [],
    ),
]


def self_test() -> int:
    failures = 0
    for what, source, expected in SAMPLES:
        found = violations(source)
        if found != expected:
            failures += 1
            print(f"self-test: {what}: expected lines {expected}, found {found}")
    print(f"self-test: {len(SAMPLES) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(self_test() or run() if "--self-test" in sys.argv else run())
