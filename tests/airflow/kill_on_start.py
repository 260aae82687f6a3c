"""`kill_on_start.py STAGE ARGV...`: run ARGV, echo its output, and SIGKILL it once it
logs that STAGE has started (as the OOM killer or a lost machine would); exits 137."""

import signal
import subprocess
import sys
import time

stage, argv = sys.argv[1], sys.argv[2:]
proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
assert proc.stdout is not None
for line in proc.stdout:
    print(line, end="", flush=True)
    if f"[{stage}] started" in line:
        time.sleep(1.0)  # into the stage's work, past its "running" record
        proc.send_signal(signal.SIGKILL)
        break
proc.wait()
print(f"kill_on_start: {stage} killed (exit {proc.returncode})", flush=True)
sys.exit(137)
