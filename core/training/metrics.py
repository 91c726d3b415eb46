"""A run's metrics.jsonl: one JSON record a line, appended as the run goes."""

import json
import os
import sys


class MetricsLog:
    """Appends records to out_dir/metrics.jsonl. A failed append (full disk, odd out_dir) is a warning said once,
    so the checkpoint saves that follow still happen."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, 'metrics.jsonl')
        self.failed = []  # the iterations whose records were lost

    def append(self, record):
        try:
            with open(self.path, 'a') as f:
                f.write(json.dumps(record) + '\n')
        except OSError as e:
            if not self.failed:
                print(f"warning: cannot append to {self.path} ({e.strerror or e}); training goes on and checkpoints "
                      f"are still saved, but this run's curve has gaps", file=sys.stderr, flush=True)
            self.failed.append(record.get('iter'))
