"""THE reader of spry run files (docs/runfile.md, format `spry-run` v1 and v2).

It knows the schema so its callers do not have to:
- the reading rule: rows at index >= `rounds_done` of a round-indexed dataset are not finished rounds and are
  never returned (v2 /weights/*: the rows whose /weights/round t <= rounds_done);
- the logging levels (`log.gradients` = none < scalars < dense < oracle): `has(name)` says whether a file
  carries an item;
- the `nondeterministic` list (items that depend on the environment): `contents()` drops them, so two files
  of the same configuration compare equal item by item;
- v1 and v2 names. Items are read by their v2 (CONTRACT) names; a v1 file's batch-path oracle items are mapped:
  v1 `/slots/true_gradient` -> `/slots/batch_gradient`, `/rounds/true_gradient` -> `/rounds/batch_gradient`,
  `/rounds/bias_sq` -> `/rounds/batch_bias_sq`, metrics `z2` / `sq_error` / `cosine` -> `batch_z2` /
  `batch_sq_error` / `batch_cosine`. A v1 file has no full-local-gradient items (`/slots/local_gradient`,
  `/rounds/true_gradient`, `/rounds/bias_sq`, metrics `z2`, ...): `has()` is False and metrics are NaN.

Also: `attrs_of(name)` (a group's or dataset's attributes), `compare(a, b)` (two files item by item, as the
determinism promise means it), `checkpoint_attrs(path)` (the attributes of a `RUN.h5.ckpt`).

    with RunFile("run.h5") as rf:
        m = rf.metrics()                 # dict of columns over the finished rounds (v2 names, NaN when absent)
        G = rf.read("/slots/batch_gradient")   # [R, M, d] of a v1 or v2 oracle file
        rf.config["fl.alpha"], rf.method, rf.seed
"""
import os

import h5py
import numpy as np

FORMAT = "spry-run"
LEVELS = ("none", "scalars", "dense", "oracle")

# v2 name -> the v1 item that holds the same quantity (batch-path oracle)
V1_ALIASES = {
    "/slots/batch_gradient": "/slots/true_gradient",
    "/rounds/batch_gradient": "/rounds/true_gradient",
    "/rounds/batch_bias_sq": "/rounds/bias_sq",
}
# v2 names whose v1 item of the same path means something else (batch path): absent from a v1 file
V1_SHADOWED = {"/rounds/true_gradient", "/rounds/bias_sq", "/slots/true_gradient"}
V1_METRIC_ALIASES = {"batch_z2": "z2", "batch_sq_error": "sq_error", "batch_cosine": "cosine"}
V1_METRIC_SHADOWED = {"z2", "sq_error", "cosine"}

# Every metrics field a reader returns (v2 schema; absent ones are NaN).
METRIC_FIELDS = ("train_loss", "evaluated", "eval_loss", "eval_acc", "local_acc", "personal_acc", "personal_loss",
                 "bytes_up", "bytes_down", "sq_error", "cosine", "z2", "batch_sq_error", "batch_cosine", "batch_z2",
                 "objective", "grad_sq", "pool_objective", "pool_grad_sq", "secant")
# Keys that name a method (docs/configuration.md [method]); the method label shows those not set by the preset.
METHOD_KEYS = ("estimator", "split", "comm", "client_opt", "server_opt", "K", "tangent", "assignment",
               "local_epochs", "local_steps")


# Watchdog hook (cli.py): HDF5 1.10 loops forever on some corrupted metadata (issue 12's fuzz case, e.g. a damaged
# global heap behind a string attribute), inside one C call that Python cannot interrupt. The CLI runs the work in a
# child process; every HDF5 access of this module is bracketed by "b" / "e" bytes on this pipe, and the parent
# reports the file as damaged when an access has not ended within SPRY_READ_TIMEOUT seconds.
_WATCH_FD = None
_WATCH_PATH = None


def set_watch_fd(fd):
    global _WATCH_FD
    _WATCH_FD = fd


class _watch:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        if _WATCH_FD is not None:
            os.write(_WATCH_FD, ("b%s\n" % self.path).encode())

    def __exit__(self, *exc):
        if _WATCH_FD is not None:
            os.write(_WATCH_FD, b"e\n")


class RunFileError(Exception):
    """A file that is not a readable spry run file (the message names the file and what is wrong)."""


