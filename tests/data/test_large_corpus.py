"""A corpus far larger than the memory a process may use is scanned and encoded in bounded memory."""
import filecmp
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import make_corpus

MB = 1 << 20
HEADROOM = 192 * MB            # address space allowed beyond what the imports take
FILES, FILE_MB = 4, 128        # 512 MB of text: over 2.5 times the headroom

# Runs in a fresh process: the limit on address space (RLIMIT_AS) counts every mapping, so a
# corpus, or an output file, held or mapped whole would fail with MemoryError / ENOMEM.
SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import numpy as np
    from charrnn.data.cache import encode_corpus, scan
    from charrnn.data.corpus import Corpus
    from charrnn.data.tokenizer import CharTokenizer

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    folder, out, headroom = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    base_vm, base_rss = status("VmSize"), status("VmRSS")
    resource.setrlimit(resource.RLIMIT_AS, (base_vm + headroom, base_vm + headroom))
    corpus = Corpus(folder)
    info = scan(corpus, progress=True, workers=2)
    tokenizer = CharTokenizer.from_counts(info.counts)
    encode_corpus(corpus, tokenizer, out, info.num_chars, True, info.file_chars, workers=2)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    # The same in this process alone (workers=1): its peak RSS is the encoder's own.
    again = scan(corpus, workers=1)
    assert again.digest == info.digest and again.file_chars == info.file_chars
    encode_corpus(corpus, tokenizer, out.with_suffix(".serial"), again.num_chars, False,
                  again.file_chars, workers=1)
    peak_vm = status("VmPeak")
    print(json.dumps({"base_vm": base_vm, "peak_vm": peak_vm, "base_rss": base_rss, "peak_rss": status("VmHWM"),
                      "worker_peak_rss": children, "num_chars": info.num_chars,
                      "file_chars": info.file_chars, "chars": tokenizer.chars}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and RLIMIT_AS")
def test_encoding_a_corpus_larger_than_the_memory_limit(tmp_path):
    block = make_corpus(tmp_path / "block.txt", chars=20_000).read_bytes() * 50   # ~1 MB
    folder = tmp_path / "corpus"
    folder.mkdir()
    repeats = -(-FILE_MB * MB // len(block))
    for i in range(FILES):
        with open(folder / f"part{i}.txt", "wb") as handle:
            for _ in range(repeats):
                handle.write(block)
            handle.write(f"file {i} ends ✓\n".encode())
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size > 2 * HEADROOM

    out = tmp_path / "ids.bin"
    # One malloc arena: glibc otherwise reserves 64 MB of address space (not memory) per thread.
    env = {**os.environ, "MALLOC_ARENA_MAX": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(out), str(HEADROOM)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    grew = report["peak_rss"] - report["base_rss"]
    print(f"corpus {size / MB:.0f} MB in {FILES} files: peak RSS {report['peak_rss'] / MB:.0f} MB "
          f"(imports {report['base_rss'] / MB:.0f} MB, +{grew / MB:.0f} MB for encoding), "
          f"workers' peak RSS {report['worker_peak_rss'] / MB:.0f} MB; address space: imports "
          f"{report['base_vm'] / MB:.0f} MB, peak {report['peak_vm'] / MB:.0f} MB, "
          f"limit imports + {HEADROOM // MB} MB")
    assert grew < HEADROOM

    # The ids are right: each file's ids start at the sum of the earlier files' lengths.
    assert out.stat().st_size == report["num_chars"]            # one byte per id (uint8)
    lookup = {c: i + 1 for i, c in enumerate(report["chars"])}
    ids = np.memmap(out, dtype=np.uint8, mode="r")
    text = block.decode()
    assert ids[:200].tolist() == [lookup[c] for c in text[:200]]
    offset = 0
    for i, chars in enumerate(report["file_chars"]):
        tail = f"file {i} ends ✓\n"
        offset += chars
        assert ids[offset - len(tail):offset].tolist() == [lookup[c] for c in tail]
    assert offset == report["num_chars"] == len(ids)
    assert filecmp.cmp(out, out.with_suffix(".serial"), shallow=False)
