"""Pretraining batches: parquet shards -> tokens -> rows of sequence_len + 1 that start at <|bos|>.

Layout, chosen so that the batches do not depend on the number of processes:
- A step has `rows_per_step` rows (total batch tokens / sequence_len). Row j of every step is
  filled by its own *lane* j. Rank r of W owns lanes [r·R/W, (r+1)·R/W) and reads only their data;
  its micro-batch m is the next `device_batch_rows` of its lanes. One process with gradient
  accumulation and W processes therefore see exactly the same rows in every step.
- Data is cut into *units*: pieces of a parquet row group of at most DOCS_PER_UNIT documents
  (fewer when there would be fewer units than lanes). Lane j reads units j, j + R, j + 2R, ... of an endless sequence of
  epochs, each epoch a seeded permutation of all units.
- A unit's documents are shuffled (seeded), tokenized with <|bos|> in front, and packed best-fit
  into rows: each row takes the longest document that still fits; when none fits, the shortest
  one fills the rest of the row and its tail, with a <|bos|> in front, goes back to be packed
  like a document. Every row starts with <|bos|>; only the unit's last partial row is dropped.

The position is (unit count, row) per lane, so `state_dict()` is small and `load_state_dict()`
restores it exactly by re-packing one unit per lane.
"""

import bisect
import math

import pyarrow.parquet as pq
import torch

DOCS_PER_UNIT = 128  # small units: little to tokenize before the first step, still a fair shuffle


def list_units(paths, min_units=1, docs_per_unit=DOCS_PER_UNIT):
    """(path, row_group, first_row, end_row) pieces of the shards' row groups, of at most
    `docs_per_unit` documents, and at least `min_units` of them."""
    groups = []
    for path in paths:
        try:
            meta = pq.ParquetFile(path).metadata
        except Exception as e:
            raise ValueError(f"cannot read parquet shard {path}: {e}") from e
        groups += [(str(path), g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    groups = [g for g in groups if g[2] > 0]
    if not groups:
        raise ValueError(f"no documents in shards {[str(p) for p in paths]}")
    units = []
    for path, g, n in groups:
        parts = max(math.ceil(min_units / len(groups)), math.ceil(n / docs_per_unit))
        units += [(path, g, part * n // parts, (part + 1) * n // parts) for part in range(parts)]
    return units


def read_unit(unit, text_column="text"):
    path, group, start, end = unit
    try:
        return pq.ParquetFile(path).read_row_group(group, columns=[text_column]).column(0).to_pylist()[start:end]
    except (OSError, ValueError) as e:  # pyarrow's errors name no file
        raise ValueError(f"cannot read row group {group} of parquet shard {path}: {type(e).__name__}: {e}") from e


def pack_rows(docs, row_len, bos_id):
    """Best-fit packing of token lists (each starting with bos) into rows of exactly `row_len` tokens."""
    docs = list(docs)
    pending = sorted((len(d), i) for i, d in enumerate(docs) if d)
    rows = []
    while pending:
        row, space = [], row_len
        while space > 0 and pending:
            k = bisect.bisect_right(pending, (space, float("inf"))) - 1
            if k >= 0:  # the longest document that fits whole
                _, i = pending.pop(k)
                row += docs[i]
                space -= len(docs[i])
            else:  # nothing fits: the shortest fills the row, its tail goes back as a new piece
                _, i = pending.pop(0)
                row += docs[i][:space]
                docs.append([bos_id] + docs[i][space:])
                bisect.insort(pending, (len(docs[-1]), len(docs) - 1))
                space = 0
        if space == 0:
            rows.append(row)
    return torch.tensor(rows, dtype=torch.int32).view(-1, row_len)


class PackedLoader:
    """Micro-batches (inputs, targets) of shape (device_batch_rows, sequence_len) for one rank."""

    def __init__(self, paths, tokenizer, sequence_len, device_batch_rows, rows_per_step, rank=0, world_size=1, seed=0, device="cpu"):
        per_rank, rest = divmod(rows_per_step, world_size)
        if rest or per_rank % device_batch_rows:
            raise ValueError(
                f"rows per step ({rows_per_step}) must split evenly over {world_size} processes "
                f"and micro-batches of {device_batch_rows} rows"
            )
        self.tokenizer, self.sequence_len, self.device_batch_rows = tokenizer, sequence_len, device_batch_rows
        self.rows_per_step, self.seed, self.device = rows_per_step, seed, torch.device(device)
        self.units = list_units(paths, min_units=rows_per_step)
        self.lanes = list(range(rank * per_rank, (rank + 1) * per_rank))
        self.micro_steps = per_rank // device_batch_rows
        self.micro = 0
        self.position = {j: [0, 0] for j in self.lanes}  # lane -> [units done, next row]
        self._rows = {}  # lane -> (unit count, packed rows)
        self._perms = {}

    def _unit_rows(self, lane, count):
        cached = self._rows.get(lane)
        if cached is not None and cached[0] == count:
            return cached[1]
        index = lane + count * self.rows_per_step
        epoch, i = divmod(index, len(self.units))
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(len(self.units), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))}
        unit_id = self._perms[epoch][i].item()
        docs = read_unit(self.units[unit_id])
        order = torch.randperm(len(docs), generator=torch.Generator().manual_seed((self.seed * 100_003 + epoch) * 1_000_003 + unit_id))
        tokens = self.tokenizer.encode_batch([docs[k] for k in order.tolist()], prepend=self.tokenizer.bos_id)
        rows = pack_rows(tokens, self.sequence_len + 1, self.tokenizer.bos_id)
        self._rows[lane] = (count, rows)
        return rows

    def _next_row(self, lane):
        count, row = self.position[lane]
        rows = self._unit_rows(lane, count)
        while row >= len(rows):
            count, row = count + 1, 0
            rows = self._unit_rows(lane, count)
        self.position[lane] = [count, row + 1]
        return rows[row]

    def next_batch(self):
        lanes = self.lanes[self.micro * self.device_batch_rows:(self.micro + 1) * self.device_batch_rows]
        self.micro = (self.micro + 1) % self.micro_steps
        batch = torch.stack([self._next_row(j) for j in lanes]).long()
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        return batch[:, :-1], batch[:, 1:]

    def state_dict(self):
        """This rank's position; states of all ranks merge by updating one dict with the others' "lanes"."""
        return {"rows_per_step": self.rows_per_step, "seed": self.seed, "units": len(self.units), "micro": self.micro, "lanes": {j: list(p) for j, p in self.position.items()}}

    def load_state_dict(self, state):
        mine = {"rows_per_step": self.rows_per_step, "seed": self.seed, "units": len(self.units)}
        for key, value in mine.items():
            if state[key] != value:
                raise ValueError(f"loader state has {key}={state[key]} but this run has {key}={value}: it belongs to another data or batch setup")
        missing = [j for j in self.lanes if j not in state["lanes"]]
        if missing:
            raise ValueError(f"loader state lacks lanes {missing[:5]}...")
        self.micro = state["micro"]
        self.position = {j: list(state["lanes"][j]) for j in self.lanes}