def parse_config(text):
    """INI text of the `config` attribute -> ({'section.key': value}, {'section.key': origin})."""
    values, origins, section = {}, {}, ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line[1:line.index("]")]
            continue
        if "=" not in line:
            continue
        key, rest = line.split("=", 1)
        origin = ""
        if ";" in rest:
            rest, origin = rest.rsplit(";", 1)
        name = "%s.%s" % (section, key.strip())
        values[name] = rest.strip()
        origins[name] = origin.strip()
    return values, origins


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


class RunFile:
    """One run file, open read-only. Use as a context manager (or call close())."""

    def __init__(self, path):
        self.path = str(path)
        if not os.path.exists(self.path):
            raise RunFileError("%s: no such file" % self.path)
        try:
            with _watch(self.path):
                self.f = h5py.File(self.path, "r")
        except OSError as e:
            raise RunFileError("%s: cannot open as HDF5 (%s)" % (self.path, e)) from None
        with _watch(self.path):
            self.attrs = {k: _attr(v) for k, v in self.f.attrs.items()}
        if self.attrs.get("format") != FORMAT:
            self.f.close()
            raise RunFileError("%s: not a spry run file (root attribute format = %r, expected %r)"
                               % (self.path, self.attrs.get("format"), FORMAT))
        self.version = int(self.attrs.get("format_version", 1))
        if self.version not in (1, 2):
            self.f.close()
            raise RunFileError("%s: format_version %d is not supported (1 or 2)" % (self.path, self.version))
        self.rounds_done = int(self.attrs["rounds_done"])
        self.level = str(self.attrs.get("log_gradients", "none"))
        self.nondeterministic = set(str(self.attrs.get("nondeterministic", "")).split())
        self.config, self.config_origin = parse_config(str(self.attrs.get("config", "")))
        self.seed = int(self.attrs.get("seed", 0))
        self.d, self.L = int(self.attrs["d"]), int(self.attrs["n_blocks"])
        self.N, self.M = int(self.attrs["n_clients"]), int(self.attrs["clients_per_round"])
        self.C, self.K = int(self.attrs["n_class"]), int(self.attrs["K"])

    # -- context manager --
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.f:
            self.f.close()
            self.f = None

    # -- names --
    def _path(self, name):
        """The stored path holding the v2 item `name`, or None when this file does not carry it."""
        name = "/" + name.lstrip("/")
        if self.version == 1:
            if name in V1_ALIASES:
                name = V1_ALIASES[name]
            elif name in V1_SHADOWED:
                return None
        return name if name in self.f else None

    def has(self, name):
        """Whether the file carries the item (v2 name; a v1 file's batch-path items count under their v2 names)."""
        with _watch(self.path):
            return self._path(name) is not None

    def attrs_of(self, name):
        """{key: value} of the attributes of the group or dataset `name` (v2 name, e.g. "/partition" for `alpha`,
        `partition`, `examples_per_client`), strings decoded and numpy scalars as Python numbers; dimension-scale
        references (file addresses) left out. The root's are `self.attrs`. KeyError naming the file if absent."""
        with _watch(self.path):
            p = self._path(name)
            if p is None:
                raise KeyError("%s: no %s (format v%d)" % (self.path, name, self.version))
            return {k: _attr(v) for k, v in self.f[p].attrs.items() if k not in ("DIMENSION_LIST", "REFERENCE_LIST")}

    def partition_kind(self):
        """`fl.partition` as written in /partition's attribute (v2: pool, sampled, homogeneous; v1: pool)."""
        with _watch(self.path):
            v = self.f["/partition"].attrs.get("partition", b"pool") if "/partition" in self.f else b"pool"
        return v.decode() if isinstance(v, bytes) else str(v)

    def read(self, name, rows=None):
        """The dataset `name` (v2 name); round-indexed datasets cut to the finished rounds (rows < rounds_done),
        then `rows` (a slice or index array) applied. KeyError naming the file, the item and the level if absent."""
        with _watch(self.path):
            return self._read(name, rows)

    def _read(self, name, rows):
        p = self._path(name)
        if p is None:
            raise KeyError("%s: no %s (format v%d, log.gradients = %s%s)" % (
                self.path, name, self.version, self.level,
                "; v1 files carry only batch-path oracle items" if self.version == 1 else ""))
        ds = self.f[p]
        if p.startswith("/weights/"):  # w_t for t = 0, n, 2n, ... and the last: rows whose t <= rounds_done
            rw = self.f["/weights/round"][()]
            data = ds[: int((rw <= self.rounds_done).sum())]
            return data if rows is None else data[rows]
        if self.round_indexed(ds):
            if rows is None:
                return ds[: self.rounds_done]
            if isinstance(rows, slice):
                start, stop, step = rows.indices(self.rounds_done)
                return ds[start:stop:step]
            rows = np.asarray(rows)
            if rows.size and (rows.min() < 0 or rows.max() >= self.rounds_done):
                raise IndexError("%s: rows %s beyond rounds_done = %d" % (self.path, rows, self.rounds_done))
            return ds[rows]
        return ds[()] if rows is None else ds[rows]

    @staticmethod
    def round_indexed(ds):
        """Whether ds is indexed by round (extendible along its first axis; /weights/* are not: see read())."""
        return bool(ds.maxshape) and ds.maxshape[0] is None and not ds.name.startswith("/weights/")

    # -- tables --
    def metrics(self):
        """{field: array[R]} over the finished rounds, every field of METRIC_FIELDS (v2 meaning; NaN when absent),
        plus any other field the file has."""
        m = self.read("/rounds/metrics")
        names = m.dtype.names
        out = {}
        for k in names:
            out[k] = m[k]
        if self.version == 1:
            for new, old in V1_METRIC_ALIASES.items():
                if old in names:
                    out[new] = m[old]
            for k in V1_METRIC_SHADOWED:
                out[k] = np.full(len(m), np.nan)
        for k in METRIC_FIELDS:
            if k not in out:
                out[k] = np.full(len(m), np.nan)
        return out

    def resources(self):
        r = self.read("/rounds/resources")
        return {k: r[k] for k in r.dtype.names}

    def slot_info(self):
        """{field: array[R, M]} of /slots/info (v2 personal_* fields NaN/0 when absent)."""
        s = self.read("/slots/info")
        out = {k: s[k] for k in s.dtype.names}
        shape = s.shape
        out.setdefault("personal_correct", np.zeros(shape, np.int32))
        out.setdefault("personal_count", np.zeros(shape, np.int32))
        out.setdefault("personal_loss", np.full(shape, np.nan))
        return out

    def blocks(self):
        """[(name, offset, size)] of the L blocks of w."""
        b = self.read("/model/blocks")
        return [(n.decode().rstrip("\0"), int(o), int(s)) for n, o, s in zip(b["name"], b["offset"], b["size"])]

    def realised_proportions(self):
        """[N, C] realised train-label proportions: v2 /partition/realised_proportions, v1 label_counts / n."""
        if self.has("/partition/realised_proportions"):
            return self.read("/partition/realised_proportions")
        lc = self.read("/partition/label_counts").astype(float)
        return lc / np.maximum(lc.sum(axis=1, keepdims=True), 1)

    def pool_label_counts(self):
        if self.has("/partition/pool_label_counts"):
            return self.read("/partition/pool_label_counts")
        # v1: the train pool = every client's train + local test examples
        return self.read("/partition/label_counts").sum(axis=0) + self.read("/partition/test_label_counts").sum(axis=0)

    # -- configuration --
    def cfg(self, key, default=None, cast=str):
        v = self.config.get(key)
        if v is None:
            return default
        if cast is float:
            return float("inf") if v.lower() in ("inf", "infinity") else float(v)
        return cast(v)

    @property
    def method(self):
        """A label of the method: the preset, plus the method keys set otherwise than by the preset/defaults
        (e.g. `spry[comm=iteration,K=4]`)."""
        preset = self.config.get("method.preset", "custom")
        extra = []
        for k in METHOD_KEYS:
            key = "method." + k
            if key in self.config and self.config_origin.get(key, "") in ("--set", "file"):
                extra.append("%s=%s" % (k, self.config[key]))
        return preset + ("[%s]" % ",".join(extra) if extra else "")

    @property
    def status(self):
        return str(self.attrs.get("status", ""))

    # -- xarray --
    def to_xarray(self, group):
        """The datasets of `group` (e.g. "rounds", "slots", "partition", "model") as an xarray.Dataset with named
        dimensions (the names of the /axes dimension scales attached to each dataset; round-indexed data cut to
        rounds_done; compound datasets split into one variable per field, named `dataset.field`).

        Unlike the plain `xr.open_dataset(path, engine="h5netcdf", group=...)` (which works on files whose writer
        hard-links the /axes scales at the root), this applies the rounds_done reading rule and also reads v1 files."""
        with _watch(self.path):
            return self._to_xarray(group)

    def _to_xarray(self, group):
        import xarray as xr
        g = self.f["/" + group.strip("/")]
        data_vars = {}
        for name, ds in g.items():
            if not isinstance(ds, h5py.Dataset):
                continue
            dims = tuple(ds.dims[i][0].name.split("/")[-1] if len(ds.dims[i]) else "%s_dim%d" % (name, i)
                         for i in range(ds.ndim))
            if ds.name.startswith("/weights/"):
                data = self.read(ds.name)
            else:
                data = ds[: self.rounds_done] if self.round_indexed(ds) else ds[()]
            if data.dtype.names:
                for fld in data.dtype.names:
                    col = data[fld]
                    extra = tuple("%s.%s_dim%d" % (name, fld, i) for i in range(col.ndim - len(dims)))
                    data_vars["%s.%s" % (name, fld)] = (dims + extra, col)
            else:
                data_vars[name] = (dims, data)
        coords = {}
        for var in data_vars.values():
            for dim, n in zip(var[0], var[1].shape):
                if dim not in coords and ("/axes/" + dim) in self.f:
                    coords[dim] = self.f["/axes/" + dim][:n]
        return xr.Dataset(data_vars, coords=coords, attrs={"run_file": self.path, "group": group})

    # -- whole-file contents (for determinism comparisons) --
    def contents(self):
        """Every dataset (round-indexed ones cut to rounds_done) and attribute, minus the nondeterministic items:
        {'/path': array, '/path@attr': value, '/@attr': value}. Dimension-scale references (file addresses)
        are dropped."""
        with _watch(self.path):
            return self._contents()

    def _contents(self):
        out = {}
        skip = self.nondeterministic
        for k, v in self.f.attrs.items():
            if "/@" + k not in skip:
                out["/@" + k] = v

        def visit(name, obj):
            p = "/" + name
            if p in skip:
                return
            for k, v in obj.attrs.items():
                if k in ("DIMENSION_LIST", "REFERENCE_LIST"):
                    continue
                out[p + "@" + k] = v
            if isinstance(obj, h5py.Dataset):
                out[p] = self.read(p) if (self.round_indexed(obj) or p.startswith("/weights/")) else obj[()]
        self.f.visititems(visit)
        return out


