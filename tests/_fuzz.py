"""The fuzzer behind tests/test_fuzz_readers.py: a seeded mutator of bytes, and a worker that runs
one weight reader on mutated copies of seed files, in a process of its own.

    python tests/_fuzz.py READER CASES FIRST_CASE SEED_FILE...

READER is a key of READERS. Case k mutates seed file k % len(seeds) with random.Random(k) (so a
failing case is replayed from its number alone) and writes it to a temporary file whose name
ends as the seed's. The worker caps its own address space (RLIMIT_AS: what it holds when it
starts + MEMORY_BOUND) and gives each case TIME_BOUND seconds (SIGALRM), then prints one JSON
object: {"cases": n, "outcomes": {mutation: {outcome: count}}, "failures": [...], "slowest": s,
"max_rss_mib": m}. An outcome is "value", or the name of the WeightFileError subclass raised
(a one-line message naming the file); anything else is a failure: another exception type, a
message of several lines or one that does not name the file, a MemoryError, a timeout, or a
value holding fewer tensors than the seed (a file read in part; but see SKIPS_UNKNOWN_FIELDS).
"""
import json
import os
import random
import resource
import signal
import sys
import tempfile
import time

MEMORY_BOUND = 512 * 2**20  # bytes a case may add to the worker's address space
TIME_BOUND = float(os.environ.get("MINIFCN_FUZZ_SECONDS", "5"))  # seconds a case may take
# (CI machines are slow and shared; the slowest case measured takes milliseconds)
# protobuf skips the fields it does not know, by design (forward compatibility): a layer whose tag
# is damaged into an unknown field number vanishes from the raw reader's value. import_weights,
# what the commands use, refuses a net that lacks a layer ("import-caffemodel" below).
SKIPS_UNKNOWN_FIELDS = ("caffemodel",)
HUGE = (b"\xff" * 8, b"\x7f" + b"\xff" * 7, b"\xff" * 7 + b"\x7f", b"\xff\xff\xff\xff",
        b"\xff\xff\xff\x7f", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x80")


def _flip(data, rng):
    for _ in range(rng.choice((1, 1, 2, 4, 8))):
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)


def _truncate(data, rng):
    del data[rng.randrange(len(data)):]


def _insert(data, rng):
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.randbytes(rng.choice((1, 2, 4, 8, 16, 64)))


def _repeat(data, rng):
    at = rng.randrange(len(data))
    piece = data[at: at + rng.choice((1, 4, 16, 64, 256))]
    data[at:at] = piece * rng.randrange(1, 9)


def _huge(data, rng):
    """A length, count or size field made huge: binary (2**32 - 1, 2**63 - 1... either byte
    order, at any offset), a number in the text of a header (JSON, an .npy dict, a pickled
    str), or a protobuf varint of 2**64 - 1."""
    kind = rng.randrange(3)
    if kind == 0:
        value = rng.choice(HUGE)
        at = rng.randrange(max(1, len(data) - len(value)))
        data[at: at + len(value)] = value
        return
    if kind == 1:
        digits = [i for i in range(len(data)) if 48 <= data[i] <= 57
                  and (i == 0 or not 48 <= data[i - 1] <= 57)]
        if digits:
            at = rng.choice(digits)
            end = at
            while end < len(data) and 48 <= data[end] <= 57:
                end += 1
            data[at:end] = rng.choice((b"9" * 20, b"4294967296", b"18446744073709551615",
                                       b"1" + b"0" * 400))
            return
    at = rng.randrange(len(data) + 1)
    data[at: at + 1] = b"\xff" * 9 + b"\x01"


MUTATIONS = {"flip": _flip, "truncate": _truncate, "insert": _insert, "repeat": _repeat,
             "huge": _huge}


def mutate(raw, case):
    """(mutation name, bytes): seed bytes ``raw`` mutated as case number ``case`` says."""
    rng = random.Random(case)
    name = rng.choice(sorted(MUTATIONS))
    data = bytearray(raw)
    MUTATIONS[name](data, rng)
    return name, bytes(data)


