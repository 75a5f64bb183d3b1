"""Batches: the epoch order (`EpochShuffle`: reshuffled from (seed, epoch), sharded by rank,
optionally bucketed by length), the training loader that resumes mid-epoch exactly
(`ResumableLoader`), the collate that cuts padding, and `make_loader`, which puts them together."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, default_collate

from cdlm.data.config import LoadingSettings
from cdlm.data.stream import StreamWindows, TokenWindows, WindowDataset


class EpochShuffle(DistributedSampler):
    """Each epoch, the `size` indices in a fresh random order, or with `num_samples` that many drawn
    at random with replacement (windows of a stream), from (seed, epoch) alone: an epoch can be
    replayed from any point (`skip`). The seed is drawn from the global RNG once (it follows
    `seed_everything`) and travels in checkpoints.

    Under a parallel strategy rank r of `num_replicas` takes every num_replicas-th index of the
    same epoch order, starting at r (the tail that does not divide evenly is dropped): batch b of
    every rank together is batch b of one process with the global batch, and `skip` counts this
    rank's indices, so resume stays exact. It is a `DistributedSampler` only so that Lightning
    keeps it instead of wrapping it in one (which would reshuffle it and lose `skip`).

    With `lengths` [size] (length bucketing) each run of `POOL` batches of the epoch order is
    sorted by length and cut into batches of `batch_size`, and the batches are shuffled: a batch
    holds texts of similar length, so `cut_padding` can drop most of its pad positions."""

    POOL = 50  # batches sorted together: similar lengths within a batch, still random across batches

    def __init__(self, size: int, num_samples: int | None = None, seed: int | None = None,
                 num_replicas: int = 1, rank: int = 0, lengths: torch.Tensor | None = None, batch_size: int = 1):
        # DistributedSampler.__init__ is not called: it wants a dataset and a process group, and
        # every method it would set up is overridden here
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must lie in [0, num_replicas={num_replicas}), got {rank}")
        self.size, self.num_samples = size, num_samples
        self.num_replicas, self.rank = num_replicas, rank
        self.seed = int(torch.randint(0, 2**62, ())) if seed is None else seed
        self.epoch = self.skip = 0
        self.lengths, self.batch_size = lengths, batch_size

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at each epoch start
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def __len__(self) -> int:
        return (self.size if self.num_samples is None else self.num_samples) // self.num_replicas

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = (torch.randperm(self.size, generator=generator) if self.num_samples is None
                 else torch.randint(0, self.size, (self.num_samples,), generator=generator))
        if self.num_replicas > 1:
            order = order[self.rank : len(self) * self.num_replicas : self.num_replicas]
        if self.lengths is not None:
            order = self._bucketed(order, generator)
        skip, self.skip = self.skip, 0
        return iter(order[skip:].tolist())

    def _bucketed(self, order: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`order` regrouped into batches of similar length, in random batch order; the tail that
        fills no batch stays last (the loader drops it)."""
        full = len(order) // self.batch_size * self.batch_size
        pool = self.POOL * self.batch_size
        runs = [run[torch.argsort(self.lengths[run], stable=True)] for run in order[:full].split(pool)]
        batches = torch.cat(runs).view(-1, self.batch_size) if runs else order[:0].view(0, self.batch_size)
        batches = batches[torch.randperm(len(batches), generator=generator)]
        return torch.cat([batches.flatten(), order[full:]])


def cut_width(lengths: torch.Tensor, seq_len: int) -> int:
    """Columns a batch of texts of `lengths` keeps when cut after its longest text and its end pad."""
    return min(seq_len, int(lengths.max()) + 1)


def cut_padding(rows: list) -> list:
    """Collate sentence examples (ids, mask[, attribute rows]) and cut them to `cut_width`: the
    length-bucketing loader's collate."""
    ids, mask, *rest = default_collate(rows)
    keep = cut_width(mask.sum(1), ids.shape[1])
    return [ids[:, :keep], mask[:, :keep], *rest]


class ResumableLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch: Lightning saves its `state_dict` (the sampler's
    seed and epoch, and how many batches of the epoch were handed out) in each checkpoint, and a
    resumed run continues the epoch with the batch it would have drawn next. It draws worker
    seeds from its own generator, so loading data never moves the global RNG. Over a
    `StreamWindows` (streaming) the same state lives in the dataset, and an epoch is one pass."""

    def __init__(self, dataset, *args, **kwargs):  # DataLoader's own signature: Lightning rebuilds loaders from it
        super().__init__(dataset, *args, **kwargs)
        self.served = 0

    def __iter__(self):
        stream = self.dataset if isinstance(self.dataset, StreamWindows) else None
        if stream is not None:
            stream.batch_size, self.served = self.batch_size, stream.skip_batches
        else:  # each rank's EpochShuffle skips within its own share (see there)
            self.served = getattr(self.sampler, "skip", 0) // self.batch_size
        for batch in super().__iter__():
            self.served += 1  # counted as handed out, not as read ahead by workers
            yield batch
        if stream is not None:  # the pass is over: the next one is a new epoch (workers see it: not persistent)
            stream.epoch, stream.skip_batches = stream.epoch + 1, 0

    def state_dict(self) -> dict:
        if isinstance(self.dataset, StreamWindows):
            return {"seed": self.dataset.seed, "epoch": self.dataset.epoch, "batches": self.served}
        if not isinstance(self.sampler, EpochShuffle):
            return {}
        return {"seed": self.sampler.seed, "epoch": self.sampler.epoch, "batches": self.served}

    def load_state_dict(self, state: dict) -> None:
        if state and isinstance(self.dataset, StreamWindows):
            self.dataset.seed, self.dataset.epoch, self.dataset.skip_batches = state["seed"], state["epoch"], state["batches"]
            return
        if not state or not isinstance(self.sampler, EpochShuffle):
            return
        self.sampler.seed = state["seed"]
        done = state["batches"] >= len(self)  # saved at the epoch's last batch: the next epoch starts afresh
        self.sampler.epoch = state["epoch"] + done
        self.sampler.skip = 0 if done else state["batches"] * self.batch_size


def make_loader(ds, train: bool, batch_size: int, loading: LoadingSettings, replicas: tuple[int, int] = (1, 0),
                shared=int) -> DataLoader:
    """The loader of `ds`: in order for validation; for training a `ResumableLoader` over
    `EpochShuffle` (or over a stream) that drops the last partial batch. `replicas` is (ranks, this
    rank) of a parallel strategy, and `shared` makes a seed drawn here the same on every rank."""
    workers = {"num_workers": loading.num_workers, "persistent_workers": loading.num_workers > 0}
    if not train:
        return DataLoader(ds, batch_size=batch_size, shuffle=False, **workers)
    num_replicas, rank = replicas
    if isinstance(ds, StreamWindows):
        ds.num_replicas, ds.rank, ds.seed = num_replicas, rank, shared(ds.seed)
        # workers not persistent: each pass's workers must see the dataset's new epoch
        return ResumableLoader(ds, batch_size=batch_size, drop_last=True, num_workers=loading.num_workers)
    # windows of a stream: an epoch is as many random windows as the stream holds end to end
    epoch_size = (ds.num_tokens if isinstance(ds, TokenWindows) else len(ds.tokens)) // ds.seq_len \
        if isinstance(ds, WindowDataset) else None
    bucket = loading.bucket_lengths and isinstance(ds, TensorDataset)
    order = EpochShuffle(len(ds), epoch_size, num_replicas=num_replicas, rank=rank,
                         lengths=ds.tensors[1].sum(1) if bucket else None, batch_size=batch_size)
    order.seed = shared(order.seed)
    return ResumableLoader(ds, batch_size=batch_size, sampler=order, drop_last=True,
                           collate_fn=cut_padding if bucket else None,
                           generator=torch.Generator().manual_seed(order.seed), **workers)