def same_value(a, b):
    """Bitwise equality of two items of contents(): arrays and numpy scalars by shape, dtype and bytes (NaN == NaN,
    -0 != +0); other values (string attributes) by ==."""
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    return a == b


def compare(path_a, path_b, ignore=()):
    """Item-by-item comparison of two run files, as the determinism promise means it (docs/runfile.md
    "Determinism"): contents() of each (round-indexed datasets cut to rounds_done, each file's `nondeterministic`
    items dropped), minus the items `ignore` names. Returns (differences, n): one line per differing item
    ("ITEM: only in A" or "ITEM: differs (...)"), sorted, and the number of items compared."""
    with RunFile(path_a) as ra, RunFile(path_b) as rb:
        a, b = ra.contents(), rb.contents()
    for k in ignore:
        a.pop(k, None)
        b.pop(k, None)
    diffs = ["%s: only in %s" % (k, path_a if k in a else path_b) for k in sorted(set(a) ^ set(b))]
    for k in sorted(set(a) & set(b)):
        if not same_value(a[k], b[k]):
            va, vb = np.asarray(a[k]), np.asarray(b[k])
            short = va.size == 1 and vb.size == 1 and len(repr(a[k])) + len(repr(b[k])) <= 80
            why = ("%r vs %r" % (a[k], b[k]) if short else
                   "text differs" + _config_keys_differ(a[k], b[k], path_a, path_b) if k == "/@config" else
                   "text differs" if isinstance(a[k], str) else
                   "dtype/shape %s %s vs %s %s" % (va.dtype, va.shape, vb.dtype, vb.shape)
                   if va.dtype != vb.dtype or va.shape != vb.shape else "values differ")
            diffs.append("%s: %s" % (k, why))
    return diffs, len(set(a) & set(b))


