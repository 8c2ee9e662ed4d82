"""Parses an OpenMetrics exposition (stdin) with prometheus_client's own
parser and prints every sample as JSON: {"name{k=\"v\",...}": value}.
A document the parser refuses makes this exit non-zero."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
json.dump(samples, sys.stdout)
