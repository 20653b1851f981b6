"""nbgrader's submit, with a submission folder others cannot write into.

Copied by `up` into <data_dir>/lib/torchclass_exchange.py (on every student server's PYTHONPATH)
and selected in the students' nbgrader config. Stock nbgrader makes each submission folder in
inbound/ world-writable (0777, "so the instructor can delete later"): anyone who learns its
name could delete the notebook inside and put another in its place. Here the folder is 0755:
the grader still reads it to collect, nobody else can change it.
"""

import os

from nbgrader.exchange.default.submit import ExchangeSubmit


class PrivateSubmit(ExchangeSubmit):
    def copy_files(self):
        super().copy_files()
        os.chmod(os.path.join(self.inbound_path, self.assignment_filename), 0o755)