def _config_keys_differ(text_a, text_b, path_a, path_b):
    """" (KEY: A vs B; KEY = V only in PATH; ...)": the keys in which two /@config texts differ, so that a rerun by a
    newer spry, whose configuration gained a key, says which key rather than only that the text differs."""
    va, vb = parse_config(str(text_a))[0], parse_config(str(text_b))[0]
    out = ["%s: %s vs %s" % (k, va[k], vb[k]) for k in sorted(set(va) & set(vb)) if va[k] != vb[k]]
    out += ["%s = %s only in %s" % (k, (va if k in va else vb)[k], path_a if k in va else path_b)
            for k in sorted(set(va) ^ set(vb))]
    return " (%s)" % "; ".join(out) if out else " (the same keys and values: comments or order)"


def checkpoint_attrs(path):
    """The root attributes of a checkpoint `RUN.h5.ckpt` (format `spry-checkpoint`, docs/runfile.md "Checkpoints
    and resume"), decoded: e.g. `rounds_done`, `config_hash`, `status`. RunFileError naming the file when it is
    missing, not HDF5, or not a checkpoint. (Reads attributes only; the whole-file digest is spry's to check.)"""
    path = str(path)
    if not os.path.exists(path):
        raise RunFileError("%s: no such file" % path)
    try:
        with _watch(path), h5py.File(path, "r") as f:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
    except OSError as e:
        raise RunFileError("%s: cannot open as HDF5 (%s)" % (path, e)) from None
    if attrs.get("format") != "spry-checkpoint":
        raise RunFileError("%s: not a spry checkpoint (root attribute format = %r)" % (path, attrs.get("format")))
    return attrs