def _readers():
    from minifcn import io

    return {
        "caffemodel": io.read_caffemodel,
        "torch-zip": io.read_torch_state_dict,
        "torch-legacy": io.read_torch_state_dict,
        "safetensors": io.load,
        "npz": io.load,
        "checkpoint": io.load_checkpoint,
        "checkpoint-meta": io.checkpoint.load_checkpoint_meta,
        # the readers above, then the renaming into minifcn's layers (what --init-from runs)
        "import-caffemodel": io.import_weights,
        "import-torch": io.import_weights,
    }


def _broken_readers():
    """Readers that break each rule, so the test can show the worker catches every kind."""
    import struct

    from minifcn.io.errors import WeightFileError

    def bare(path):
        struct.unpack("<I", b"")

    def greedy(path):
        return bytearray(2 * MEMORY_BOUND)

    def slow(path):
        while True:
            pass

    def chatty(path):
        raise WeightFileError(f"{path}\nsecond line")

    def anonymous(path):
        raise WeightFileError("no file named")

    def partial(path):  # the seed whole, a mutated copy in part
        return {"a": 1, "b": 2} if "case" not in os.path.basename(path) else {"a": 1}

    return {"bare": bare, "greedy": greedy, "slow": slow, "chatty": chatty,
            "anonymous": anonymous, "partial": partial}


def _tensors(value):
    """How many tensors a reader's value holds (a checkpoint: its arrays; its meta: keys)."""
    if isinstance(value, tuple):  # load_checkpoint's (arrays, meta)
        value = value[0]
    return len(value) if isinstance(value, dict) else 0


def _whole(reader, seed):
    """The tensors the seed holds, unmutated (0 where the reader fails on it: a broken one)."""
    signal.setitimer(signal.ITIMER_REAL, TIME_BOUND)
    try:
        return _tensors(reader(seed))
    except BaseException:
        return 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class _Timeout(BaseException):  # not an Exception: no reader's `except Exception` can hide it
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run(reader_name, cases, first, seeds):
    from minifcn.io.errors import WeightFileError

    reader = {**_readers(), **_broken_readers()}[reader_name]
    raws = [open(s, "rb").read() for s in seeds]
    suffixes = [os.path.splitext(s)[1] for s in seeds]
    signal.signal(signal.SIGALRM, _alarm)
    base = _vm_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (base + MEMORY_BOUND, resource.RLIM_INFINITY))
    whole = [_whole(reader, s) for s in seeds]
    outcomes, failures, slowest = {}, [], 0.0
    with tempfile.TemporaryDirectory(prefix="minifcn-fuzz-") as tmp:
        for case in range(first, first + cases):
            k = case % len(raws)
            mutation, data = mutate(raws[k], case)
            path = os.path.join(tmp, f"case{case}{suffixes[k]}")
            with open(path, "wb") as f:
                f.write(data)
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, TIME_BOUND)
            try:
                try:
                    got = _tensors(reader(path))
                    outcome = "value"
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                if got < whole[k] and reader_name in SKIPS_UNKNOWN_FIELDS:
                    outcome = "fewer-layers value"
                elif got < whole[k]:
                    outcome = None
                    failures.append(f"case {case} ({mutation}): read in part, {got} of "
                                    f"{whole[k]} tensors")
            except _Timeout:
                outcome = None
                failures.append(f"case {case} ({mutation}): over {TIME_BOUND} s")
            except WeightFileError as e:
                text = str(e)
                outcome = type(e).__name__
                if "\n" in text or path not in text:
                    failures.append(f"case {case} ({mutation}): {type(e).__name__} not one line "
                                    f"naming the file: {text[:300]!r}")
            except MemoryError:
                outcome = None
                failures.append(f"case {case} ({mutation}): MemoryError (over "
                                f"{MEMORY_BOUND >> 20} MiB)")
            except Exception as e:
                outcome = None
                failures.append(f"case {case} ({mutation}): {type(e).__module__}."
                                f"{type(e).__name__}: {str(e)[:300]!r}")
            slowest = max(slowest, time.perf_counter() - start)
            os.unlink(path)
            if outcome is not None:
                counts = outcomes.setdefault(mutation, {})
                counts[outcome] = counts.get(outcome, 0) + 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"reader": reader_name, "cases": cases, "outcomes": outcomes, "failures": failures,
            "slowest": round(slowest, 3), "max_rss_mib": round(rss, 1)}


if __name__ == "__main__":
    name, n, first, *seed_files = sys.argv[1:]
    print(json.dumps(run(name, int(n), int(first), seed_files)))
