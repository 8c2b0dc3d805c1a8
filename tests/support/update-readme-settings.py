#!/usr/bin/env python3
"""Rewrite the README's "Every setting" table from `mailkeep --settings`.

    tests/support/update-readme-settings.py BUILD_DIR/mailkeep

tests/integration/check_config.py fails when the two differ; this puts them back in step."""
import subprocess
import sys
from pathlib import Path

binary = sys.argv[1]
rows = subprocess.run([binary, "--settings"], capture_output=True, text=True,
                      check=True).stdout.splitlines()
table = ["| section | setting | default | meaning |", "| --- | --- | --- | --- |"]
for row in rows:
    section, key, default, doc = row.split("\t")
    name = "[%s NAME]" % section if section in ("listener", "user") else "[%s]" % section
    table.append("| %s | `%s` | %s | %s |" % (name, key, "`%s`" % default if default else "\u2014",
                                              doc))
readme = Path(__file__).resolve().parents[2] / "README.md"
text = readme.read_text()
start = text.index("| section | setting | default | meaning |")
end = text.index("\n\n", start)
readme.write_text(text[:start] + "\n".join(table) + text[end:])