def open_run(path):
    return RunFile(path)


def method_labels(paths):
    """{path: label} for a SET of runs: the preset, plus in brackets the method.* and lora.* keys whose values
    differ among that preset's runs in the set (method keys by their short name: `spry[K=4]` beside `spry[K=1]`,
    `spry[lora.rank=4,lora.alpha=8]`); a preset whose runs agree on every such key is its bare name. Relative to
    the set on purpose: a sweep point's configuration file names every key, so RunFile.method (which lists the
    keys set by a file or --set) would list them all."""
    cfgs = {}
    for p in paths:
        with RunFile(p) as rf:
            cfgs[p] = dict(rf.config)
    by_preset = {}
    for p, c in cfgs.items():
        by_preset.setdefault(c.get("method.preset", "custom"), []).append(p)
    out = {}
    for preset, ps in by_preset.items():
        keys = sorted({k for p in ps for k in cfgs[p] if k.startswith(("method.", "lora.")) and k != "method.preset"})
        vary = [k for k in keys if len({cfgs[p].get(k) for p in ps}) > 1]
        for p in ps:
            extra = ["%s=%s" % (k[len("method."):] if k.startswith("method.") else k, cfgs[p].get(k, "")) for k in vary]
            out[p] = preset + ("[%s]" % ",".join(extra) if extra else "")
    return out


def find_runs(paths):
    """Run files named by `paths`: files as given; directories searched recursively for *.h5 files that are spry
    run files (checkpoints, datasets and base models are skipped by their `format` attribute). A jobs/ sweep's
    `verify/` folder (reruns of its points at other rank counts, beside its manifest.jsonl) is skipped: its files
    are copies of points, and counting them would add seeds. Sorted, unique."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                if "manifest.jsonl" in files and "verify" in dirs:
                    dirs.remove("verify")
                dirs.sort()
                for name in sorted(files):
                    if name.endswith(".h5"):
                        q = os.path.join(root, name)
                        try:
                            with _watch(q), h5py.File(q, "r") as f:
                                fmt = _attr(f.attrs.get("format", ""))
                        except OSError:
                            continue
                        if fmt == FORMAT:
                            out.append(q)
        elif os.path.exists(p):
            out.append(p)
        else:
            raise RunFileError("%s: no such file or directory" % p)
    seen, res = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            res.append(p)
    if not res:
        raise RunFileError("no spry run files (*.h5 with format = spry-run) in %s" % " ".join(map(str, paths)))
    return res
